//! The batch-on-lanes direct convolution kernels.
//!
//! Layout: a group of `L` images (the SIMD width) is packed so that one vector
//! holds the same pixel of every image in the group: `packed[(c * h + y) * w + x]`
//! is a `V` whose lane `l` is image `n0 + l`. Every multiply-add then uses all
//! lanes whatever the channel counts or image width (conv2's 20 channels and
//! 6-wide rows waste nothing), the kernel offsets are plain address offsets, and
//! the three passes share one register-tile scheme:
//!
//! * forward: a tile of `C` output channels x `X` output columns of one row is
//!   held in `C * X` accumulators; each (ci, ky, kx) step loads `X` input
//!   vectors and broadcasts `C` weights for `C * X` FMAs.
//! * backward to the input: conv2's shape (6-wide output, 5-wide kernel) keeps a
//!   whole 10-wide input-gradient row in registers, conv1's (20-wide output,
//!   9-wide kernel) 14-column blocks of its 28-wide rows; both do exactly the
//!   useful multiply-adds. Other shapes run the forward tile over the
//!   zero-padded output gradient with flipped, transposed filters.
//! * backward to the filters: a tile of `C` output channels x `X` kernel columns
//!   for one (ci, ky) accumulates over L1-sized passes of output rows; lanes
//!   hold per-image partial sums, reduced across lanes once at the end in a
//!   fixed order.
//!
//! Packing and unpacking are `L x L` register transposes (`transpose`). The
//! fused kernels pool the forward output while it is still packed, and rebuild
//! the packed output gradient from a pooled gradient and its argmax, so the
//! full-size conv output and its gradient never exist in NCHW form.
//!
//! Ragged groups (batch not a multiple of `L`) are zero-padded; padded lanes are
//! never stored.

use super::transpose;
use crate::conv::ConvShape;
use crate::gemm::Activation;

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
mod width {
    pub type V = wide::f32x16;
    pub const L: usize = 16;
    // 32 vector registers: up to ~27 accumulators plus operands; the larger
    // the tile, the fewer loads per FMA (C + X per C * X).
    pub const FWD_A: [usize; 2] = [5, 4]; // conv1: 15 = 3 * 5 channels, 20 = 5 * 4 columns
    pub const FWD_B: [usize; 2] = [5, 3]; // conv2: 20 = 4 * 5 channels, 6 = 2 * 3 columns
    pub const FWD_POOL_C: usize = 5; // pooled forward: 5 channels x one 2x2 window = 20 accumulators
    pub const BWF_A: [usize; 2] = [3, 9]; // conv1: 15 = 5 * 3 channels, 9 kernel columns
    pub const BWF_B: [usize; 2] = [5, 5]; // conv2: 20 = 4 * 5 channels, 5 kernel columns
                                          // conv1 backward-input: 14 accumulators + 9 filter taps + 1 operand.
    pub const BWI_XB: usize = 14;
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    not(target_feature = "avx512f")
))]
mod width {
    pub type V = wide::f32x8;
    pub const L: usize = 8;
    // 16 vector registers: at most 12 accumulators.
    pub const FWD_A: [usize; 2] = [3, 4];
    pub const FWD_B: [usize; 2] = [2, 6];
    pub const FWD_POOL_C: usize = 2;
    pub const BWF_A: [usize; 2] = [3, 3];
    pub const BWF_B: [usize; 2] = [2, 5];
    pub const BWI_XB: usize = 7;
}

#[cfg(not(any(
    all(target_arch = "x86_64", target_feature = "avx512f"),
    all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )
)))]
mod width {
    pub type V = wide::f32x4;
    pub const L: usize = 4;
    pub const FWD_A: [usize; 2] = [3, 4];
    pub const FWD_B: [usize; 2] = [2, 6];
    pub const FWD_POOL_C: usize = 2;
    pub const BWF_A: [usize; 2] = [3, 3];
    pub const BWF_B: [usize; 2] = [2, 5];
    pub const BWI_XB: usize = 7;
}

use width::{BWF_A, BWF_B, BWI_XB, FWD_A, FWD_B, FWD_POOL_C};
pub use width::{L, V};

/// Packs images `n0 .. n0 + g` of `src` (each `planes x h x w`, NCHW) into
/// `dst` (`planes x (h + 2 pad_y) x (w + 2 pad_x)` vectors), with zero borders
/// and zero lanes from `g` on.
#[allow(clippy::too_many_arguments)]
fn pack_group(
    src: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    pad_y: usize,
    pad_x: usize,
    n0: usize,
    g: usize,
    dst: &mut [V],
) {
    let (ph, pw) = (h + 2 * pad_y, w + 2 * pad_x);
    assert!((1..=L).contains(&g) && dst.len() == planes * ph * pw);
    let img = planes * h * w;
    assert!(src.len() >= (n0 + g) * img);
    let src = src[n0 * img..].as_ptr();
    if pad_y == 0 && pad_x == 0 {
        // Unpadded, an image is one contiguous row of planes * h * w values.
        // SAFETY: rows l < g of img values start at (n0 + l) * img and end
        // within (n0 + g) * img <= src.len(), asserted above.
        unsafe { transpose::pack(src, img, g, dst) };
        return;
    }
    dst.fill(V::ZERO);
    for c in 0..planes {
        for y in 0..h {
            let row_start = (c * ph + y + pad_y) * pw + pad_x;
            // SAFETY: row (c, y) of image n0 + l < n0 + g has w values inside
            // the images asserted above.
            unsafe {
                transpose::pack(
                    src.add((c * h + y) * w),
                    img,
                    g,
                    &mut dst[row_start..row_start + w],
                )
            };
        }
    }
}

/// Packing buffers, grown on first use and reused by every later call: the
/// kernels do no heap allocation once they have seen their largest shape.
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    /// Packed input (forward, backward-filter).
    xin: Vec<V>,
    /// Packed output gradient (backward passes).
    gp: Vec<V>,
    /// Output tiles of a block of rows before they are unpacked (forward),
    /// or the input-gradient rows / tiles of the backward-input paths.
    rows: Vec<V>,
    /// Per-lane filter and bias gradient partial sums.
    wacc: Vec<V>,
    bacc: Vec<V>,
    /// Flipped, transposed filters for the general backward-input path.
    flipped: Vec<f32>,
    /// Pooled values and argmax vectors (fused forward + pool, or the
    /// pooled gradient and argmax of a group in the fused backward).
    pooled: Vec<V>,
    /// Zero-padded output gradient for the general backward-input path.
    gpad: Vec<V>,
}

/// The first `n` elements of `v`, grown (zero-filled) if it is shorter; the
/// contents are whatever the previous call left.
pub(super) fn grown<T: Copy>(v: &mut Vec<T>, n: usize, zero: T) -> &mut [T] {
    if v.len() < n {
        v.resize(n, zero);
    }
    &mut v[..n]
}

/// Unpacks lanes `l < g` of `src` (one vector per column) into `g` rows:
/// `dst[l * stride + x] = src[x][l]`, as register transposes of `L x L`
/// blocks (see `transpose`).
///
/// # Safety
/// `dst + l * stride + x` must be valid for writes for every `l < g` and
/// `x < src.len()`, and `g <= L`.
#[inline(always)]
unsafe fn unpack_rows(src: &[V], dst: *mut f32, stride: usize, g: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { transpose::unpack(src, dst, stride, g) }
}

