//! C <- act(X W^T + bias) for an X with many exact zeros (a batch of images:
//! about 83% of MNIST's pixels are 0), skipping zeros at the granularity of
//! a few rows rather than the 64-row blocks of
//! [`super::sgemm_skipping_zero_columns`].
//!
//! X is m x k row-major, W is n x k row-major (a dense layer's `[n_out,
//! n_in]` weights), C is m x n row-major. The rows of X are cut into tiles
//! of [`TILE_ROWS`]; each tile lists once the columns p at which any of its
//! rows is non-zero (its "steps") together with the tile's values there.
//! N is cut into blocks of [`BLOCK_VECS`] vectors; for each block the needed
//! rows of W^T (only the columns p some tile steps on) are transposed into a
//! panel of `k` contiguous rows (a few hundred KB: it stays in L2), and every
//! tile then accumulates `x[r, p] * W^T[p, block]` over its steps into
//! TILE_ROWS x BLOCK_VECS register accumulators, one W^T row load shared by
//! the tile's rows. The epilogue (bias, activation) runs on the registers.
//!
//! Each output is summed over its tile's steps in increasing p, from zero,
//! and the bias added last. A skipped step is one where every row of the
//! tile is +-0.0; adding 0 * w for a finite w changes nothing but possibly
//! the sign of a zero sum, so for finite W the result is the full product's
//! up to summation order. An infinite or NaN w at a skipped step would have
//! made the full product NaN; here it is not read.

use super::lanes::Lanes;
use super::{Activation, Bias, Epilogue, KernelPath};
use std::cell::RefCell;
use wide::{f32x16, f32x4, f32x8};

/// Rows of X per tile: they share one step list and each loaded W^T vector.
/// More rows amortize loads but their union of non-zero pixels grows (on
/// noisy MNIST 0.17 of the pixels for one image, 0.37 for four).
pub const TILE_ROWS: usize = 4;

/// Vectors of C per tile row in one block of N: TILE_ROWS x BLOCK_VECS
/// accumulators (16 of 32 AVX-512 registers) plus BLOCK_VECS loaded W^T
/// vectors and one broadcast value.
pub const BLOCK_VECS: usize = 4;

/// A cache-line-aligned chunk of the panel (aligned W^T rows).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; 16]);

/// Per-thread buffers, grown on demand and reused by later calls.
#[derive(Default)]
struct Scratch {
    /// The column p of each step, all tiles back to back.
    steps: Vec<u32>,
    /// TILE_ROWS values per step: the tile's x[r, p], zero for a row that
    /// is zero there or lies beyond m.
    values: Vec<f32>,
    /// Tile t's steps are `steps[tile_ends[t - 1]..tile_ends[t]]`.
    tile_ends: Vec<usize>,
    /// The columns p that any tile steps on, increasing: the panel rows read.
    used: Vec<u32>,
    /// W^T for one block of N: k rows of the block's width, zero-padded.
    panel: Vec<Line>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn required_len(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

/// C[m x n] <- act(X W^T + bias) with X `m x k` (row stride `ldx`), W
/// `n x k` (row stride `ldw`), C `m x n` (row stride `ldc`; never read, so
/// it may hold garbage). Skips, per tile of [`TILE_ROWS`] rows, the columns
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
    assert!(m == 0 || k <= ldx, "sgemm_sparse_input: ldx {ldx} < k {k}");
    assert!(n == 0 || k <= ldw, "sgemm_sparse_input: ldw {ldw} < k {k}");
    assert!(m == 0 || n <= ldc, "sgemm_sparse_input: ldc {ldc} < n {n}");
    assert!(
        x.len() >= required_len(m, k, ldx),
        "sgemm_sparse_input: X too short"
    );
    assert!(
        w.len() >= required_len(n, k, ldw),
        "sgemm_sparse_input: W too short"
    );
    assert!(
        c.len() >= required_len(m, n, ldc),
        "sgemm_sparse_input: C too short"
    );
    assert!(
        u32::try_from(k).is_ok(),
        "sgemm_sparse_input: k {k} > u32::MAX"
    );
    let (bias_row, bias_col) = match epilogue.bias {
        Bias::None => (None, None),
        Bias::Row(r) => {
            assert!(r.len() >= m, "sgemm_sparse_input: row bias shorter than m");
            (Some(&r[..m]), None)
        }
        Bias::Col(cb) => {
            assert!(
                cb.len() >= n,
                "sgemm_sparse_input: column bias shorter than n"
            );
            (None, Some(&cb[..n]))
        }
    };
    if m == 0 || n == 0 {
        return;
    }
    let shape = Shape {
        m,
        n,
        k,
        ldx,
        ldw,
        ldc,
        bias_row,
        bias_col,
        activation: epilogue.activation,
    };
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => run_path(path, &shape, x, w, c, &mut scratch),
        // Re-entered on this thread (cannot happen today): fresh buffers.
        Err(_) => run_path(path, &shape, x, w, c, &mut Scratch::default()),
    });
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

