//! C <- act(X W^T + bias) for an X with many exact zeros (a batch of images:
//! about 83% of MNIST's pixels are 0), skipping zeros at the granularity of
//! a few rows rather than in 64-row blocks (as the M-on-lanes product did
//! before this kernel replaced it, commit 0cd8338).
//!
//! X is m x k row-major, W is n x k row-major (a dense layer's `[n_out,
//! n_in]` weights), C is m x n row-major. The rows of X are cut into tiles
//! of `TILE_ROWS` (8); each tile lists once the columns p at which any of its
//! rows is non-zero (its "steps") together with the tile's values there.
//! N is cut into blocks of `BLOCK_VECS` (3) vectors; for each block the needed
//! rows of W^T (only the columns p some tile steps on) are transposed into a
//! panel of `k` contiguous rows (AVX-512: 16 x 16 blocks in registers;
//! 150 KB for k = 784, in L2), and every tile then accumulates
//! `x[r, p] * W^T[p, block]` over its steps into TILE_ROWS x BLOCK_VECS
//! register accumulators, one W^T row load shared by the tile's rows. The
//! epilogue (bias, activation) runs on the registers. While the tiles run,
//! the next block's rows of W are prefetched into L2, a line per step. The
//! transposition costs about a fifth of the call (reading W, 2.8 MB for
//! 900 x 784, from L3); a layer that kept W^T up to date would save it.
//! (Cutting K too, so a panel stays in L1, was tried and was no faster:
//! the partial sums' loads and stores per tile cost what L1 saved.)
//!
//! Each output is summed over its tile's steps in increasing p, from zero,
//! and the bias added last. A skipped step is one where every row of the
//! tile is +-0.0; adding 0 * w for a finite w changes nothing but possibly
//! the sign of a zero sum, so for finite W the result is the full product's
//! up to summation order. An infinite or NaN w at a skipped step would have
//! made the full product NaN; here it is not read.

use super::lanes::Lanes;
use super::{
    check_shapes, check_shapes_but_b, grow, Activation, Bias, Epilogue, KernelPath, Line, Trans,
};
use std::sync::Mutex;
use wide::{f32x16, f32x4, f32x8};

/// Rows of X per tile: they share one step list and each loaded W^T vector.
/// More rows amortize the loads of W^T (from L2) but their union of
/// non-zero pixels grows: on noisy MNIST a step is kept for 0.17 of the
/// pixels with one row, 0.27 with two, 0.37 with four, 0.45 with eight.
/// Timed per call on 200 real 64-image chunks, 784 -> 900 (AVX-512, 10th
/// percentile, against the M-on-lanes product that skipped pixels zero in
/// a whole 64-row block, removed since): 8 x 3 rows x vectors
/// took 0.85 of its time, 6 x 4 0.89, 4 x 4 0.91, 4 x 6 0.92, 2 x 8 1.0:
/// the loads, not the FMAs, bound this kernel.
pub const TILE_ROWS: usize = 8;

/// Vectors of C per tile row in one block of N: TILE_ROWS x BLOCK_VECS
/// accumulators (24 of 32 AVX-512 registers) plus BLOCK_VECS loaded W^T
/// vectors and one broadcast value.
pub const BLOCK_VECS: usize = 3;

/// Buffers of one call, grown on demand and reused by later calls.
#[derive(Default)]
struct Scratch {
    /// The column p of each step, all tiles back to back.
    steps: Vec<u32>,
    /// Each tile's values, row after row: TILE_ROWS runs of its step count
    /// holding x[r, p] at its steps (zero for rows beyond m).
    values: Vec<f32>,
    /// Tile t's steps are `steps[tile_ends[t - 1]..tile_ends[t]]`.
    tile_ends: Vec<usize>,
    /// The columns p that any tile steps on, increasing: the panel rows read.
    used: Vec<u32>,
    /// Bit p % 16 of word p / 16 set where some tile steps on p.
    used_mask: Vec<u16>,
    /// One tile's values while they are listed: TILE_ROWS rows of k.
    stage: Vec<f32>,
    /// W^T for one block of N: k rows of the block's width, zero-padded.
    panel: Vec<Line>,
}

/// Scratch buffers not in use, shared by all threads: a thread takes one
/// per call and gives it back. Unlike thread-local buffers they outlive
/// the threads, so a trainer whose thread pool is new on every run
/// allocates them once per process (as many as ran at once), not per run.
static SCRATCH_POOL: Mutex<Vec<Scratch>> = Mutex::new(Vec::new());