/// Applies the activation in place to a row of tiles. A separate pass rather
/// than fused into the tile's stores: any non-trivial code between the FMA
/// loop and the stores (closures, a match per vector) has made LLVM keep the
/// accumulators on the stack, a store after every FMA in the hot loop.
fn activate_rows(rows: &mut [V], act: Activation) {
    match act {
        Activation::Identity => {}
        // (The forward pass fuses ReLU into its unpack instead.)
        Activation::Relu => rows.iter_mut().for_each(|v| *v = v.max(V::ZERO)),
        Activation::Sigmoid => {
            let f: &mut [f32] = bytemuck::cast_slice_mut(rows);
            for x in f {
                *x = crate::reference::sigmoid(*x);
            }
        }
    }
}

/// A valid convolution of one packed group into g NCHW output images.
struct PackedConv<'a> {
    /// Packed input, `c_in x h x w` vectors.
    xin: &'a [V],
    c_in: usize,
    h: usize,
    w: usize,
    /// `[c_out][c_in][kh][kw]`.
    weight: &'a [f32],
    c_out: usize,
    kh: usize,
    kw: usize,
    bias: Option<&'a [f32]>,
    act: Activation,
}

impl<'a> PackedConv<'a> {
    /// The layer's own forward convolution of one packed input group.
    fn forward_of(
        s: &ConvShape,
        xin: &'a [V],
        weight: &'a [f32],
        bias: &'a [f32],
        act: Activation,
    ) -> Self {
        PackedConv {
            xin,
            c_in: s.c_in,
            h: s.h,
            w: s.w,
            weight,
            c_out: s.c_out,
            kh: s.kh,
            kw: s.kw,
            bias: Some(bias),
            act,
        }
    }

    fn oh(&self) -> usize {
        self.h + 1 - self.kh
    }
    fn ow(&self) -> usize {
        self.w + 1 - self.kw
    }

    fn check(&self, g: usize) {
        assert!(self.kh >= 1 && self.kw >= 1 && self.kh <= self.h && self.kw <= self.w);
        assert_eq!(self.xin.len(), self.c_in * self.h * self.w);
        assert_eq!(
            self.weight.len(),
            self.c_out * self.c_in * self.kh * self.kw
        );
        assert!(self.bias.is_none_or(|b| b.len() == self.c_out));
        assert!((1..=L).contains(&g));
    }

    /// Runs the whole convolution into `out` (g images of `c_out x oh x ow`);
    /// `rows` is scratch for a block of tiles.
    fn run(&self, out: &mut [f32], g: usize, rows: &mut Vec<V>) {
        self.check(g);
        let (oh, ow) = (self.oh(), self.ow());
        let plane = oh * ow;
        let img = self.c_out * plane;
        assert_eq!(out.len(), g * img);
        let act = self.act;
        self.dispatch(rows, &mut |co, y0, block| {
            let dst = out[co * plane + y0 * ow..].as_mut_ptr();
            // SAFETY: lane l < g goes to image l (out holds g images of img),
            // channel co < c_out, rows y0.. of the block: block.len()
            // contiguous values inside that channel's plane (`tiles`).
            unsafe {
                if act == Activation::Relu {
                    transpose::unpack_relu(block, dst, img, g);
                } else {
                    activate_rows(block, act);
                    unpack_rows(block, dst, img, g);
                }
            }
        });
    }

    /// The convolution followed by 2x2 / stride-2 max pooling, in the packed
    /// layout: `pooled` and `argmax` (g images of `c_out x oh/2 x ow/2`) get
    /// exactly what `maxpool2x2_forward` computes from `run`'s output (same
    /// select chain, lane-wise: ties to the first element in row-major order,
    /// NaN wins only as the first), without storing the convolution itself.
    /// Each register tile is one 2x2 window of `FWD_POOL_C` channels, pooled
    /// as soon as it is summed (a dropped odd last row or column is never
    /// computed); the group's pooled planes are unpacked in one pass of full
    /// `L x L` transposes.
    fn run_pooled(&self, pooled: &mut [f32], argmax: &mut [u32], g: usize, buf: &mut Vec<V>) {
        self.check(g);
        let (oh, ow) = (self.oh(), self.ow());
        let (ph, pw) = (oh / 2, ow / 2);
        let pimg = self.c_out * ph * pw;
        assert!(pooled.len() == g * pimg && argmax.len() == g * pimg);
        if pimg == 0 {
            return;
        }
        let buf = grown(buf, 2 * pimg, V::ZERO);
        let (vals, idxs) = buf.split_at_mut(pimg);
        match self.kw {
            9 => self.pool_tiles::<9>(vals, idxs),
            5 => self.pool_tiles::<5>(vals, idxs),
            _ => self.pool_tiles::<0>(vals, idxs),
        }
        // SAFETY: lane l < g goes to image l (pooled and argmax hold g images
        // of pimg values); the index vectors move as raw bits.
        unsafe {
            unpack_rows(vals, pooled.as_mut_ptr(), pimg, g);
            unpack_rows(idxs, argmax.as_mut_ptr().cast::<f32>(), pimg, g);
        }
    }

    /// Every pooled window of every channel into `vals` / `idxs` (packed,
    /// `c_out x oh/2 x ow/2`): `FWD_POOL_C`-channel tiles, then 1-channel
    /// tiles for leftover channels.
    fn pool_tiles<const KW: usize>(&self, vals: &mut [V], idxs: &mut [V]) {
        let (oh, ow) = (self.oh(), self.ow());
        let (ph, pw) = (oh / 2, ow / 2);
        let plane = ph * pw;
        assert!(vals.len() == self.c_out * plane && idxs.len() == vals.len());
        let act = self.act;
        let index = |y: usize, x: usize| -> V { bytemuck::cast([(y * ow + x) as u32; L]) };
        let mut window = [[V::ZERO; 4]; FWD_POOL_C];
        let mut co0 = 0;
        while co0 < self.c_out {
            let cn = if self.c_out - co0 >= FWD_POOL_C {
                FWD_POOL_C
            } else {
                1
            };
            for py in 0..ph {
                for px in 0..pw {
                    let (y, x) = (2 * py, 2 * px);
                    // SAFETY: co0 + cn <= c_out, y + 1 < oh and x + 1 < ow by
                    // the loop bounds; `check` and the callers checked every
                    // buffer against the shape.
                    unsafe {
                        if cn == FWD_POOL_C {
                            self.window_tile::<FWD_POOL_C, KW>(&mut window, co0, y, x);
                        } else {
                            self.window_tile::<1, KW>(&mut window, co0, y, x);
                        }
                    }
                    let candidates = [index(y, x + 1), index(y + 1, x), index(y + 1, x + 1)];
                    for (c, w) in window[..cn].iter_mut().enumerate() {
                        activate_rows(w, act);
                        let mut best = w[0];
                        let mut idx = index(y, x);
                        for (&v, &i) in w[1..].iter().zip(&candidates) {
                            // Ordered compare: false if either is NaN.
                            let wins = v.simd_gt(best);
                            best = wins.select(v, best);
                            idx = wins.select(i, idx);
                        }
                        let at = (co0 + c) * plane + py * pw + px;
                        vals[at] = best;
                        idxs[at] = idx;
                    }
                }
            }
            co0 += cn;
        }
    }