fn run_path(path: KernelPath, s: &Shape, x: &[f32], w: &[f32], c: &mut [f32], sc: &mut Scratch) {
    match path {
        KernelPath::Avx512 => run::<f32x16>(s, x, w, c, sc),
        KernelPath::Avx2 => run::<f32x8>(s, x, w, c, sc),
        KernelPath::Portable => run::<f32x4>(s, x, w, c, sc),
    }
}

/// Lists each tile's steps and values, and the columns any tile uses.
fn list_steps(s: &Shape, x: &[f32], sc: &mut Scratch) {
    sc.steps.clear();
    sc.values.clear();
    sc.tile_ends.clear();
    sc.used.clear();
    let mut used = vec![false; s.k];
    for i0 in (0..s.m).step_by(TILE_ROWS) {
        let rows = TILE_ROWS.min(s.m - i0);
        let tile_rows: [&[f32]; TILE_ROWS] = core::array::from_fn(|r| {
            if r < rows {
                &x[(i0 + r) * s.ldx..(i0 + r) * s.ldx + s.k]
            } else {
                &[]
            }
        });
        for (p, used_p) in used.iter_mut().enumerate() {
            let vals: [f32; TILE_ROWS] =
                core::array::from_fn(|r| tile_rows[r].get(p).copied().unwrap_or(0.0));
            // `!= 0.0` keeps NaN and drops both zeros.
            if vals.iter().any(|&v| v != 0.0) {
                sc.steps.push(p as u32);
                sc.values.extend_from_slice(&vals);
                *used_p = true;
            }
        }
        sc.tile_ends.push(sc.steps.len());
    }
    sc.used.extend(
        used.iter()
            .enumerate()
            .filter(|&(_, &u)| u)
            .map(|(p, _)| p as u32),
    );
}

/// Writes `panel[p * width + j] = W[j0 + j, p]` for the used p and j < nb,
/// and zero for nb <= j < width (the padding lanes the kernel computes and
/// discards; zero keeps them cheap and finite).
fn transpose_block(
    w: &[f32],
    ldw: usize,
    j0: usize,
    nb: usize,
    width: usize,
    used: &[u32],
    panel: &mut [f32],
) {
    for &p in used {
        let p = p as usize;
        let dst = &mut panel[p * width..(p + 1) * width];
        for (j, d) in dst[..nb].iter_mut().enumerate() {
            *d = w[(j0 + j) * ldw + p];
        }
        dst[nb..].fill(0.0);
    }
}