/// C[m x n] <- act(X W^T + bias) with X `m x k` (row stride `ldx`), W
/// `n x k` (row stride `ldw`), C `m x n` (row stride `ldc`; never read, so
/// it may hold garbage). Skips, per tile of 8 rows (`TILE_ROWS`), the columns
/// of X that are +-0.0 in all of the tile's rows: equal to
/// `sgemm_with_epilogue(N, T, ...)` with alpha 1, beta 0 up to summation
/// order for finite W (see the module docs). Single-threaded.
///
/// # Panics
/// If a leading dimension is shorter than its row, a slice is too short for
/// its shape, a bias is shorter than m (row bias) or n (column bias), or
/// k exceeds `u32::MAX`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_sparse_input(
    m: usize,
    n: usize,
    k: usize,
    x: &[f32],
    ldx: usize,
    w: &[f32],
    ldw: usize,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue,
) {
    sgemm_sparse_input_on_path(
        KernelPath::NATIVE,
        m,
        n,
        k,
        x,
        ldx,
        w,
        ldw,
        c,
        ldc,
        epilogue,
    );
}

/// [`sgemm_sparse_input`] with the vector width of `path` (f32x16, f32x8 or
/// f32x4), for tests of the widths other than the build's own.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn sgemm_sparse_input_on_path(
    path: KernelPath,
    m: usize,
    n: usize,
    k: usize,
    x: &[f32],
    ldx: usize,
    w: &[f32],
    ldw: usize,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue,
) {
    // The shapes of sgemm(N, T, ...) with A = X and B = W, checked as there.
    check_shapes(
        Trans::N,
        Trans::T,
        m,
        n,
        k,
        x,
        ldx,
        w,
        ldw,
        c,
        ldc,
        &epilogue,
    );
    assert!(
        u32::try_from(k).is_ok(),
        "sgemm_sparse_input: k {k} > u32::MAX"
    );
    if let Some(shape) = Shape::of(m, n, k, ldx, ldw, ldc, &epilogue) {
        with_scratch(|sc| run_path(path, &shape, x, Weights::Rows(w), c, sc));
    }
}

/// Runs `f` with a scratch set taken from the shared pool (or a new one).
fn with_scratch(f: impl FnOnce(&mut Scratch)) {
    // A panic elsewhere while holding the lock leaves the pool's buffers
    // intact (push and pop are all it does), so a poisoned lock is usable.
    let lock = || SCRATCH_POOL.lock().unwrap_or_else(|e| e.into_inner());
    let taken = lock().pop();
    let mut scratch = taken.unwrap_or_default();
    f(&mut scratch);
    lock().push(scratch);
}

/// W^T of a dense layer's `n x k` weight W, cut into the panels
/// [`sgemm_sparse_input`] transposes W into for every call: block b holds
/// W^T's columns b * width .. (b + 1) * width (width = `BLOCK_VECS`
/// vectors of the path), all k rows of them, zero-padded past n. Built
/// once while W stays fixed and read by every call
/// ([`sgemm_sparse_input_panels`]), where each call would otherwise
/// transpose the rows of W its tiles use (about a quarter of the call).
/// Blocks are filled independently ([`PanelLayout::fill`]), so threads can
/// share the work.
#[derive(Clone, Debug)]
pub struct SparsePanels {
    layout: PanelLayout,
    blocks: Vec<PanelBlock>,
}

/// What filling a block needs besides the block: the shape, and every
/// column of W listed as used.
#[derive(Clone, Debug)]
pub struct PanelLayout {
    path: KernelPath,
    n: usize,
    k: usize,
    width: usize,
    all_mask: Vec<u16>,
    all_steps: Vec<u32>,
}

/// One block of [`SparsePanels`]: k rows of `width` floats.
#[derive(Clone)]
pub struct PanelBlock {
    j0: usize,
    lines: Vec<Line>,
}

impl core::fmt::Debug for PanelBlock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PanelBlock")
            .field("j0", &self.j0)
            .field("floats", &(self.lines.len() * 16))
            .finish()
    }
}

impl PanelBlock {
    fn floats(&self) -> &[f32] {
        bytemuck::cast_slice(&self.lines)
    }
}