    /// Output channels co0..co0+C at (y, x), (y, x + 1), (y + 1, x),
    /// (y + 1, x + 1), not activated, into `out[c][0..4]` in that order; each
    /// sum runs in the same order as `tile`'s, so the bits are the same.
    ///
    /// # Safety
    /// co0 + C <= c_out, y + 1 < oh, x + 1 < ow, C <= out.len(), and the
    /// buffers match the shape (checked in `run_pooled`).
    #[inline(never)] // optimised alone, its accumulators stay in registers
    #[allow(clippy::needless_range_loop)] // acc[c][j] indexed by two loop counters
    unsafe fn window_tile<const C: usize, const KW: usize>(
        &self,
        out: &mut [[V; 4]; FWD_POOL_C],
        co0: usize,
        y: usize,
        x: usize,
    ) {
        let kw = if KW == 0 { self.kw } else { KW };
        debug_assert_eq!(kw, self.kw);
        let (c_in, h, w, kh) = (self.c_in, self.h, self.w, self.kh);
        let wstride = c_in * kh * kw;
        let mut acc = [[V::ZERO; 4]; C];
        if let Some(b) = self.bias {
            for c in 0..C {
                // SAFETY: co0 + C <= c_out = b.len() (checked in `check`).
                acc[c] = [V::splat(*b.get_unchecked(co0 + c)); 4];
            }
        }
        let xin = self.xin.as_ptr();
        let wgt = self.weight.as_ptr().add(co0 * wstride);
        for ci in 0..c_in {
            for ky in 0..kh {
                // SAFETY: the furthest input read is
                // (ci, y + 1 + ky, x + 1 + kw - 1) with y + 1 + ky < h and
                // x + kw < ow + kw - 1 = w; the furthest weight is
                // (co0 + C - 1, ci, ky, kw - 1) < c_out * c_in * kh * kw.
                let top = xin.add((ci * h + y + ky) * w + x);
                let bottom = top.add(w);
                let wrow = wgt.add((ci * kh + ky) * kw);
                for kx in 0..kw {
                    let mut wv = [V::ZERO; C];
                    for (c, v) in wv.iter_mut().enumerate() {
                        *v = V::splat(*wrow.add(c * wstride + kx));
                    }
                    let xv = [
                        *top.add(kx),
                        *top.add(kx + 1),
                        *bottom.add(kx),
                        *bottom.add(kx + 1),
                    ];
                    for j in 0..4 {
                        for c in 0..C {
                            acc[c][j] = xv[j].mul_add(wv[c], acc[c][j]);
                        }
                    }
                }
            }
        }
        for c in 0..C {
            // SAFETY: C <= FWD_POOL_C, per the caller.
            *out.get_unchecked_mut(c) = acc[c];
        }
    }

    /// Picks the register tile for this shape and runs `tiles`.
    fn dispatch(&self, rows: &mut Vec<V>, sink: &mut impl FnMut(usize, usize, &mut [V])) {
        let ow = self.ow();
        let prefer_a = ow.is_multiple_of(FWD_A[1]) && !ow.is_multiple_of(FWD_B[1]);
        match (self.kw, prefer_a) {
            (9, true) => self.tiles::<{ FWD_A[0] }, { FWD_A[1] }, 9>(rows, sink),
            (9, false) => self.tiles::<{ FWD_B[0] }, { FWD_B[1] }, 9>(rows, sink),
            (5, true) => self.tiles::<{ FWD_A[0] }, { FWD_A[1] }, 5>(rows, sink),
            (5, false) => self.tiles::<{ FWD_B[0] }, { FWD_B[1] }, 5>(rows, sink),
            (_, true) => self.tiles::<{ FWD_A[0] }, { FWD_A[1] }, 0>(rows, sink),
            (_, false) => self.tiles::<{ FWD_B[0] }, { FWD_B[1] }, 0>(rows, sink),
        }
    }

    /// Covers the output with CM x XM tiles; leftover channels and columns get
    /// 1-wide tiles. KW = 0 means "kernel width known only at run time".
    /// A block of tiles (channels co0.., rows y0..y1) lands in `rows`, then
    /// `sink(co, y0, block)` gets each channel's rows y0..y1 (contiguous,
    /// (y1 - y0) * ow vectors, not activated). Unpacking a block at once runs
    /// the transposes over whole 16-column blocks (conv1: 4 rows of 20 are 5
    /// full blocks; one row is 2 blocks, one of them mostly masked off).
    fn tiles<const CM: usize, const XM: usize, const KW: usize>(
        &self,
        rows: &mut Vec<V>,
        sink: &mut impl FnMut(usize, usize, &mut [V]),
    ) {
        let (oh, ow, c_out) = (self.oh(), self.ow(), self.c_out);
        // About 25 KiB of tiles per block: stays in L1 until the sink.
        let rows_per_block = (400 / (CM * ow)).clamp(1, oh);
        let cstride = rows_per_block * ow;
        let rows = grown(rows, CM * cstride, V::ZERO);
        let mut co0 = 0;
        while co0 < c_out {
            let full_c = c_out - co0 >= CM;
            let cn = if full_c { CM } else { 1 };
            for y0 in (0..oh).step_by(rows_per_block) {
                let y1 = (y0 + rows_per_block).min(oh);
                for y in y0..y1 {
                    let mut x0 = 0;
                    while x0 < ow {
                        let full_x = ow - x0 >= XM;
                        let dst = rows[(y - y0) * ow + x0..].as_mut_ptr();
                        // SAFETY: co0 + C <= c_out, x0 + X <= ow and y < oh hold
                        // by the loop bounds; dst + c * cstride + j for c < C,
                        // j < X stays inside rows (CM * cstride) as
                        // (y - y0) * ow + x0 + j < cstride; `check` and the
                        // callers checked every other buffer against the shape.
                        unsafe {
                            match (full_c, full_x) {
                                (true, true) => self.tile::<CM, XM, KW>(dst, cstride, co0, y, x0),
                                (true, false) => self.tile::<CM, 1, KW>(dst, cstride, co0, y, x0),
                                (false, true) => self.tile::<1, XM, KW>(dst, cstride, co0, y, x0),
                                (false, false) => self.tile::<1, 1, KW>(dst, cstride, co0, y, x0),
                            }
                        }
                        x0 += if full_x { XM } else { 1 };
                    }
                }
                let n = (y1 - y0) * ow;
                for c in 0..cn {
                    sink(co0 + c, y0, &mut rows[c * cstride..c * cstride + n]);
                }
            }
            co0 += if full_c { CM } else { 1 };
        }
    }