fn run<L: Lanes>(s: &Shape, x: &[f32], w: &[f32], c: &mut [f32], sc: &mut Scratch) {
    list_steps(s, x, sc);
    let width = BLOCK_VECS * L::LANES;
    let panel_lines = (s.k * width).div_ceil(16).max(1);
    if sc.panel.len() < panel_lines {
        sc.panel.resize(panel_lines, Line([0.0; 16]));
    }
    let Scratch {
        steps,
        values,
        tile_ends,
        used,
        panel,
    } = sc;
    let panel: &mut [f32] = bytemuck_lines(panel);
    for j0 in (0..s.n).step_by(width) {
        let nb = width.min(s.n - j0);
        transpose_block(w, s.ldw, j0, nb, width, used, panel);
        let mut start = 0;
        for (t, &end) in tile_ends.iter().enumerate() {
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
            match nb.div_ceil(L::LANES) {
                1 => tile::<L, 1>(tile_steps, tile_values, panel, width, out),
                2 => tile::<L, 2>(tile_steps, tile_values, panel, width, out),
                3 => tile::<L, 3>(tile_steps, tile_values, panel, width, out),
                _ => tile::<L, BLOCK_VECS>(tile_steps, tile_values, panel, width, out),
            }
            start = end;
        }
    }
}

/// The panel's lines as floats.
fn bytemuck_lines(lines: &mut [Line]) -> &mut [f32] {
    let len = lines.len() * 16;
    // SAFETY: Line is repr(C) over [f32; 16] with no padding (64 bytes,
    // align 64), so `lines` is `len` contiguous initialized f32s, borrowed
    // mutably for the returned slice's lifetime.
    unsafe { core::slice::from_raw_parts_mut(lines.as_mut_ptr() as *mut f32, len) }
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
) {
    assert!(V * L::LANES <= width && out.cols <= V * L::LANES);
    assert_eq!(values.len(), steps.len() * TILE_ROWS);
    // Every step's panel row p * width .. p * width + V * LANES lies in the
    // panel: p < k and the panel holds k rows of `width` floats.
    let max_p = steps.iter().copied().max().unwrap_or(0) as usize;
    assert!(steps.is_empty() || (max_p + 1) * width <= panel.len());
    let base = panel.as_ptr();
    let mut acc = [[L::zero(); V]; TILE_ROWS];
    for (&p, x) in steps.iter().zip(values.chunks_exact(TILE_ROWS)) {
        // SAFETY: p <= max_p, so the V vectors read from p * width on lie
        // inside the panel (asserted above).
        let b: [L; V] = core::array::from_fn(|v| unsafe {
            L::load(base.add(p as usize * width + v * L::LANES))
        });
        for (acc_r, &xr) in acc.iter_mut().zip(x) {
            let xr = L::splat(xr);
            for (a, &bv) in acc_r.iter_mut().zip(&b) {
                *a = xr.mul_add(bv, *a);
            }
        }
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
            let hi = (lo + L::LANES).min(cols);
            let mut y = a;
            if let Some(bc) = bias_col {
                y = y.add(load_partial::<L>(&bc[lo..hi]));
            }
            if let Some(br) = bias_row {
                y = y.add(L::splat(br[r]));
            }
            store_partial(y.activate(activation), &mut row[lo..hi]);
        }
    }
}

/// Loads up to LANES floats, zero-padded.
#[inline(always)]
fn load_partial<L: Lanes>(s: &[f32]) -> L {
    let mut buf = [0.0f32; 16];
    buf[..s.len()].copy_from_slice(s);
    // SAFETY: buf holds 16 >= LANES floats.
    unsafe { L::load(buf.as_ptr()) }
}

/// Stores the first `d.len()` (<= LANES) lanes of `v`.
#[inline(always)]
fn store_partial<L: Lanes>(v: L, d: &mut [f32]) {
    if d.len() == L::LANES {
        // SAFETY: d holds exactly LANES floats.
        unsafe { v.store(d.as_mut_ptr()) };
    } else {
        let mut buf = [0.0f32; 16];
        // SAFETY: buf holds 16 >= LANES floats.
        unsafe { v.store(buf.as_mut_ptr()) };
        d.copy_from_slice(&buf[..d.len()]);
    }
}
