//! A sum of products along K in one blocked GEMM:
//! C <- act(alpha * sum_t op(A_t) op(B_t) + beta * C + bias).
//!
//! The terms are treated as one product over their concatenated K: each KC
//! slice of that K packs, into the same A block and B panel, the k ranges of
//! whichever terms it overlaps (`pack::pack_a_strided` / `pack_b_strided`
//! write a term at a k offset of the panels). Each C tile is then loaded and
//! stored once per KC slice rather than once per term: for the trainer's
//! weight-gradient blocks (228 x 784, four terms of k = 64) C traffic, not
//! arithmetic, is what the separate products spend their time on.
//!
//! Calls with at most one non-empty term run the ordinary single-product
//! path unchanged (with its in-place A / B, M-on-lanes and dot-edge
//! variants); calls with several run only the fully packed loops, which is
//! what the single-product path itself runs for the trainer's shapes.

use super::kernel::{Avx2Fma6x16, Avx512Fma12x32, Path, Portable4x8, TileEpilogue};
use super::{
    bias_pointers, check_shapes, pack, sgemm_on_path, sweep_tiles, with_pack_buffers, Activation,
    BlockSizes, Blocking, Epilogue, KernelPath, Trans, ROW_MAJOR_TILES_MAX_K,
};

/// One term op(A) op(B) of [`sgemm_sum`]: op(A) is m x k, op(B) is k x n,
/// stored as for [`super::sgemm`] (A is m x k with `Trans::N`, k x m with
/// `Trans::T`; likewise B).
#[derive(Clone, Copy, Debug)]
pub struct KTerm<'a> {
    pub a: &'a [f32],
    pub lda: usize,
    pub b: &'a [f32],
    pub ldb: usize,
    pub k: usize,
}

/// C <- act(alpha * sum_t op(A_t) op(B_t) + beta * C + bias), single-threaded,
/// as one product over the terms' concatenated K (see the module doc). Terms
/// with k == 0 contribute nothing; with no terms (or only empty ones) C
/// becomes act(beta * C + bias). When beta == 0, C is never read.
///
/// # Panics
/// If a term's operands, C or the bias are shorter than the shapes require
/// or a leading dimension is narrower than its matrix (as [`super::sgemm`]).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_sum(
    ta: Trans,
    tb: Trans,
    m: usize,
    n: usize,
    terms: &[KTerm],
    alpha: f32,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue,
) {
    sgemm_sum_on_path(
        KernelPath::NATIVE,
        None,
        ta,
        tb,
        m,
        n,
        terms,
        alpha,
        beta,
        c,
        ldc,
        epilogue,
    );
}

/// [`sgemm_sum`] on a chosen path and, optionally, cache blocking: for tests
/// and benches of paths other than the build's own.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn sgemm_sum_on_path(
    path: KernelPath,
    blocking: Option<Blocking>,
    ta: Trans,
    tb: Trans,
    m: usize,
    n: usize,
    terms: &[KTerm],
    alpha: f32,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue,
) {
    // Every check up front: the core below indexes the terms unchecked.
    check_shapes(ta, tb, m, n, 0, &[], 0, &[], 0, c, ldc, &epilogue);
    for t in terms {
        check_shapes(ta, tb, m, n, t.k, t.a, t.lda, t.b, t.ldb, c, ldc, &epilogue);
    }
    let mut live = terms.iter().filter(|t| t.k > 0);
    let first = live.next();
    if live.next().is_none() {
        // Zero or one product: the single-product path, bit for bit.
        let t = first.copied().unwrap_or(KTerm {
            a: &[],
            lda: 0,
            b: &[],
            ldb: 0,
            k: 0,
        });
        return sgemm_on_path(
            path, blocking, false, ta, tb, m, n, t.k, alpha, t.a, t.lda, t.b, t.ldb, beta, c, ldc,
            epilogue,
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    let (bias_row, bias_col) = bias_pointers(&epilogue.bias);
    let op = SumOperands {
        ta,
        tb,
        m,
        n,
        terms,
        alpha,
        beta,
        c: c.as_mut_ptr(),
        ldc,
        bias_row,
        bias_col,
        activation: epilogue.activation,
    };
    let blk = blocking.unwrap_or_else(|| path.blocking());
    // SAFETY: check_shapes verified, for every term, that every index the
    // core reads is inside its slices, and that C and the bias hold m x n;
    // `c` is borrowed mutably for the whole call.
    unsafe {
        match path {
            KernelPath::Avx512 => gemm_sum_serial::<Avx512Fma12x32>(&op, blk),
            KernelPath::Avx2 => gemm_sum_serial::<Avx2Fma6x16>(&op, blk),
            KernelPath::Portable => gemm_sum_serial::<Portable4x8>(&op, blk),
        }
    }
}

/// The checked operands of a sum.
struct SumOperands<'a> {
    ta: Trans,
    tb: Trans,
    m: usize,
    n: usize,
    terms: &'a [KTerm<'a>],
    alpha: f32,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    bias_row: *const f32,
    bias_col: *const f32,
    activation: Activation,
}