    /// Output channels co0..co0+C, row y, columns x0..x0+X, not activated, into
    /// `dst[c * cstride + j]`.
    ///
    /// # Safety
    /// co0 + C <= c_out, y < oh, x0 + X <= ow, `dst + c * cstride + j` valid
    /// for writes for c < C, j < X, and the buffers match the shape (checked
    /// in `run`).
    #[inline(never)] // optimised alone, its accumulators stay in registers
    #[allow(clippy::needless_range_loop)] // acc[c][j] indexed by two loop counters
    unsafe fn tile<const C: usize, const X: usize, const KW: usize>(
        &self,
        dst: *mut V,
        cstride: usize,
        co0: usize,
        y: usize,
        x0: usize,
    ) {
        let kw = if KW == 0 { self.kw } else { KW };
        debug_assert_eq!(kw, self.kw);
        let (c_in, h, w, kh) = (self.c_in, self.h, self.w, self.kh);
        let wstride = c_in * kh * kw;
        // No bounds checks here: a panic path into the accumulators keeps LLVM
        // from holding them in registers.
        // (A plain loop, not `array::from_fn`: LLVM sometimes leaves that
        // as an out-of-line call writing through the stack, which cost conv1
        // about 14% once some unrelated code in the crate changed.)
        let mut acc = [[V::ZERO; X]; C];
        if let Some(b) = self.bias {
            for c in 0..C {
                // SAFETY: co0 + C <= c_out = b.len() (checked in `run`).
                acc[c] = [V::splat(*b.get_unchecked(co0 + c)); X];
            }
        }
        let xin = self.xin.as_ptr();
        let wgt = self.weight.as_ptr().add(co0 * wstride);
        for ci in 0..c_in {
            for ky in 0..kh {
                // SAFETY: the furthest input read is
                // (ci, y + ky, x0 + X - 1 + kw - 1) with y + ky < h and
                // x0 + X - 1 + kw - 1 < ow + kw - 1 = w; the furthest weight is
                // (co0 + C - 1, ci, ky, kw - 1) < c_out * c_in * kh * kw.
                let row = xin.add((ci * h + y + ky) * w + x0);
                let wrow = wgt.add((ci * kh + ky) * kw);
                for kx in 0..kw {
                    let mut wv = [V::ZERO; C];
                    for (c, v) in wv.iter_mut().enumerate() {
                        *v = V::splat(*wrow.add(c * wstride + kx));
                    }
                    for j in 0..X {
                        let xv = *row.add(kx + j);
                        for c in 0..C {
                            acc[c][j] = xv.mul_add(wv[c], acc[c][j]);
                        }
                    }
                }
            }
        }
        for c in 0..C {
            for j in 0..X {
                // SAFETY: c < C and j < X, valid per the caller.
                *dst.add(c * cstride + j) = acc[c][j];
            }
        }
    }
}

/// Forward pass over the whole batch (single-threaded).
pub fn forward(
    sc: &mut Scratch,
    s: &ConvShape,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    output: &mut [f32],
    act: Activation,
) {
    let out_img = s.c_out * s.out_h() * s.out_w();
    {
        let xin = grown(&mut sc.xin, s.c_in * s.h * s.w, V::ZERO);
        for n0 in (0..s.batch).step_by(L) {
            let g = L.min(s.batch - n0);
            pack_group(input, s.c_in, s.h, s.w, 0, 0, n0, g, xin);
            let job = PackedConv::forward_of(s, xin, weight, bias, act);
            job.run(
                &mut output[n0 * out_img..(n0 + g) * out_img],
                g,
                &mut sc.rows,
            );
        }
    }
}

/// Forward pass fused with 2x2 / stride-2 max pooling (single-threaded).
#[allow(clippy::too_many_arguments)]
pub fn forward_maxpool(
    sc: &mut Scratch,
    s: &ConvShape,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    act: Activation,
    pooled: &mut [f32],
    argmax: &mut [u32],
) {
    let pimg = s.with_batch(1).pooled_len();
    let xin = grown(&mut sc.xin, s.c_in * s.h * s.w, V::ZERO);
    for n0 in (0..s.batch).step_by(L) {
        let g = L.min(s.batch - n0);
        pack_group(input, s.c_in, s.h, s.w, 0, 0, n0, g, xin);
        let job = PackedConv::forward_of(s, xin, weight, bias, act);
        job.run_pooled(
            &mut pooled[n0 * pimg..(n0 + g) * pimg],
            &mut argmax[n0 * pimg..(n0 + g) * pimg],
            g,
            &mut sc.pooled,
        );
    }
}

/// Backward pass to the input over the whole batch (single-threaded, overwrites).
pub fn backward_input(
    sc: &mut Scratch,
    s: &ConvShape,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let in_img = s.c_in * s.h * s.w;
    let path = InputGradPath::new(s, weight, &mut sc.flipped);
    let gp = grown(&mut sc.gp, s.c_out * oh * ow, V::ZERO);
    for n0 in (0..s.batch).step_by(L) {
        let g = L.min(s.batch - n0);
        pack_group(grad_output, s.c_out, oh, ow, 0, 0, n0, g, gp);
        let out = &mut grad_input[n0 * in_img..(n0 + g) * in_img];
        path.group(
            s,
            gp,
            weight,
            &sc.flipped,
            &mut sc.gpad,
            &mut sc.rows,
            out,
            g,
        );
    }
}

/// How one group's input gradient is computed from its packed output gradient.
#[derive(Clone, Copy)]
enum InputGradPath {
    /// conv2's shape (6-wide output, 5-wide kernel): whole input-gradient
    /// rows in registers, no wasted MACs.
    Rows6x5,
    /// conv1's shape (20-wide output, 9-wide kernel): blocks of
    /// input-gradient columns in registers, no wasted MACs.
    Blocks20x9,
    /// Other shapes: a valid convolution of the zero-padded output gradient
    /// with the filters flipped in both axes and c_in <-> c_out swapped.
    General,
}

impl InputGradPath {
    /// The path for `s`; for `General`, also fills `flipped`.
    fn new(s: &ConvShape, weight: &[f32], flipped: &mut Vec<f32>) -> Self {
        match (s.out_w(), s.kw) {
            (6, 5) => return InputGradPath::Rows6x5,
            (20, 9) => return InputGradPath::Blocks20x9,
            _ => {}
        }
        let (kh, kw) = (s.kh, s.kw);
        let flipped = grown(flipped, s.weight_len(), 0.0);
        for co in 0..s.c_out {
            for ci in 0..s.c_in {
                for ky in 0..kh {
                    for kx in 0..kw {
                        flipped[((ci * s.c_out + co) * kh + ky) * kw + kx] =
                            weight[((co * s.c_in + ci) * kh + kh - 1 - ky) * kw + kw - 1 - kx];
                    }
                }
            }
        }
        InputGradPath::General
    }

    /// `out` (g images of the input gradient) from `gp`, the group's packed
    /// output gradient (`c_out x oh x ow` vectors, unpadded).
    #[allow(clippy::too_many_arguments)]
    fn group(
        self,
        s: &ConvShape,
        gp: &[V],
        weight: &[f32],
        flipped: &[f32],
        gpad: &mut Vec<V>,
        rows: &mut Vec<V>,
        out: &mut [f32],
        g: usize,
    ) {
        match self {
            InputGradPath::Rows6x5 => backward_input_rows::<6, 5>(s, gp, weight, out, g),
            InputGradPath::Blocks20x9 => {
                let row = grown(rows, s.w, V::ZERO);
                backward_input_blocks::<20, 9>(s, gp, weight, out, g, row);
            }
            InputGradPath::General => {
                let (oh, ow, kh, kw) = (s.out_h(), s.out_w(), s.kh, s.kw);
                let (ph, pw) = (oh + 2 * (kh - 1), ow + 2 * (kw - 1));
                let gpad = grown(gpad, s.c_out * ph * pw, V::ZERO);
                gpad.fill(V::ZERO);
                for (c, plane) in gp.chunks_exact(oh * ow).enumerate() {
                    for (y, row) in plane.chunks_exact(ow).enumerate() {
                        let at = (c * ph + y + kh - 1) * pw + kw - 1;
                        gpad[at..at + ow].copy_from_slice(row);
                    }
                }
                let job = PackedConv {
                    xin: gpad,
                    c_in: s.c_out,
                    h: ph,
                    w: pw,
                    weight: &flipped[..s.weight_len()],
                    c_out: s.c_in,
                    kh,
                    kw,
                    bias: None,
                    act: Activation::Identity,
                };
                job.run(out, g, rows);
            }
        }
    }
}