impl SparsePanels {
    /// Zeroed panels for an `n x k` weight on this build's path.
    ///
    /// # Panics
    /// If k exceeds `u32::MAX`.
    pub fn new(n: usize, k: usize) -> SparsePanels {
        Self::on_path(KernelPath::NATIVE, n, k)
    }

    /// [`SparsePanels::new`] for the vector width of `path` (tests).
    #[doc(hidden)]
    pub fn on_path(path: KernelPath, n: usize, k: usize) -> SparsePanels {
        assert!(u32::try_from(k).is_ok(), "SparsePanels: k {k} > u32::MAX");
        let lanes = match path {
            KernelPath::Avx512 => 16,
            KernelPath::Avx2 => 8,
            KernelPath::Portable => 4,
        };
        let width = BLOCK_VECS * lanes;
        let all_mask = (0..k.div_ceil(16))
            .map(|blk| {
                let live = 16.min(k - blk * 16);
                if live == 16 {
                    u16::MAX
                } else {
                    (1u16 << live) - 1
                }
            })
            .collect();
        let blocks = (0..n)
            .step_by(width)
            .map(|j0| PanelBlock {
                j0,
                lines: vec![Line([0.0; 16]); (k * width).div_ceil(16).max(1)],
            })
            .collect();
        SparsePanels {
            layout: PanelLayout {
                path,
                n,
                k,
                width,
                all_mask,
                all_steps: (0..k as u32).collect(),
            },
            blocks,
        }
    }

    /// (n, k) of the weight.
    pub fn shape(&self) -> (usize, usize) {
        (self.layout.n, self.layout.k)
    }

    /// The layout and the blocks, to fill the blocks (on several threads:
    /// each block is independent).
    pub fn parts_mut(&mut self) -> (&PanelLayout, &mut [PanelBlock]) {
        (&self.layout, &mut self.blocks)
    }

    /// Fills every block from W on this thread.
    pub fn fill_all(&mut self, w: &[f32], ldw: usize) {
        let (layout, blocks) = self.parts_mut();
        for block in blocks {
            layout.fill(block, w, ldw);
        }
    }
}

impl PanelLayout {
    /// Transposes W's rows of `block` (W `n x k` row-major, row stride
    /// `ldw`) into it, zero past n.
    ///
    /// # Panics
    /// If `ldw < k` or `w` is too short for the shape, or the block is not
    /// one of these panels' (another shape).
    pub fn fill(&self, block: &mut PanelBlock, w: &[f32], ldw: usize) {
        let (n, k, width) = (self.n, self.k, self.width);
        assert!(n == 0 || k <= ldw, "SparsePanels::fill: ldw {ldw} < k {k}");
        assert!(
            w.len() >= super::required_len(n, k, ldw),
            "SparsePanels::fill: W too short"
        );
        assert!(block.j0 < n.max(1) && block.lines.len() * 16 >= k * width);
        let nb = width.min(n - block.j0);
        let panel = lines_as_floats(&mut block.lines);
        let used = (&self.all_mask[..], &self.all_steps[..]);
        transpose_block(w, ldw, k, block.j0, nb, width, used, panel);
    }
}

/// [`sgemm_sparse_input`] with W^T taken from `panels` (built from W after
/// its last change: the caller keeps them current) instead of transposed
/// by the call: the same values, bit for bit, as [`sgemm_sparse_input`]
/// on that W. `n` and `k` are the panels'.
///
/// # Panics
/// As [`sgemm_sparse_input`]; also if the panels were made for another
/// build's path than this build's.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_sparse_input_panels(
    m: usize,
    x: &[f32],
    ldx: usize,
    panels: &SparsePanels,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue,
) {
    let PanelLayout { path, n, k, .. } = panels.layout;
    // The shapes of sgemm(N, T, ...) with A = X, checked as there, with a
    // W of exactly n x k (the panels hold all of it).
    check_shapes_but_b(Trans::N, m, n, k, x, ldx, c, ldc, &epilogue);
    if let Some(shape) = Shape::of(m, n, k, ldx, k, ldc, &epilogue) {
        with_scratch(|sc| run_path(path, &shape, x, Weights::Panels(panels), c, sc));
    }
}

