//! Backward passes of a conv -> ReLU -> 2x2 max-pool block that visit only
//! each pooling window's winner.
//!
//! Pooling hands each window's gradient to one of its four outputs, so three
//! in four terms of the dense backward passes (`lanes::backward_from_maxpool`)
//! are zeros. Here each (image, channel, window) adds its pooled gradient g
//! times the input under the winner's receptive field to the filter gradient,
//! and g times the filter into the input gradient there: a quarter of the
//! multiply-adds.
//!
//! An image is laid out so that the receptive field of any output position is
//! a fixed set of vectors at fixed offsets from that position's base
//! ([`Layout`]):
//! * `Rows` (few input channels, conv1): the image as it is, kernel rows on
//!   the lanes. One vector covers a whole kernel row (`kw <= L`) or, where the
//!   plane is narrow, several (two 5-wide rows of a 10-wide plane fit in 16
//!   lanes); wider rows take several vectors. Lanes between or beyond the
//!   taps are read and ignored (filter gradient) or meet zero weights (input
//!   gradient). The buffer has slack after the image for the vectors that
//!   reach past its last row.
//! * `Channels` (many input channels, conv2): pixel-major, a pixel's input
//!   channels on the lanes (padded to whole vectors), so every tap is one
//!   aligned vector.
//!
//! The layout with fewer vectors per receptive field is used. Within a block
//! of vectors held in registers, the winners' terms are multiply-added in
//! order. Summation order (fixed, so the results are deterministic): every
//! filter tap and bias sums over images in batch order, then windows in
//! row-major order; every input-gradient element over output channels in
//! order, then windows. Windows whose gradient is zero are skipped: their
//! terms are exactly zero for finite inputs.

use super::lanes::{grown, L, V};
use super::{transpose, ConvShape};
use crate::gemm::lanes::Lanes;

/// Marks a lane that holds no filter tap.
const NO_TAP: u32 = u32::MAX;

/// Most vectors one pass over a channel's winners keeps in registers, leaving
/// room for the broadcast gradient and an operand (32 registers on AVX-512,
/// 16 on AVX2 and NEON).
const MAX_BLOCK: usize = if L == 16 { 25 } else { 12 };
const _: () = assert!(MAX_BLOCK <= 25, "with_block_len! covers up to 25");

/// How an image is laid out for the winners' vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// NCHW as given, kernel rows on the lanes.
    Rows,
    /// Pixel-major, input channels on the lanes.
    Channels,
}

impl Layout {
    /// The layout with fewer vectors per receptive field (`Channels` on a tie:
    /// its vectors are aligned).
    pub fn for_shape(s: &ConvShape) -> Layout {
        let channel_vecs = s.kh * s.kw * s.c_in.div_ceil(L);
        let rows_vecs = if s.kw <= L {
            s.c_in * s.kh.div_ceil(1 + (L - s.kw) / s.w)
        } else {
            s.c_in * s.kh * s.kw.div_ceil(L)
        };
        if rows_vecs < channel_vecs {
            Layout::Rows
        } else {
            Layout::Channels
        }
    }
}

/// Calls `f::<N>(args)` with N = `len` (1 ..= 25, the most `MAX_BLOCK` can
/// be): a block's vectors as a fixed-size array, which the compiler keeps in
/// registers.
macro_rules! with_block_len {
    ($len:expr, $f:ident $args:tt) => {
        with_block_len!(@arms $len, $f, $args,
            1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25)
    };
    (@arms $len:expr, $f:ident, $args:tt, $($n:literal)*) => {
        match $len {
            $($n => $f::<$n> $args,)*
            n => unreachable!("a block of {n} vectors"),
        }
    };
}