/// Input-gradient rows computed as 1-D full correlations held in registers:
/// row iy of channel ci sums, over co and the valid ky, the OW-wide output
/// gradient row iy - ky spread by the KW filter taps.
fn backward_input_rows<const OW: usize, const KW: usize>(
    s: &ConvShape,
    gp: &[V],
    weight: &[f32],
    out: &mut [f32],
    g: usize,
) {
    const MAXW: usize = 16;
    let wn = OW + KW - 1;
    let (oh, kh, c_in, c_out) = (s.out_h(), s.kh, s.c_in, s.c_out);
    assert!(wn <= MAXW && s.w == wn && s.kw == KW && s.out_w() == OW);
    assert!(gp.len() == c_out * oh * OW && weight.len() == s.weight_len());
    let in_img = c_in * s.h * wn;
    assert!((1..=L).contains(&g) && out.len() == g * in_img);
    let gptr = gp.as_ptr();
    let wptr = weight.as_ptr();
    for ci in 0..c_in {
        for iy in 0..s.h {
            // Output rows y = iy - ky must lie in 0..oh.
            let ky_lo = (iy + 1).saturating_sub(oh);
            let ky_hi = iy.min(kh - 1);
            // Even and odd output channels in two accumulator sets: one set
            // alone is latency bound (a column takes up to KW dependent
            // FMAs per (co, ky) step of OW * KW FMAs). Fixed order: each set
            // sums its channels in order, then even + odd.
            let mut even = [V::ZERO; MAXW];
            let mut odd = [V::ZERO; MAXW];
            // SAFETY (both loops): co < c_out, iy - ky < oh (ky >= ky_lo) and
            // x < OW index gp (c_out * oh * OW); the weight index
            // (co, ci, ky, kx) with ky < kh, kx < KW is in range.
            let taps = |co: usize, ky: usize| unsafe {
                (
                    gptr.add((co * oh + iy - ky) * OW),
                    wptr.add(((co * c_in + ci) * kh + ky) * KW),
                )
            };
            for co in (0..c_out / 2).map(|pair| 2 * pair) {
                for ky in ky_lo..=ky_hi {
                    let (g0, w0) = taps(co, ky);
                    let (g1, w1) = taps(co + 1, ky);
                    // SAFETY: as above.
                    unsafe {
                        row_taps::<OW, KW, MAXW>(g0, w0, &mut even);
                        row_taps::<OW, KW, MAXW>(g1, w1, &mut odd);
                    }
                }
            }
            if c_out % 2 == 1 {
                for ky in ky_lo..=ky_hi {
                    let (g0, w0) = taps(c_out - 1, ky);
                    // SAFETY: as above.
                    unsafe { row_taps::<OW, KW, MAXW>(g0, w0, &mut even) };
                }
            }
            let acc: [V; MAXW] = core::array::from_fn(|i| even[i] + odd[i]);
            let base = (ci * s.h + iy) * wn;
            // SAFETY: lane l < g writes image l, channel ci < c_in, row
            // iy < h, columns x < wn = w: inside out (g images of in_img).
            unsafe { unpack_rows(&acc[..wn], out.as_mut_ptr().add(base), in_img, g) };
        }
    }
}

/// acc[x + kx] += grow[x] * wrow[kx] for x < OW, kx < KW.
///
/// # Safety
/// `grow` holds OW vectors, `wrow` KW floats, and OW + KW - 1 <= N.
#[inline(always)]
unsafe fn row_taps<const OW: usize, const KW: usize, const N: usize>(
    grow: *const V,
    wrow: *const f32,
    acc: &mut [V; N],
) {
    let gv: [V; OW] = core::array::from_fn(|x| *grow.add(x));
    for kx in 0..KW {
        let wb = V::splat(*wrow.add(kx));
        for x in 0..OW {
            acc[x + kx] = gv[x].mul_add(wb, acc[x + kx]);
        }
    }
}

/// Input-gradient rows of a wide shape (conv1: 20-wide output, 9-wide
/// kernel, 28-wide input), `BWI_XB` columns at a time in registers; each
/// block does exactly the useful multiply-adds. Per element the sum runs over
/// co, then ky, then kx descending (fixed: deterministic).
fn backward_input_blocks<const OW: usize, const KW: usize>(
    s: &ConvShape,
    gp: &[V],
    weight: &[f32],
    out: &mut [f32],
    g: usize,
    row: &mut [V],
) {
    const XB: usize = BWI_XB;
    let wn = OW + KW - 1;
    let (oh, c_in, c_out) = (s.out_h(), s.c_in, s.c_out);
    assert!(KW <= 9 && s.w == wn && s.kw == KW && s.out_w() == OW);
    assert!(wn.is_multiple_of(XB) && wn <= 4 * XB);
    assert!(gp.len() == c_out * oh * OW && weight.len() == s.weight_len());
    assert!(row.len() == wn);
    let in_img = c_in * s.h * wn;
    assert!((1..=L).contains(&g) && out.len() == g * in_img);
    let job = InputGradRow::<OW, KW> {
        gp: gp.as_ptr(),
        weight: weight.as_ptr(),
        c_in,
        c_out,
        kh: s.kh,
        oh,
    };
    let dst = row.as_mut_ptr();
    for ci in 0..c_in {
        for iy in 0..s.h {
            // SAFETY: ci < c_in and iy < h = oh + kh - 1; the blocks cover
            // columns X0 .. X0 + XB <= wn = row.len(); the asserts above
            // checked gp and weight against the shape.
            unsafe {
                job.block::<XB, 0>(ci, iy, dst);
                if XB < wn {
                    job.block::<XB, { XB }>(ci, iy, dst);
                }
                if 2 * XB < wn {
                    job.block::<XB, { 2 * XB }>(ci, iy, dst);
                }
                if 3 * XB < wn {
                    job.block::<XB, { 3 * XB }>(ci, iy, dst);
                }
            }
            let base = (ci * s.h + iy) * wn;
            // SAFETY: lane l < g writes image l, channel ci < c_in, row
            // iy < h, columns x < wn = w: inside out (g images of in_img).
            unsafe { unpack_rows(row, out.as_mut_ptr().add(base), in_img, g) };
        }
    }
}

/// One input-gradient row's operands for `backward_input_blocks`.
struct InputGradRow<const OW: usize, const KW: usize> {
    /// Packed output gradient, `c_out x oh x OW` vectors.
    gp: *const V,
    /// `[c_out][c_in][kh][KW]`.
    weight: *const f32,
    c_in: usize,
    c_out: usize,
    kh: usize,
    oh: usize,
}