/// The checked sizes and epilogue of one call.
struct Shape<'a> {
    m: usize,
    n: usize,
    k: usize,
    ldx: usize,
    ldw: usize,
    ldc: usize,
    bias_row: Option<&'a [f32]>,
    bias_col: Option<&'a [f32]>,
    activation: Activation,
}

impl<'a> Shape<'a> {
    /// The call's shape (checked by the caller), or None when C is empty.
    fn of(
        m: usize,
        n: usize,
        k: usize,
        ldx: usize,
        ldw: usize,
        ldc: usize,
        epilogue: &Epilogue<'a>,
    ) -> Option<Shape<'a>> {
        let (bias_row, bias_col) = match epilogue.bias {
            Bias::None => (None, None),
            Bias::Row(r) => (Some(&r[..m]), None),
            Bias::Col(cb) => (None, Some(&cb[..n])),
        };
        (m > 0 && n > 0).then_some(Shape {
            m,
            n,
            k,
            ldx,
            ldw,
            ldc,
            bias_row,
            bias_col,
            activation: epilogue.activation,
        })
    }
}

fn run_path(
    path: KernelPath,
    s: &Shape,
    x: &[f32],
    weights: Weights,
    c: &mut [f32],
    sc: &mut Scratch,
) {
    match path {
        KernelPath::Avx512 => run::<f32x16>(s, x, weights, c, sc),
        KernelPath::Avx2 => run::<f32x8>(s, x, weights, c, sc),
        KernelPath::Portable => run::<f32x4>(s, x, weights, c, sc),
    }
}

/// Lists each tile's steps and values, and the columns any tile uses.
fn list_steps(s: &Shape, x: &[f32], sc: &mut Scratch) {
    sc.steps.clear();
    sc.values.clear();
    sc.tile_ends.clear();
    sc.used.clear();
    sc.used_mask.clear();
    sc.used_mask.resize(s.k.div_ceil(16), 0);
    // The worst case up front: a later call on the same shape with more
    // non-zeros must not allocate (the trainer allocates nothing per batch).
    let tiles = s.m.div_ceil(TILE_ROWS);
    sc.steps.reserve(tiles * s.k);
    sc.values.reserve(tiles * TILE_ROWS * s.k);
    sc.tile_ends.reserve(tiles);
    sc.used.reserve(s.k);
    for i0 in (0..s.m).step_by(TILE_ROWS) {
        let rows = TILE_ROWS.min(s.m - i0);
        let tile_rows: [&[f32]; TILE_ROWS] = core::array::from_fn(|r| {
            let i = i0 + r.min(rows - 1);
            &x[i * s.ldx..i * s.ldx + s.k]
        });
        list_tile(&tile_rows, rows, sc);
        debug_assert_eq!(sc.values.len(), sc.steps.len() * TILE_ROWS);
        sc.tile_ends.push(sc.steps.len());
    }
    for (blk, &mask) in sc.used_mask.iter().enumerate() {
        let mut bits = mask;
        while bits != 0 {
            sc.used.push((blk * 16) as u32 + bits.trailing_zeros());
            bits &= bits - 1;
        }
    }
}

/// Appends one tile's steps (the columns where one of its first `rows`
/// rows is not +-0.0) and then its values, row after row (`values` gets
/// TILE_ROWS runs of the step count; rows beyond `rows` are zero), and
/// marks the steps in `used_mask`. `tile_rows[r]` for r >= rows repeats a
/// valid row (it is not read).
fn list_tile(tile_rows: &[&[f32]; TILE_ROWS], rows: usize, sc: &mut Scratch) {
    let k = tile_rows[0].len();
    let start = sc.steps.len();
    // Room for every column: the compressing stores below write whole
    // blocks' worth of survivors without a length check per element.
    sc.steps.resize(start + k, 0);
    sc.stage.resize(TILE_ROWS * k, 0.0);
    let mut len = 0;
    for (blk, used) in sc.used_mask.iter_mut().enumerate() {
        let p0 = blk * 16;
        let width = 16.min(k - p0);
        let mut mask = 0u16;
        for row in &tile_rows[..rows] {
            mask |= nonzero_mask(&row[p0..p0 + width]);
        }
        *used |= mask;
        if mask == 0 {
            continue;
        }
        let steps = &mut sc.steps[start + len..start + k];
        for (r, row) in tile_rows.iter().enumerate().take(rows) {
            compress(
                &row[p0..p0 + width],
                mask,
                &mut sc.stage[r * k + len..(r + 1) * k],
            );
        }
        let mut bits = mask;
        for step in steps.iter_mut() {
            if bits == 0 {
                break;
            }
            *step = p0 as u32 + bits.trailing_zeros();
            bits &= bits - 1;
        }
        len += mask.count_ones() as usize;
    }
    sc.steps.truncate(start + len);
    for r in 0..TILE_ROWS {
        if r < rows {
            sc.values.extend_from_slice(&sc.stage[r * k..r * k + len]);
        } else {
            sc.values.extend(core::iter::repeat_n(0.0, len));
        }
    }
}