/// Buffers reused across calls (grown on first use).
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    /// One image in the layout (plus slack).
    image: Vec<V>,
    /// One image's input gradient in the layout.
    grad_image: Vec<V>,
    /// Per output position (`y * ow + x`): its base offset in the layout.
    bases: Vec<u32>,
    /// Per pooled window of an image (all channels): its top-left output
    /// position.
    corners: Vec<i32>,
    /// The receptive field's vectors: offsets from a base, and their lanes'
    /// filter taps (`NO_TAP` for none).
    vec_offsets: Vec<usize>,
    taps: Vec<u32>,
    /// Filter-gradient accumulators, `c_out x vectors`.
    acc: Vec<V>,
    /// The filters in the vectors' layout (zero where no tap).
    weight_vecs: Vec<V>,
    /// One channel plane's winners with a non-zero gradient: (base, g).
    entries: Vec<(u32, f32)>,
}

/// The receptive field's vectors in `layout`: `offsets[r]` is vector r's
/// first element relative to an output position's base, `taps[r * L + l]`
/// the filter index (`c_in x kh x kw`) lane l holds, or `NO_TAP`. Returns the
/// float offset of the base of output position (y, x) as (per row, per column).
fn layout_vectors(
    s: &ConvShape,
    layout: Layout,
    offsets: &mut Vec<usize>,
    taps: &mut Vec<u32>,
) -> (usize, usize) {
    offsets.clear();
    taps.clear();
    let (h, w, kh, kw) = (s.h, s.w, s.kh, s.kw);
    let tap = |ci: usize, ky: usize, kx: usize| ((ci * kh + ky) * kw + kx) as u32;
    match layout {
        Layout::Rows if kw <= L => {
            // Kernel rows ky0 .. ky0 + per_vec, w apart in the plane.
            let per_vec = 1 + (L - kw) / w;
            for ci in 0..s.c_in {
                for ky0 in (0..kh).step_by(per_vec) {
                    offsets.push((ci * h + ky0) * w);
                    taps.extend((0..L).map(|l| {
                        let (i, kx) = (l / w, l % w);
                        if i < per_vec && ky0 + i < kh && kx < kw {
                            tap(ci, ky0 + i, kx)
                        } else {
                            NO_TAP
                        }
                    }));
                }
            }
            (w, 1)
        }
        Layout::Rows => {
            for ci in 0..s.c_in {
                for ky in 0..kh {
                    for x0 in (0..kw).step_by(L) {
                        offsets.push((ci * h + ky) * w + x0);
                        taps.extend((0..L).map(|l| {
                            if x0 + l < kw {
                                tap(ci, ky, x0 + l)
                            } else {
                                NO_TAP
                            }
                        }));
                    }
                }
            }
            (w, 1)
        }
        Layout::Channels => {
            let pixel = s.c_in.div_ceil(L) * L;
            for ky in 0..kh {
                for kx in 0..kw {
                    for c0 in (0..s.c_in).step_by(L) {
                        offsets.push((ky * w + kx) * pixel + c0);
                        taps.extend((0..L).map(|l| {
                            if c0 + l < s.c_in {
                                tap(c0 + l, ky, kx)
                            } else {
                                NO_TAP
                            }
                        }));
                    }
                }
            }
            (w * pixel, pixel)
        }
    }
}