impl<const OW: usize, const KW: usize> InputGradRow<OW, KW> {
    /// Columns X0 .. X0 + XB of input-gradient row iy, channel ci, into
    /// `dst[X0..X0 + XB]`. All loop bounds over columns are constants, so
    /// the block is straight-line code with its accumulators in registers.
    ///
    /// # Safety
    /// ci < c_in, iy < oh + kh - 1, `dst` valid for X0 + XB vectors, and the
    /// pointers hold the shapes described on the fields.
    #[inline(never)] // optimised alone, its accumulators stay in registers
    unsafe fn block<const XB: usize, const X0: usize>(&self, ci: usize, iy: usize, dst: *mut V) {
        let (oh, kh) = (self.oh, self.kh);
        // Output rows y = iy - ky must lie in 0..oh.
        let ky_lo = (iy + 1).saturating_sub(oh);
        let ky_hi = iy.min(kh - 1);
        let mut acc = [V::ZERO; XB];
        for co in 0..self.c_out {
            for ky in ky_lo..=ky_hi {
                // SAFETY: co < c_out, iy - ky < oh and x < OW index gp; the
                // weight index (co, ci, ky, kx) with kx < KW is in range.
                let grow = self.gp.add((co * oh + iy - ky) * OW);
                let wrow = self.weight.add(((co * self.c_in + ci) * kh + ky) * KW);
                // One call per filter tap with the tap index a constant: each
                // is a short fixed loop over the accumulators that LLVM fully
                // unrolls, so every accumulator index is a constant.
                tap_step::<OW, KW, XB, X0, 0>(grow, wrow, &mut acc);
                tap_step::<OW, KW, XB, X0, 1>(grow, wrow, &mut acc);
                tap_step::<OW, KW, XB, X0, 2>(grow, wrow, &mut acc);
                tap_step::<OW, KW, XB, X0, 3>(grow, wrow, &mut acc);
                tap_step::<OW, KW, XB, X0, 4>(grow, wrow, &mut acc);
                tap_step::<OW, KW, XB, X0, 5>(grow, wrow, &mut acc);
                tap_step::<OW, KW, XB, X0, 6>(grow, wrow, &mut acc);
                tap_step::<OW, KW, XB, X0, 7>(grow, wrow, &mut acc);
                tap_step::<OW, KW, XB, X0, 8>(grow, wrow, &mut acc);
            }
        }
        for (j, &a) in acc.iter().enumerate() {
            // SAFETY: X0 + j < X0 + XB, inside dst per the caller.
            *dst.add(X0 + j) = a;
        }
    }
}

/// acc[j] += grad row[X0 + j - KX] * w[KX] for the j whose output column lies
/// in 0..OW (tap KX of input column X0 + j); nothing if KX >= KW.
///
/// # Safety
/// `grow` holds OW vectors and `wrow` KW floats.
#[inline(always)]
unsafe fn tap_step<
    const OW: usize,
    const KW: usize,
    const XB: usize,
    const X0: usize,
    const KX: usize,
>(
    grow: *const V,
    wrow: *const f32,
    acc: &mut [V; XB],
) {
    if KX >= KW {
        return;
    }
    let tap = V::splat(*wrow.add(KX));
    for (j, a) in acc.iter_mut().enumerate() {
        let i = X0 + j;
        if i >= KX && i - KX < OW {
            // SAFETY: i - KX < OW, inside grow.
            *a = (*grow.add(i - KX)).mul_add(tap, *a);
        }
    }
}

/// Filter and bias gradients over the whole batch (single-threaded, overwrites).
pub fn backward_filter(
    sc: &mut Scratch,
    s: &ConvShape,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
    grad_bias: &mut [f32],
) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let xin = grown(&mut sc.xin, s.c_in * s.h * s.w, V::ZERO);
    let gp = grown(&mut sc.gp, s.c_out * oh * ow, V::ZERO);
    let mut sums = FilterSums::new(s, &mut sc.wacc, &mut sc.bacc);
    for n0 in (0..s.batch).step_by(L) {
        let g = L.min(s.batch - n0);
        pack_group(input, s.c_in, s.h, s.w, 0, 0, n0, g, xin);
        pack_group(grad_output, s.c_out, oh, ow, 0, 0, n0, g, gp);
        sums.add_group(s, xin, gp);
    }
    sums.reduce(grad_weight, grad_bias);
}

/// Per-lane partial sums of the filter and bias gradients; lane l sums
/// images l, l + L, ... in batch order, reduced across lanes at the end.
struct FilterSums<'a> {
    wacc: &'a mut [V],
    bacc: &'a mut [V],
}

impl<'a> FilterSums<'a> {
    fn new(s: &ConvShape, wacc: &'a mut Vec<V>, bacc: &'a mut Vec<V>) -> Self {
        let wacc = grown(wacc, s.weight_len(), V::ZERO);
        let bacc = grown(bacc, s.c_out, V::ZERO);
        wacc.fill(V::ZERO);
        bacc.fill(V::ZERO);
        FilterSums { wacc, bacc }
    }

    /// Adds one group: `xin` its packed input, `gp` its packed output gradient.
    fn add_group(&mut self, s: &ConvShape, xin: &[V], gp: &[V]) {
        let plane = s.out_h() * s.out_w();
        assert_eq!(gp.len(), s.c_out * plane);
        bias_sums(gp, plane, self.bacc);
        let rows = |co0: usize, _: usize, ys: core::ops::Range<usize>| {
            (gp[co0 * plane + ys.start * s.out_w()..].as_ptr(), plane)
        };
        filter_tiles_with(s, xin, &mut *self.wacc, false, rows);
    }

    /// Adds one group from its packed pooled gradient: each filter pass
    /// rebuilds its own rows of the output gradient into `buf` (a few KiB,
    /// in L1) and adds them to the bias sums. Same sums in the same order
    /// as unpooling the whole group and calling `add_group`. Returns whether
    /// every argmax index lies in its window.
    fn add_group_pooled(
        &mut self,
        s: &ConvShape,
        xin: &[V],
        pooled: &PackedPooled,
        buf: &mut [V],
    ) -> bool {
        let ow = s.out_w();
        let mut in_windows = true;
        let bacc = &mut *self.bacc;
        let rows = |co0: usize, cn: usize, ys: core::ops::Range<usize>| {
            let n = ys.len() * ow;
            let gp = &mut buf[..cn * n];
            in_windows &= pooled.unpool(co0, cn, ys.start, ys.len(), gp);
            bias_sums(gp, n, &mut bacc[co0..co0 + cn]);
            (gp.as_ptr(), n)
        };
        filter_tiles_with(s, xin, &mut *self.wacc, true, rows);
        in_windows
    }

    fn reduce(self, grad_weight: &mut [f32], grad_bias: &mut [f32]) {
        for (d, v) in grad_weight.iter_mut().zip(self.wacc.iter()) {
            *d = v.reduce_add();
        }
        for (d, v) in grad_bias.iter_mut().zip(self.bacc.iter()) {
            *d = v.reduce_add();
        }
    }
}