/// Writes `v[q]` for the set bits q of `mask` (q < v.len() <= 16), in
/// order, to the front of `dst` (which has room for them).
#[inline(always)]
fn compress(v: &[f32], mask: u16, dst: &mut [f32]) {
    debug_assert!(v.len() <= 16 && (mask as u32) < (1u32 << v.len()));
    assert!(dst.len() >= mask.count_ones() as usize);
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    {
        use core::arch::x86_64::*;
        let lanes = crate::simd::first_lanes_mask16(v.len());
        // SAFETY: the masked load reads only v's v.len() floats; the
        // compressing store writes mask.count_ones() floats, which dst
        // holds (asserted); the mask has no bit at or beyond v.len() (its
        // bits come from a compare masked to those lanes). avx512f is
        // enabled at compile time.
        unsafe {
            let x = _mm512_maskz_loadu_ps(lanes, v.as_ptr());
            _mm512_mask_compressstoreu_ps(dst.as_mut_ptr(), mask & lanes, x);
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    {
        let mut out = 0;
        for (q, &x) in v.iter().enumerate() {
            if mask >> q & 1 != 0 {
                dst[out] = x;
                out += 1;
            }
        }
    }
}

/// Bit q set where `v[q]` is not +-0.0 (NaN counts as non-zero); `v` holds
/// at most 16 floats.
#[inline(always)]
fn nonzero_mask(v: &[f32]) -> u16 {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    {
        use core::arch::x86_64::*;
        debug_assert!(v.len() <= 16);
        let lanes = crate::simd::first_lanes_mask16(v.len());
        // SAFETY: the masked load reads only the first v.len() floats (the
        // rest are masked off and never touched); avx512f is enabled at
        // compile time.
        unsafe {
            let x = _mm512_maskz_loadu_ps(lanes, v.as_ptr());
            _mm512_mask_cmp_ps_mask::<_CMP_NEQ_UQ>(lanes, x, _mm512_setzero_ps())
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    {
        v.iter()
            .enumerate()
            .fold(0u16, |m, (q, &x)| m | (u16::from(x != 0.0) << q))
    }
}

/// Writes `panel[p * width + j] = W[j0 + j, p]` for the used p and j < nb,
/// and zero for nb <= j < width (the padding lanes the kernel computes and
/// discards; zero keeps them cheap and finite). On AVX-512, whole 16 x 16
/// blocks with a used p are transposed in registers; the ragged rest runs
/// scalar.
#[allow(clippy::too_many_arguments)]
fn transpose_block(
    w: &[f32],
    ldw: usize,
    k: usize,
    j0: usize,
    nb: usize,
    width: usize,
    sc_used: (&[u16], &[u32]),
    panel: &mut [f32],
) {
    let (used_mask, used) = sc_used;
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    let (j_simd, p_simd) = (nb / 16 * 16, k / 16 * 16);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    let (j_simd, p_simd) = {
        let _ = k; // only the in-register transposes need k
        (0usize, 0usize)
    };
    // Along the rows of W in the inner loop: 16 sequential streams.
    for jj in (0..j_simd).step_by(16) {
        for (blk, &mask) in used_mask.iter().enumerate().take(p_simd / 16) {
            if mask != 0 {
                transpose_w_block(w, ldw, j0 + jj, blk * 16, panel, width, jj);
            }
        }
    }
    for &p in used {
        let p = p as usize;
        let j_from = if p < p_simd { j_simd } else { 0 };
        let dst = &mut panel[p * width..(p + 1) * width];
        for (j, d) in dst.iter_mut().enumerate().take(nb).skip(j_from) {
            *d = w[(j0 + j) * ldw + p];
        }
        dst[nb..].fill(0.0);
    }
}

/// `panel[(p0 + q) * width + jj + r] = w[(j + r) * ldw + p0 + q]` for
/// q, r < 16: one 16 x 16 block transposed in registers.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
#[inline(always)]
fn transpose_w_block(
    w: &[f32],
    ldw: usize,
    j: usize,
    p0: usize,
    panel: &mut [f32],
    width: usize,
    jj: usize,
) {
    assert!((j + 15) * ldw + p0 + 16 <= w.len());
    assert!((p0 + 15) * width + jj + 16 <= panel.len());
    // SAFETY: the asserts above bound every row read (16 floats from
    // (j + r) * ldw + p0) and every row written (16 floats from
    // (p0 + q) * width + jj): the packer's full-block transpose.
    unsafe {
        super::pack::transpose_block::<16, true>(
            w.as_ptr().add(j * ldw + p0),
            ldw,
            16,
            16,
            panel.as_mut_ptr().add(p0 * width + jj),
            width,
            0xFFFF,
        )
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
fn transpose_w_block(_: &[f32], _: usize, _: usize, _: usize, _: &mut [f32], _: usize, _: usize) {
    unreachable!("transpose_w_block runs only on AVX-512 builds")
}

/// The rows of W that block `j0` (of `width` columns of C) transposes.
fn w_rows<'w>(s: &Shape, w: &'w [f32], j0: usize, width: usize) -> &'w [f32] {
    let (lo, hi) = (j0.min(s.n), (j0 + width).min(s.n));
    &w[(lo * s.ldw).min(w.len())..(hi * s.ldw).min(w.len())]
}

/// Prefetches one line into L2 (a hint: never faults).
#[inline(always)]
fn prefetch_l2(p: *const f32) {
    crate::simd::prefetch_line::<false>(p);
}

/// Where each block's W^T panel comes from.
enum Weights<'a> {
    /// W (n x k, row stride `Shape::ldw`), transposed block by block into
    /// the scratch panel.
    Rows(&'a [f32]),
    /// Panels transposed beforehand.
    Panels(&'a SparsePanels),
}

fn run<L: Lanes>(s: &Shape, x: &[f32], weights: Weights, c: &mut [f32], sc: &mut Scratch) {
    let width = BLOCK_VECS * L::LANES;
    list_steps(s, x, sc);
    if let Weights::Rows(_) = weights {
        grow(&mut sc.panel, s.k * width);
    }
    let Scratch {
        steps,
        values,
        tile_ends,
        used,
        used_mask,
        panel: scratch_panel,
        ..
    } = sc;
    for (block, j0) in (0..s.n).step_by(width).enumerate() {
        let nb = width.min(s.n - j0);
        // This block's panel, and the lines to bring into L2 while its tiles
        // run: the next block's rows of W, or its panel.
        let (panel, next_rows): (&[f32], &[f32]) = match weights {
            Weights::Rows(w) => {
                let panel = lines_as_floats(scratch_panel);
                transpose_block(w, s.ldw, s.k, j0, nb, width, (used_mask, used), panel);
                (panel, w_rows(s, w, j0 + width, width))
            }
            Weights::Panels(p) => (
                p.blocks[block].floats(),
                p.blocks.get(block + 1).map_or(&[], |b| b.floats()),
            ),
        };
        let lines = next_rows.len().div_ceil(16);
        let mut start = 0;
        for (t, &end) in tile_ends.iter().enumerate() {
            // This tile's share of the next block's rows of W, one line per
            // step: they arrive in L2 while the tiles compute, so the next
            // transposition does not wait on L3 (bunched prefetches would
            // hold the line-fill buffers the kernel's own loads need).
            let (lo, hi) = (
                lines * t / tile_ends.len(),
                lines * (t + 1) / tile_ends.len(),
            );
            let prefetch = (next_rows.as_ptr().wrapping_add(lo * 16), hi - lo);
            let i0 = t * TILE_ROWS;
            let rows = TILE_ROWS.min(s.m - i0);
            let out = Out {
                c: &mut c[i0 * s.ldc..],
                ldc: s.ldc,
                rows,
                j0,
                cols: nb,
                bias_row: s.bias_row.map(|b| &b[i0..i0 + rows]),
                bias_col: s.bias_col.map(|b| &b[j0..j0 + nb]),
                activation: s.activation,
            };
            let (tile_steps, tile_values) = (
                &steps[start..end],
                &values[start * TILE_ROWS..end * TILE_ROWS],
            );
            // A ragged last block (n = 900 leaves 36 columns on AVX-512)
            // runs only the vectors it needs.
            match nb.div_ceil(L::LANES) {
                1 if BLOCK_VECS > 1 => {
                    tile::<L, 1>(tile_steps, tile_values, panel, width, out, prefetch)
                }
                2 if BLOCK_VECS > 2 => {
                    tile::<L, 2>(tile_steps, tile_values, panel, width, out, prefetch)
                }
                _ => tile::<L, BLOCK_VECS>(tile_steps, tile_values, panel, width, out, prefetch),
            }
            start = end;
        }
    }
}

/// The panel's lines as floats.
fn lines_as_floats(lines: &mut [Line]) -> &mut [f32] {
    bytemuck::cast_slice_mut(lines)
}

/// Where one tile's results go: `rows` rows of C from the slice start
/// (stride `ldc`), columns `j0..j0 + cols`.
struct Out<'a> {
    c: &'a mut [f32],
    ldc: usize,
    rows: usize,
    j0: usize,
    cols: usize,
    bias_row: Option<&'a [f32]>,
    bias_col: Option<&'a [f32]>,
    activation: Activation,
}

/// One tile over one block of N: V vectors per row.
#[inline(always)]
fn tile<L: Lanes, const V: usize>(
    steps: &[u32],
    values: &[f32],
    panel: &[f32],
    width: usize,
    out: Out,
    prefetch: (*const f32, usize),
) {
    assert!(V * L::LANES <= width && out.cols <= V * L::LANES);
    assert_eq!(values.len(), steps.len() * TILE_ROWS);
    // Every step's panel row p * width .. p * width + V * LANES lies in the
    // panel: p < k and the panel holds k rows of `width` floats.
    let max_p = steps.iter().copied().max().unwrap_or(0) as usize;
    assert!(steps.is_empty() || (max_p + 1) * width <= panel.len());
    let base = panel.as_ptr();
    let len = steps.len();
    let x = values.as_ptr();
    let mut acc = [[L::zero(); V]; TILE_ROWS];
    let (pf_base, pf_lines) = prefetch;
    for (s, &p) in steps.iter().enumerate() {
        if s < pf_lines {
            prefetch_l2(pf_base.wrapping_add(s * 16));
        }
        // SAFETY: p <= max_p, so the V vectors read from p * width on lie
        // inside the panel (asserted above).
        let b: [L; V] = core::array::from_fn(|v| unsafe {
            L::load(base.add(p as usize * width + v * L::LANES))
        });
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: r * len + s < TILE_ROWS * len = values.len().
            let xr = L::splat(unsafe { *x.add(r * len + s) });
            for (a, &bv) in acc_r.iter_mut().zip(&b) {
                *a = xr.mul_add(bv, *a);
            }
        }
    }
    // Lines left over when the tile had fewer steps than its share.
    for line in steps.len()..pf_lines {
        prefetch_l2(pf_base.wrapping_add(line * 16));
    }
    store_tile::<L, V>(&acc, out);
}

/// Adds the bias, applies the activation and stores the tile's valid rows
/// and columns.
#[inline(always)]
fn store_tile<L: Lanes, const V: usize>(acc: &[[L; V]; TILE_ROWS], out: Out) {
    let Out {
        c,
        ldc,
        rows,
        j0,
        cols,
        bias_row,
        bias_col,
        activation,
    } = out;
    for (r, acc_r) in acc.iter().enumerate().take(rows) {
        let row = &mut c[r * ldc + j0..r * ldc + j0 + cols];
        for (v, &a) in acc_r.iter().enumerate() {
            let lo = v * L::LANES;
            if lo >= cols {
                break;
            }
            let live = (cols - lo).min(L::LANES);
            let mut y = a;
            if let Some(bc) = bias_col {
                let bc = &bc[lo..lo + live];
                // SAFETY: `bc` holds the `live` floats read (zero lanes past).
                y = y.add(unsafe { L::load_first(bc.as_ptr(), live) });
            }
            if let Some(br) = bias_row {
                y = y.add(L::splat(br[r]));
            }
            let dst = &mut row[lo..lo + live];
            // SAFETY: `dst` holds the `live` floats written.
            unsafe { y.activate(activation).store_first(dst.as_mut_ptr(), live) };
        }
    }
}