/// Filter and bias gradients (overwritten) and, if `grad_input` is given, the
/// input gradient (overwritten), from the pooled gradient (ReLU's derivative
/// applied) and the pooling's argmax (`[batch][c_out][oh/2][ow/2]`, indices
/// into the output plane), in `layout`. Returns false if an argmax index is
/// not in its window (the outputs are then unspecified). The caller checks the
/// slices' lengths and the shape.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_from_winners(
    sc: &mut Scratch,
    s: &ConvShape,
    layout: Layout,
    input: &[f32],
    weight: &[f32],
    pooled_grad: &[f32],
    argmax: &[u32],
    grad_weight: &mut [f32],
    grad_bias: &mut [f32],
    mut grad_input: Option<&mut [f32]>,
) -> bool {
    let (oh, ow) = (s.out_h(), s.out_w());
    let (ph, pw) = (oh / 2, ow / 2);
    let plane_windows = ph * pw;
    let image_len = s.c_in * s.h * s.w;
    let filter_len = s.c_in * s.kh * s.kw;
    let (per_row, per_col) = layout_vectors(s, layout, &mut sc.vec_offsets, &mut sc.taps);
    let (vec_offsets, taps) = (&sc.vec_offsets[..], &sc.taps[..]);
    let nvec = vec_offsets.len();
    // Every vector read or written lies within the buffer: the furthest
    // output position's base, plus the furthest vector, plus its lanes.
    let max_base = (oh - 1) * per_row + (ow - 1) * per_col;
    let furthest = max_base + vec_offsets.iter().max().copied().unwrap_or(0) + L;
    let buf_vecs = furthest.max(image_len).div_ceil(L);
    assert!(buf_vecs * L < u32::MAX as usize, "conv: image too large");

    let bases = grown(&mut sc.bases, oh * ow, 0);
    for (a, b) in bases.iter_mut().enumerate() {
        *b = ((a / ow) * per_row + (a % ow) * per_col) as u32;
    }
    let image_windows = s.c_out * plane_windows;
    let corners = grown(&mut sc.corners, image_windows, 0);
    for (i, c) in corners.iter_mut().enumerate() {
        let p = i % plane_windows;
        *c = (2 * (p / pw) * ow + 2 * (p % pw)) as i32;
    }
    let (bases, corners) = (&sc.bases[..oh * ow], &sc.corners[..image_windows]);
    debug_assert_eq!(bases.iter().max().copied(), Some(max_base as u32));

    let acc = grown(&mut sc.acc, s.c_out * nvec, V::ZERO);
    acc.fill(V::ZERO);
    grad_bias.fill(0.0);
    let weight_vecs = grown(&mut sc.weight_vecs, s.c_out * nvec, V::ZERO);
    if grad_input.is_some() {
        for (c, wv) in weight_vecs.chunks_exact_mut(nvec.max(1)).enumerate() {
            let filter = &weight[c * filter_len..(c + 1) * filter_len];
            for (r, v) in wv.iter_mut().enumerate() {
                *v = V::new(std::array::from_fn(|l| match taps[r * L + l] {
                    NO_TAP => 0.0,
                    t => filter[t as usize],
                }));
            }
        }
    }
    let image = grown(&mut sc.image, buf_vecs, V::ZERO);
    // Slack and padding lanes stay zero: packing writes only image values.
    image.fill(V::ZERO);
    let grad_image = grown(&mut sc.grad_image, buf_vecs, V::ZERO);
    let entries = grown(&mut sc.entries, plane_windows, (0, 0.0));

    let blocks = nvec.div_ceil(MAX_BLOCK).max(1);
    let per_block = nvec.div_ceil(blocks).max(1);
    let mut in_windows = true;
    for n in 0..s.batch {
        pack_image(s, layout, &input[n * image_len..(n + 1) * image_len], image);
        if grad_input.is_some() {
            grad_image.fill(V::ZERO);
        }
        let image_wins = &argmax[n * image_windows..(n + 1) * image_windows];
        in_windows &= in_their_windows(image_wins, corners, ow);
        for c in 0..s.c_out {
            let plane = (n * s.c_out + c) * plane_windows;
            let grads = &pooled_grad[plane..plane + plane_windows];
            let wins = &argmax[plane..plane + plane_windows];
            let (winners, sum) = collect_winners(grads, wins, bases, entries);
            grad_bias[c] += sum;
            let chan_acc = &mut acc[c * nvec..(c + 1) * nvec];
            for (b, block) in chan_acc.chunks_mut(per_block).enumerate() {
                let offs = &vec_offsets[b * per_block..b * per_block + block.len()];
                add_block(block, bytemuck::cast_slice(image), offs, winners, max_base);
            }
            if grad_input.is_some() {
                let grad: &mut [f32] = bytemuck::cast_slice_mut(grad_image);
                let chan_w = &weight_vecs[c * nvec..(c + 1) * nvec];
                for (b, block) in chan_w.chunks(per_block).enumerate() {
                    let offs = &vec_offsets[b * per_block..b * per_block + block.len()];
                    scatter(grad, block, offs, winners, max_base);
                }
            }
        }
        if let Some(gi) = grad_input.as_deref_mut() {
            unpack_image(
                s,
                layout,
                grad_image,
                &mut gi[n * image_len..(n + 1) * image_len],
            );
        }
    }

    for c in 0..s.c_out {
        let filter = &mut grad_weight[c * filter_len..(c + 1) * filter_len];
        for (r, v) in acc[c * nvec..(c + 1) * nvec].iter().enumerate() {
            for (&t, &x) in taps[r * L..(r + 1) * L].iter().zip(v.as_array()) {
                if t != NO_TAP {
                    filter[t as usize] = x;
                }
            }
        }
    }
    in_windows
}