/// Both gradients of a convolution whose output went through ReLU and 2x2 /
/// stride-2 max pooling, from the pooled gradient (ReLU's derivative already
/// applied) and the pooling's argmax: the output gradient is rebuilt in the
/// packed layout (what `maxpool2x2_backward` would scatter, bit for bit), so
/// results equal `maxpool2x2_backward` followed by `backward_filter` and
/// `backward_input`. Returns false if an argmax index lies outside its
/// window (the outputs are then unspecified).
#[allow(clippy::too_many_arguments)]
pub fn backward_from_maxpool(
    sc: &mut Scratch,
    s: &ConvShape,
    input: &[f32],
    weight: &[f32],
    pooled_grad: &[f32],
    argmax: &[u32],
    grad_weight: &mut [f32],
    grad_bias: &mut [f32],
    mut grad_input: Option<&mut [f32]>,
) -> bool {
    let (oh, ow) = (s.out_h(), s.out_w());
    let in_img = s.c_in * s.h * s.w;
    let path = grad_input
        .is_some()
        .then(|| InputGradPath::new(s, weight, &mut sc.flipped));
    let xin = grown(&mut sc.xin, s.c_in * s.h * s.w, V::ZERO);
    let gp = grown(&mut sc.gp, s.c_out * oh * ow, V::ZERO);
    let mut sums = FilterSums::new(s, &mut sc.wacc, &mut sc.bacc);
    let mut in_windows = true;
    for n0 in (0..s.batch).step_by(L) {
        let g = L.min(s.batch - n0);
        pack_group(input, s.c_in, s.h, s.w, 0, 0, n0, g, xin);
        let pooled = PackedPooled::of(pooled_grad, argmax, s.c_out, oh, ow, n0, g, &mut sc.pooled);
        if path.is_none() {
            // Filter gradient only (a first layer): each filter pass
            // rebuilds just its own rows of the output gradient, in L1,
            // instead of the whole group's (conv1: 384 KiB, written and
            // read back through L2).
            in_windows &= sums.add_group_pooled(s, xin, &pooled, gp);
            continue;
        }
        in_windows &= pooled.unpool(0, s.c_out, 0, oh, gp);
        sums.add_group(s, xin, gp);
        if let (Some(path), Some(gi)) = (path, grad_input.as_deref_mut()) {
            let out = &mut gi[n0 * in_img..(n0 + g) * in_img];
            path.group(
                s,
                gp,
                weight,
                &sc.flipped,
                &mut sc.gpad,
                &mut sc.rows,
                out,
                g,
            );
        }
    }
    sums.reduce(grad_weight, grad_bias);
    in_windows
}

/// A group's pooled gradient and argmax in the packed layout
/// (`c_out x oh/2 x ow/2` vectors each), from which [`PackedPooled::unpool`]
/// rebuilds any rows of the output gradient.
struct PackedPooled<'a> {
    vals: &'a [V],
    idxs: &'a [V],
    oh: usize,
    ow: usize,
    /// Lanes holding images of the group (the others are never checked).
    lanes: u32,
}

impl<'a> PackedPooled<'a> {
    /// Packs images n0 .. n0 + g of `pooled_grad` and `argmax`
    /// (`[batch][c_out][oh/2][ow/2]`) into `buf`.
    #[allow(clippy::too_many_arguments)]
    fn of(
        pooled_grad: &[f32],
        argmax: &[u32],
        c_out: usize,
        oh: usize,
        ow: usize,
        n0: usize,
        g: usize,
        buf: &'a mut Vec<V>,
    ) -> Self {
        let pimg = c_out * (oh / 2) * (ow / 2);
        assert!((1..=L).contains(&g));
        assert!(pooled_grad.len() >= (n0 + g) * pimg && argmax.len() >= (n0 + g) * pimg);
        let buf = grown(buf, 2 * pimg, V::ZERO);
        let (vals, idxs) = buf.split_at_mut(pimg);
        if pimg > 0 {
            // SAFETY: rows l < g of pimg values start at (n0 + l) * pimg and
            // end within (n0 + g) * pimg <= both lengths, asserted above; the
            // argmax moves as raw bits.
            unsafe {
                transpose::pack(pooled_grad[n0 * pimg..].as_ptr(), pimg, g, vals);
                transpose::pack(argmax[n0 * pimg..].as_ptr().cast::<f32>(), pimg, g, idxs);
            }
        }
        PackedPooled {
            vals,
            idxs,
            oh,
            ow,
            lanes: (1u32 << g) - 1,
        }
    }

    /// `dst[(c * rows + r) * ow + x]` <- the output gradient at channel
    /// co0 + c, row y0 + r, column x (c < cn, r < rows) that
    /// `maxpool2x2_backward` scatters: `0.0 + g` at each window's argmax (as
    /// the scalar `+=` into zeros gives, -0.0 included), 0.0 elsewhere,
    /// including a dropped last row or column. y0 is even. Returns whether
    /// every index read lies in its window.
    fn unpool(&self, co0: usize, cn: usize, y0: usize, rows: usize, dst: &mut [V]) -> bool {
        use crate::lanes::I32s;
        let (oh, ow) = (self.oh, self.ow);
        let (ph, pw) = (oh / 2, ow / 2);
        assert!(y0.is_multiple_of(2) && y0 + rows <= oh && (co0 + cn) * ph * pw <= self.vals.len());
        let dst = &mut dst[..cn * rows * ow];
        // Rows and columns no window covers stay zero.
        if ow % 2 == 1 || y0 + rows > 2 * ph {
            dst.fill(V::ZERO);
        }
        let at = |y: usize, x: usize| I32s::splat((y * ow + x) as i32);
        let mut in_windows = true;
        for c in 0..cn {
            for r in (0..rows.min((2 * ph).saturating_sub(y0))).step_by(2) {
                let (y, p) = (y0 + r, ((co0 + c) * ph + (y0 + r) / 2) * pw);
                let row = (c * rows + r) * ow;
                let (top, bottom) = dst[row..row + 2 * ow].split_at_mut(ow);
                for px in 0..pw {
                    let x = 2 * px;
                    let gz = V::ZERO + self.vals[p + px];
                    let a: I32s = bytemuck::cast(self.idxs[p + px]);
                    let hits: [V; 4] = [at(y, x), at(y, x + 1), at(y + 1, x), at(y + 1, x + 1)]
                        .map(|i| bytemuck::cast(a.simd_eq(i)));
                    top[x] = hits[0].select(gz, V::ZERO);
                    top[x + 1] = hits[1].select(gz, V::ZERO);
                    bottom[x] = hits[2].select(gz, V::ZERO);
                    bottom[x + 1] = hits[3].select(gz, V::ZERO);
                    let any = hits[0] | hits[1] | hits[2] | hits[3];
                    in_windows &= any.to_bitmask() & self.lanes == self.lanes;
                }
            }
        }
        in_windows
    }
}

/// bacc[co] += plane co of gp, position by position in order. Four planes
/// at a time in registers: one plane alone is a chain of dependent adds
/// (latency bound); interleaving planes keeps each sum's order, and so its bits.
fn bias_sums(gp: &[V], plane: usize, bacc: &mut [V]) {
    assert_eq!(gp.len(), plane * bacc.len());
    let mut quads = bacc.chunks_exact_mut(4);
    let mut planes = gp.chunks_exact(4 * plane);
    for (sums, p) in (&mut quads).zip(&mut planes) {
        let mut acc = [sums[0], sums[1], sums[2], sums[3]];
        let (p0, rest) = p.split_at(plane);
        let (p1, rest) = rest.split_at(plane);
        let (p2, p3) = rest.split_at(plane);
        for (((&v0, &v1), &v2), &v3) in p0.iter().zip(p1).zip(p2).zip(p3) {
            acc[0] += v0;
            acc[1] += v1;
            acc[2] += v2;
            acc[3] += v3;
        }
        sums.copy_from_slice(&acc);
    }
    for (b, p) in quads
        .into_remainder()
        .iter_mut()
        .zip(planes.remainder().chunks_exact(plane))
    {
        let mut sum = *b;
        for &v in p {
            sum += v;
        }
        *b = sum;
    }
}