impl SumOperands<'_> {
    /// For each non-empty term overlapping the concatenated-K range
    /// `p0..p0 + kc`: the term, the first of its own k indices in the range,
    /// how many, and their offset from p0.
    fn overlaps(
        &self,
        p0: usize,
        kc: usize,
    ) -> impl Iterator<Item = (&KTerm<'_>, usize, usize, usize)> + '_ {
        let mut start = 0;
        self.terms.iter().filter_map(move |t| {
            let (s, e) = (start, start + t.k);
            start = e;
            let (lo, hi) = (s.max(p0), e.min(p0 + kc));
            (lo < hi).then(|| (t, lo - s, hi - lo, lo - p0))
        })
    }
}

/// The blocked single-threaded sum: the packed loops of `gemm_serial`, with
/// K the terms' concatenated K and every block packed from the terms it
/// spans.
///
/// # Safety
/// `op` describes checked operands (every term passed `check_shapes`), and
/// nothing else writes C during the call.
unsafe fn gemm_sum_serial<P: Path>(op: &SumOperands, blk: Blocking) {
    let (m, n) = (op.m, op.n);
    let k: usize = op.terms.iter().map(|t| t.k).sum();
    let (mr, nr) = (P::MR, P::NR);
    // The same block choices as gemm_serial's packed path for a single
    // product of this total k.
    let BlockSizes {
        kc_count,
        kc_size,
        mc_size,
        nc_size,
    } = BlockSizes::of::<P>(m, n, k, blk);
    let b_floats = nc_size.div_ceil(nr) * nr * kc_size;
    let a_floats = mc_size.div_ceil(mr) * mr * kc_size;

    let whole = TileEpilogue {
        alpha: op.alpha,
        beta: op.beta,
        bias_row: op.bias_row,
        bias_col: op.bias_col,
        activation: op.activation,
    };
    with_pack_buffers(a_floats, b_floats, |pa, pb| {
        for jc in (0..n).step_by(nc_size) {
            let nc = nc_size.min(n - jc);
            for kb in 0..kc_count {
                let p0 = kb * kc_size;
                let kc = kc_size.min(k - p0);
                let last = kb + 1 == kc_count;
                let ep = TileEpilogue::k_slice(&whole, kb == 0, last);
                // The terms fill consecutive rows of the kc-row B panels.
                for (t, q0, len, off) in op.overlaps(p0, kc) {
                    // SAFETY: rows q0..q0 + len of the term's op(B), columns
                    // jc..jc + nc, lie inside it (checked); written at rows
                    // off..off + len <= kc of panels of nr * kc floats, which
                    // pb holds (b_floats).
                    unsafe {
                        pack::pack_b_strided::<false>(
                            op.tb,
                            t.b.as_ptr(),
                            t.ldb,
                            q0,
                            len,
                            jc,
                            nc,
                            nr,
                            kc,
                            pb.add(off * nr),
                        )
                    };
                }
                // Short slices sweep C's row strips left to right (see
                // gemm_serial); longer ones keep a B micro-panel in L1.
                let row_order = kc <= ROW_MAJOR_TILES_MAX_K;
                for ic in (0..m).step_by(mc_size) {
                    let mc = mc_size.min(m - ic);
                    for (t, q0, len, off) in op.overlaps(p0, kc) {
                        // SAFETY: as for B, for rows ic..ic + mc of op(A) and
                        // the A block of a_floats.
                        unsafe {
                            pack::pack_a_strided::<false>(
                                op.ta,
                                t.a.as_ptr(),
                                t.lda,
                                ic,
                                mc,
                                q0,
                                len,
                                mr,
                                kc,
                                pa.add(off * mr),
                            )
                        };
                    }
                    let run_tile = |ir: usize, jr: usize| {
                        let cols = nr.min(nc - jr);
                        let rows = mr.min(mc - ir);
                        let (i, j) = (ic + ir, jc + jr);
                        let tile_ep = ep.offset(i, j);
                        // SAFETY: the tile (rows x cols at (i, j)) lies in C;
                        // the A panel holds kc steps of MR floats and the B
                        // panel kc rows of NR, all packed above (zero-padded);
                        // bias offsets match.
                        unsafe {
                            P::tile(
                                rows,
                                kc,
                                pa.wrapping_add(ir / mr * mr * kc) as *const f32,
                                None,
                                pb.wrapping_add(jr / nr * nr * kc) as *const f32,
                                nr,
                                op.c.wrapping_add(i * op.ldc + j),
                                op.ldc,
                                cols,
                                &tile_ep,
                                cols == nr,
                                !row_order,
                            );
                        }
                    };
                    sweep_tiles(mc, nc, mr, nr, row_order, run_tile);
                }
            }
        }
    });
}