/// Copies one NCHW image into `dst` in `layout` (leaving other elements).
fn pack_image(s: &ConvShape, layout: Layout, src: &[f32], dst: &mut [V]) {
    let hw = s.h * s.w;
    match layout {
        Layout::Rows => {
            let dst: &mut [f32] = bytemuck::cast_slice_mut(dst);
            dst[..src.len()].copy_from_slice(src);
        }
        Layout::Channels if s.c_in <= L => {
            assert!(src.len() == s.c_in * hw && dst.len() >= hw);
            // SAFETY: rows l < c_in of hw values start at l * hw and end
            // within c_in * hw = src.len(), asserted above.
            unsafe { transpose::pack(src.as_ptr(), hw, s.c_in, &mut dst[..hw]) };
        }
        Layout::Channels => {
            let pixel = s.c_in.div_ceil(L) * L;
            let dst: &mut [f32] = bytemuck::cast_slice_mut(dst);
            for (ci, plane) in src.chunks_exact(hw).enumerate() {
                for (p, &x) in plane.iter().enumerate() {
                    dst[p * pixel + ci] = x;
                }
            }
        }
    }
}

/// The inverse of `pack_image`: `dst` (one NCHW image) from `src`.
fn unpack_image(s: &ConvShape, layout: Layout, src: &[V], dst: &mut [f32]) {
    let hw = s.h * s.w;
    match layout {
        Layout::Rows => dst.copy_from_slice(&bytemuck::cast_slice(src)[..dst.len()]),
        Layout::Channels if s.c_in <= L => {
            assert!(dst.len() == s.c_in * hw && src.len() >= hw);
            // SAFETY: rows l < c_in of hw values start at l * hw and end
            // within c_in * hw = dst.len(), asserted above.
            unsafe { transpose::unpack(&src[..hw], dst.as_mut_ptr(), hw, s.c_in) };
        }
        Layout::Channels => {
            let pixel = s.c_in.div_ceil(L) * L;
            let src: &[f32] = bytemuck::cast_slice(src);
            for (ci, plane) in dst.chunks_exact_mut(hw).enumerate() {
                for (p, x) in plane.iter_mut().enumerate() {
                    *x = src[p * pixel + ci];
                }
            }
        }
    }
}

/// The plane's windows whose gradient is not zero, as (base of the winner,
/// gradient), in order, and the sum of the plane's gradients (in order);
/// compacted without a branch per window (whether a gradient is zero is not
/// predictable). An argmax past the plane is clamped to its last position (it
/// never is once `in_their_windows` passed).
fn collect_winners<'e>(
    grads: &[f32],
    wins: &[u32],
    bases: &[u32],
    entries: &'e mut [(u32, f32)],
) -> (&'e [(u32, f32)], f32) {
    assert!(entries.len() >= grads.len() && !bases.is_empty());
    let last = bases.len() - 1;
    let (mut k, mut sum) = (0, 0.0);
    for (&g, &w) in grads.iter().zip(wins) {
        entries[k] = (bases[(w as usize).min(last)], g);
        k += (g != 0.0) as usize;
        sum += g;
    }
    (&entries[..k], sum)
}