/// The filter tile shape for this kernel width, then [`filter_tiles`].
fn filter_tiles_with(
    s: &ConvShape,
    xin: &[V],
    wacc: &mut [V],
    even_passes: bool,
    rows: impl FnMut(usize, usize, core::ops::Range<usize>) -> (*const V, usize),
) {
    if s.kw.is_multiple_of(BWF_B[1]) || !s.kw.is_multiple_of(BWF_A[1]) {
        filter_tiles::<{ BWF_B[0] }, { BWF_B[1] }>(s, xin, wacc, even_passes, rows);
    } else {
        filter_tiles::<{ BWF_A[0] }, { BWF_A[1] }>(s, xin, wacc, even_passes, rows);
    }
}

/// Covers the filter gradient with CM (channels) x XM (kernel columns) tiles.
/// `rows(co0, cn, ys)` gives the output gradient of channels co0..co0 + cn,
/// rows `ys`, once per pass before its tiles: a pointer to channel co0's
/// row ys.start (rows `ow` vectors apart) and the distance between channels,
/// valid for cn channels of ys.len() rows until the next call. With
/// `even_passes` every pass but a last one covers an even number of rows
/// (pooling windows stay whole).
fn filter_tiles<const CM: usize, const XM: usize>(
    s: &ConvShape,
    xin: &[V],
    wacc: &mut [V],
    even_passes: bool,
    mut rows: impl FnMut(usize, usize, core::ops::Range<usize>) -> (*const V, usize),
) {
    assert!(xin.len() == s.input_len() / s.batch);
    assert_eq!(wacc.len(), s.weight_len());
    let oh = s.out_h();
    // Output rows per pass: a pass re-reads its CM x rows x ow gradient
    // vectors once per (ci, ky, kx tile), so they must stay in L1 (conv1's
    // whole 5 x 400 tile is 128 KiB). Splitting the rows only stores and
    // reloads the accumulators in between: each sum still runs over y, then
    // x, in ascending order, so results are bit-identical for any split.
    let mut rows_per_pass = (256 / (CM * s.out_w()).max(1)).max(1);
    if even_passes {
        rows_per_pass = (rows_per_pass & !1).max(2);
    }
    let rows_per_pass = rows_per_pass.min(oh.max(1));
    let mut co0 = 0;
    while co0 < s.c_out {
        let full_c = s.c_out - co0 >= CM;
        let cn = if full_c { CM } else { 1 };
        for y0 in (0..oh).step_by(rows_per_pass) {
            let ys = y0..(y0 + rows_per_pass).min(oh);
            let (g, g_plane) = rows(co0, cn, ys.clone());
            for ci in 0..s.c_in {
                for ky in 0..s.kh {
                    let mut kx0 = 0;
                    while kx0 < s.kw {
                        let full_x = s.kw - kx0 >= XM;
                        // SAFETY: co0 + C <= c_out, kx0 + X <= kw, ci < c_in and
                        // ky < kh by the loop bounds; `rows` guarantees the
                        // gradient rows; the other lengths are checked above.
                        unsafe {
                            match (full_c, full_x) {
                                (true, true) => filter_tile::<CM, XM>(
                                    s,
                                    xin,
                                    g,
                                    g_plane,
                                    wacc,
                                    co0,
                                    ci,
                                    ky,
                                    kx0,
                                    ys.clone(),
                                ),
                                (true, false) => filter_tile::<CM, 1>(
                                    s,
                                    xin,
                                    g,
                                    g_plane,
                                    wacc,
                                    co0,
                                    ci,
                                    ky,
                                    kx0,
                                    ys.clone(),
                                ),
                                (false, true) => filter_tile::<1, XM>(
                                    s,
                                    xin,
                                    g,
                                    g_plane,
                                    wacc,
                                    co0,
                                    ci,
                                    ky,
                                    kx0,
                                    ys.clone(),
                                ),
                                (false, false) => filter_tile::<1, 1>(
                                    s,
                                    xin,
                                    g,
                                    g_plane,
                                    wacc,
                                    co0,
                                    ci,
                                    ky,
                                    kx0,
                                    ys.clone(),
                                ),
                            }
                        }
                        kx0 += if full_x { XM } else { 1 };
                    }
                }
            }
        }
        co0 += cn;
    }
}

/// dW[co0..co0+C][ci][ky][kx0..kx0+X] += sum over output rows `ys`, whose
/// gradient is at `g` (channel co0, row ys.start; rows `ow` vectors apart,
/// channels `g_plane` apart).
///
/// # Safety
/// co0 + C <= c_out, ci < c_in, ky < kh, kx0 + X <= kw, ys.end <= oh, `g`
/// readable for C channels of ys.len() rows of ow vectors as laid out above,
/// and the other buffers have the lengths `filter_tiles` checks.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
#[allow(clippy::needless_range_loop)] // acc[c][j] indexed by two loop counters
unsafe fn filter_tile<const C: usize, const X: usize>(
    s: &ConvShape,
    xin: &[V],
    g: *const V,
    g_plane: usize,
    wacc: &mut [V],
    co0: usize,
    ci: usize,
    ky: usize,
    kx0: usize,
    ys: core::ops::Range<usize>,
) {
    let (ow, w) = (s.out_w(), s.w);
    let wstride = s.c_in * s.kh * s.kw;
    let wbase = ((co0 * s.c_in + ci) * s.kh + ky) * s.kw + kx0;
    let wp = wacc.as_mut_ptr().add(wbase);
    let mut acc = [[V::ZERO; X]; C];
    for (c, row) in acc.iter_mut().enumerate() {
        for (j, a) in row.iter_mut().enumerate() {
            // SAFETY: (co0 + c, ci, ky, kx0 + j) is a valid filter index.
            *a = *wp.add(c * wstride + j);
        }
    }
    let xbase = xin.as_ptr().add((ci * s.h + ky) * w + kx0);
    for (i, y) in ys.enumerate() {
        // SAFETY: gradient reads (channel c < C, row i < ys.len(), x < ow)
        // of the caller's rows; input reads (ci, y + ky, x + kx0 + j) with
        // y + ky < h and x + kx0 + j < ow + kw - 1 = w.
        let grow = g.add(i * ow);
        let xrow = xbase.add(y * w);
        for x in 0..ow {
            let mut gv = [V::ZERO; C];
            for (c, v) in gv.iter_mut().enumerate() {
                *v = *grow.add(c * g_plane + x);
            }
            for j in 0..X {
                let xv = *xrow.add(x + j);
                for c in 0..C {
                    acc[c][j] = gv[c].mul_add(xv, acc[c][j]);
                }
            }
        }
    }
    for (c, row) in acc.iter().enumerate() {
        for (j, &a) in row.iter().enumerate() {
            // SAFETY: as for the loads above.
            *wp.add(c * wstride + j) = a;
        }
    }
}