/// Whether every argmax of an image's windows (all channels) lies in its
/// window: at the window's corner, one right, one down, or both.
fn in_their_windows(wins: &[u32], corners: &[i32], ow: usize) -> bool {
    use crate::lanes::I32s;
    assert_eq!(wins.len(), corners.len());
    let steps = [0, 1, ow as i32, ow as i32 + 1].map(I32s::splat);
    let hit = |a: [u32; L], corner: [i32; L]| {
        // An index past i32::MAX wraps negative: no hit either way.
        let d = I32s::new(bytemuck::cast(a)) - I32s::new(corner);
        steps
            .iter()
            .fold(I32s::ZERO, |h, &st| h | d.simd_eq(st))
            .all()
    };
    let mut ok = true;
    let (wc, cc) = (wins.chunks_exact(L), corners.chunks_exact(L));
    let (wr, cr) = (wc.remainder(), cc.remainder());
    for (w, c) in wc.zip(cc) {
        ok &= hit(w.try_into().unwrap(), c.try_into().unwrap());
    }
    if !wr.is_empty() {
        // Lanes past the image compare index 0 with corner 0: a hit.
        let a = std::array::from_fn(|l| wr.get(l).copied().unwrap_or(0));
        let c = std::array::from_fn(|l| cr.get(l).copied().unwrap_or(0));
        ok &= hit(a, c);
    }
    ok
}

/// `acc[r] += g * buf[base + offsets[r] ..][..L]` for every winner (base, g)
/// in order; one block of vectors held in registers. Bases above `max_base`
/// are clamped to it (they never are: they come from the bases table), which
/// bounds every read.
fn add_block(
    acc: &mut [V],
    buf: &[f32],
    offsets: &[usize],
    winners: &[(u32, f32)],
    max_base: usize,
) {
    with_block_len!(
        acc.len(),
        add_block_n(
            acc.try_into().unwrap(),
            buf,
            offsets.try_into().unwrap(),
            winners,
            max_base
        )
    )
}

/// Whether a vector at `max_base` plus the furthest offset fits `len`.
fn fits(len: usize, offsets: &[usize], max_base: usize) -> bool {
    max_base < u32::MAX as usize && max_base + offsets.iter().max().copied().unwrap_or(0) + L <= len
}

#[inline(never)]
fn add_block_n<const N: usize>(
    acc: &mut [V; N],
    buf: &[f32],
    offsets: &[usize; N],
    winners: &[(u32, f32)],
    max_base: usize,
) {
    assert!(fits(buf.len(), offsets, max_base));
    let max_base = max_base as u32;
    let mut a = *acc;
    for &(base, g) in winners {
        let gv = V::splat(g);
        let base = base.min(max_base) as usize;
        for (ar, &off) in a.iter_mut().zip(offsets) {
            // SAFETY: base + off + L <= max_base + max(offsets) + L <=
            // buf.len() (`fits`, asserted).
            let v = unsafe { V::load(buf.as_ptr().add(base + off)) };
            *ar = gv.mul_add(v, *ar);
        }
    }
    *acc = a;
}

/// `grad[base + offsets[r] ..][..L] += g * weight_vecs[r]` for every winner
/// in order; one block of weight vectors held in registers, bases clamped as
/// in `add_block`.
fn scatter(
    grad: &mut [f32],
    weight_vecs: &[V],
    offsets: &[usize],
    winners: &[(u32, f32)],
    max_base: usize,
) {
    with_block_len!(
        weight_vecs.len(),
        scatter_n(
            grad,
            weight_vecs.try_into().unwrap(),
            offsets.try_into().unwrap(),
            winners,
            max_base
        )
    )
}

#[inline(never)]
fn scatter_n<const N: usize>(
    grad: &mut [f32],
    weight_vecs: &[V; N],
    offsets: &[usize; N],
    winners: &[(u32, f32)],
    max_base: usize,
) {
    assert!(fits(grad.len(), offsets, max_base));
    let max_base = max_base as u32;
    let w = *weight_vecs;
    for &(base, g) in winners {
        let gv = V::splat(g);
        let base = base.min(max_base) as usize;
        for (wv, &off) in w.iter().zip(offsets) {
            // SAFETY: base + off + L <= grad.len(), as in `add_block_n`.
            unsafe {
                let p = grad.as_mut_ptr().add(base + off);
                gv.mul_add(*wv, V::load(p)).store(p);
            }
        }
    }
}
