//! Weight gradients of layers whose input is mostly exact zeros (image
//! pixels: 83% of MNIST's, 17% non-zero after the DAE's masking noise).
//!
//! The gradient of a weight `[n_out, n_in]` over a batch is
//! `dW = sum_t A_t^T B_t`, with `A_t` the deltas (`k x n_out`) and `B_t` the
//! inputs (`k x n_in`). A dense GEMM multiplies every zero of `B`; here `B`
//! is first listed column by column ([`Csc`]: for each input column, the
//! rows where it is non-zero and their values), and each column `j` of `dW`
//! (all output units, on the SIMD lanes) is accumulated from just those rows
//! of `A`:
//!
//! ```text
//! dW[:, j] = sum over (r, v) listed for column j of  v * A[r, :]
//! ```
//!
//! so the work follows the non-zeros (about a fifth of the dense FMAs on
//! MNIST) instead of the matrix. The kernel takes `A` in 64-unit stripes
//! (four vectors on AVX-512), packed `k x 64` so a stripe's rows of every
//! term sit in L1 while all input columns run over them; a column's sums
//! stay in registers (two accumulator sets, for the even and the odd list
//! entries, so the FMA chains are half as long) and 16 finished columns are
//! transposed in registers into `dW`'s rows (`conv::transpose::unpack_add`).
//!
//! Listing `B` costs two passes over it, a vectorised count and the entries
//! ([`Csc::fill`]); the trainer lists each chunk once, in the chunk's own
//! thread, and every weight block reuses the list.

use std::cell::RefCell;

use crate::conv::transpose::unpack_add;
use crate::lanes::{F32s, I32s, LANES};

/// Vectors of output units per stripe of `A` (64 units on AVX-512).
const STRIPE_VECS: usize = 4;
/// Output units per stripe.
const STRIPE: usize = STRIPE_VECS * LANES;
/// Input columns finished between two transposed write-backs: one register
/// transpose block on AVX-512 (16 x 16).
const COLUMN_GROUP: usize = 16;

/// With [`CLines::Elsewhere`], how many column groups ahead of the write-back
/// the stripe's rows of C are asked for, for writing. With C just read by
/// another thread (`sparse_grad_timing`'s block, one run each of 31-round
/// medians): 1 group 443 us, 2 groups 412, 3, 4 and 6 groups 433-447; none
/// 566.
const C_PREFETCH_GROUPS: usize = 2;

/// Where the caller expects C's lines to be when [`sgemm_tn_sparse_sum`]
/// starts, which decides whether the kernel asks for them ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CLines {
    /// In this core's caches, owned: the caller has just written C (the
    /// trainer's dense term of the same block). Prefetching them again only
    /// costs instructions: a DAE layer's update phase measured 0.431 ->
    /// 0.449 s per epoch with it.
    Here,
    /// Possibly read last by another core (the trainer's weights, which
    /// every thread's forward pass reads): each write-back would wait for
    /// that core to drop its copy, so the stripe's rows of C are asked for,
    /// for writing, `C_PREFETCH_GROUPS` column groups ahead. A block
    /// whose C another thread had just read (`sparse_grad_timing`): 400 ->
    /// 324 us; the five-layer classifier's update phase (`vcortex bench
    /// --only mlp`, 2 threads, 5 alternating runs, medians): 0.543 -> 0.517
    /// s per epoch.
    Elsewhere,
}

/// A `rows x cols` matrix stored by columns, keeping only its non-zero
/// entries (exact `+-0` dropped; NaN and infinities kept), each column's in
/// row order. Reuse one across calls: [`Csc::fill`] keeps the allocations.
#[derive(Clone, Debug)]
pub struct Csc {
    rows: usize,
    cols: usize,
    /// Column `j`'s entries are `col_start[j]..col_start[j + 1]`.
    col_start: Vec<u32>,
    row: Vec<u32>,
    value: Vec<f32>,
}

impl Default for Csc {
    fn default() -> Self {
        Self::new()
    }
}

impl Csc {
    /// An empty 0 x 0 matrix.
    pub const fn new() -> Self {
        Csc {
            rows: 0,
            cols: 0,
            col_start: Vec::new(),
            row: Vec::new(),
            value: Vec::new(),
        }
    }

    /// Lists the non-zeros of the row-major `rows x cols` matrix `b` (leading
    /// dimension `ld`), replacing the previous contents.
    ///
    /// # Panics
    /// If `ld < cols` (with rows > 0) or `b` is shorter than the shape needs,
    /// or the matrix has more than `u32::MAX` rows or entries.
    pub fn fill(&mut self, b: &[f32], rows: usize, cols: usize, ld: usize) {
        self.fill_up_to(b, rows, cols, ld, usize::MAX);
    }

    /// [`Csc::fill`] if `b` has at most `max_nnz` non-zeros; otherwise lists
    /// nothing (the matrix becomes 0 x 0) and returns false. Counting is a
    /// vectorised pass, so a matrix too dense to be worth listing costs a
    /// fraction of listing it.
    ///
    /// # Panics
    /// As [`Csc::fill`].
    pub fn fill_up_to(
        &mut self,
        b: &[f32],
        rows: usize,
        cols: usize,
        ld: usize,
        max_nnz: usize,
    ) -> bool {
        assert!(
            rows == 0 || cols <= ld,
            "Csc::fill: ld {ld} < {cols} columns"
        );
        assert!(
            rows == 0 || cols == 0 || b.len() >= (rows - 1) * ld + cols,
            "Csc::fill: matrix too short"
        );
        assert!(rows <= u32::MAX as usize, "Csc::fill: too many rows");
        // Counts per column, then running starts; while the entries go in,
        // col_start[j] walks column j's slots (ending on column j + 1's
        // start), and shifting by one restores the starts.
        self.col_start.clear();
        self.col_start.resize(cols + 1, 0);
        count_nonzeros(b, rows, cols, ld, &mut self.col_start[1..]);
        for j in 0..cols {
            let next = self.col_start[j] as u64 + self.col_start[j + 1] as u64;
            assert!(next <= u32::MAX as u64, "Csc::fill: too many entries");
            self.col_start[j + 1] = next as u32;
        }
        let nnz = self.col_start[cols] as usize;
        if nnz > max_nnz {
            // Empty, keeping the allocations (col_start[0] is 0).
            (self.rows, self.cols) = (0, 0);
            self.col_start.truncate(1);
            self.row.clear();
            self.value.clear();
            return false;
        }
        self.rows = rows;
        self.cols = cols;
        self.row.resize(nnz, 0);
        self.value.resize(nnz, 0.0);
        for r in 0..rows {
            for_each_nonzero(&b[r * ld..r * ld + cols], |j, v| {
                let slot = self.col_start[j] as usize;
                self.row[slot] = r as u32;
                self.value[slot] = v;
                self.col_start[j] += 1;
            });
        }
        self.col_start.copy_within(0..cols, 1);
        self.col_start[0] = 0;
        true
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Stored (non-zero) entries.
    pub fn nnz(&self) -> usize {
        self.row.len()
    }

    /// Column `j`'s rows and values, in row order.
    pub fn column(&self, j: usize) -> (&[u32], &[f32]) {
        let span = self.col_start[j] as usize..self.col_start[j + 1] as usize;
        (&self.row[span.clone()], &self.value[span])
    }
}

/// `counts[j] +=` the number of rows whose column `j` is not `+-0`, a
/// vector of columns at a time (the lane masks added as integers: no
/// branch per element).
fn count_nonzeros(b: &[f32], rows: usize, cols: usize, ld: usize, counts: &mut [u32]) {
    let full = cols - cols % LANES;
    // A vector of column counts at a time, over all rows (no allocation:
    // the counts stay in registers while the rows stream past).
    for j0 in (0..full).step_by(LANES) {
        let mut acc = I32s::ZERO;
        for r in 0..rows {
            let chunk = &b[r * ld + j0..r * ld + j0 + LANES];
            // All-ones (-1) lanes where the value equals +-0; NaN is unequal.
            let zero: I32s = bytemuck::cast(crate::lanes::load(chunk).simd_eq(F32s::ZERO));
            acc += zero + I32s::splat(1);
        }
        for (dst, &n) in counts[j0..j0 + LANES].iter_mut().zip(acc.as_array()) {
            *dst += n as u32;
        }
    }
    for r in 0..rows {
        for (j, &v) in b[r * ld..r * ld + cols].iter().enumerate().skip(full) {
            counts[j] += (v != 0.0) as u32;
        }
    }
}

/// Calls `f(j, row[j])` for every `j` with `row[j]` not `+-0`, in order. The
/// zero test runs a vector at a time and only set bits are visited, so the
/// cost follows the non-zeros, without a branch per element.
#[inline(always)]
fn for_each_nonzero(row: &[f32], mut f: impl FnMut(usize, f32)) {
    let mut chunks = row.chunks_exact(LANES);
    for (c, chunk) in chunks.by_ref().enumerate() {
        let v = crate::lanes::load(chunk);
        // Ordered equality: NaN compares unequal to 0, so it is kept.
        let mut nonzero = !v.simd_eq(F32s::ZERO).to_bitmask() & ((1u32 << LANES) - 1);
        while nonzero != 0 {
            let lane = nonzero.trailing_zeros() as usize;
            f(c * LANES + lane, chunk[lane]);
            nonzero &= nonzero - 1;
        }
    }
    let done = row.len() - chunks.remainder().len();
    for (i, &v) in chunks.remainder().iter().enumerate() {
        if v != 0.0 {
            f(done + i, v);
        }
    }
}

/// One term `A^T B` of [`sgemm_tn_sparse_sum`]: `a` is `k x m` row-major with
/// leading dimension `lda` (`k` = `b.rows()`), `b` the listed `k x n` input.
#[derive(Clone, Copy, Debug)]
pub struct SparseTerm<'a> {
    pub a: &'a [f32],
    pub lda: usize,
    pub b: &'a Csc,
}

thread_local! {
    /// This thread's packed stripes of A, grown on demand and reused.
    static PACKED_A: RefCell<Vec<F32s>> = const { RefCell::new(Vec::new()) };
}

/// C <- alpha * sum_t A_t^T B_t + beta * C, single-threaded, with the
/// `B_t` given by their non-zeros ([`Csc`]). `C` is `m x n` row-major
/// (`ldc`); beta == 0 never reads C. The result equals the dense product up
/// to the order of the sums, for finite `A` (a skipped `0 * a` would be NaN
/// for an infinite or NaN `a`): each element sums, term by term, the even
/// and the odd entries of its column list separately, then adds the two.
///
/// `c_lines` only decides whether C is prefetched ([`CLines`]); the result
/// is the same either way.
///
/// # Panics
/// If a term's `A` is too short or narrower than `m` (`lda < m`), a term's
/// `B` has other than `n` columns, or `C` is too short or `ldc < n`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_tn_sparse_sum(
    m: usize,
    n: usize,
    terms: &[SparseTerm],
    alpha: f32,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    c_lines: CLines,
) {
    assert!(m == 0 || n <= ldc, "sgemm_tn_sparse_sum: ldc {ldc} < n {n}");
    assert!(
        m == 0 || n == 0 || c.len() >= (m - 1) * ldc + n,
        "sgemm_tn_sparse_sum: C too short"
    );
    for t in terms {
        let k = t.b.rows();
        assert_eq!(
            t.b.cols(),
            n,
            "sgemm_tn_sparse_sum: B has {} columns, not n",
            t.b.cols()
        );
        assert!(
            k == 0 || m <= t.lda,
            "sgemm_tn_sparse_sum: lda {} < m {m}",
            t.lda
        );
        assert!(
            k == 0 || m == 0 || t.a.len() >= (k - 1) * t.lda + m,
            "sgemm_tn_sparse_sum: A too short"
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    // C <- beta C first (zero-filled, never read, for beta == 0); the
    // stripes then add alpha times their sums.
    for row in 0..m {
        let r = &mut c[row * ldc..row * ldc + n];
        if beta == 0.0 {
            r.fill(0.0);
        } else if beta != 1.0 {
            crate::optim::scale(r, beta);
        }
    }
    let k_total: usize = terms.iter().map(|t| t.b.rows()).sum();
    if k_total == 0 {
        return;
    }
    PACKED_A.with(|cell| {
        let mut packed = cell.borrow_mut();
        let stripes = m.div_ceil(STRIPE);
        let vecs = stripes * k_total * STRIPE_VECS;
        if packed.len() < vecs {
            packed.resize(vecs, F32s::ZERO);
        }
        pack_stripes(m, terms, k_total, &mut packed[..vecs]);
        for s in 0..stripes {
            let stripe = &packed[s * k_total * STRIPE_VECS..(s + 1) * k_total * STRIPE_VECS];
            let u0 = s * STRIPE;
            let units = (m - u0).min(STRIPE);
            let c = &mut c[u0 * ldc..];
            // A ragged last stripe runs only the vectors it has units in.
            match units.div_ceil(LANES) {
                1 => accumulate_stripe::<1>(stripe, terms, n, alpha, c, ldc, units, c_lines),
                2 => accumulate_stripe::<2>(stripe, terms, n, alpha, c, ldc, units, c_lines),
                3 => accumulate_stripe::<3>(stripe, terms, n, alpha, c, ldc, units, c_lines),
                _ => accumulate_stripe::<STRIPE_VECS>(
                    stripe, terms, n, alpha, c, ldc, units, c_lines,
                ),
            }
        }
    });
}

/// Packs the terms' rows, in term order, as `k_total` rows of `STRIPE`
/// units per stripe (`dst[(s * k_total + kg) * STRIPE_VECS + q]`), zero past
/// unit `m`.
fn pack_stripes(m: usize, terms: &[SparseTerm], k_total: usize, dst: &mut [F32s]) {
    let flat: &mut [f32] = bytemuck::cast_slice_mut(dst);
    for s in 0..m.div_ceil(STRIPE) {
        let (u0, units) = (s * STRIPE, (m - s * STRIPE).min(STRIPE));
        let mut kg = 0;
        for t in terms {
            for r in 0..t.b.rows() {
                let out = &mut flat[(s * k_total + kg) * STRIPE..][..STRIPE];
                out[..units].copy_from_slice(&t.a[r * t.lda + u0..r * t.lda + u0 + units]);
                out[units..].fill(0.0);
                kg += 1;
            }
        }
    }
}

/// Adds alpha * (this stripe's rows of sum_t A_t^T B_t) to the `units`
/// rows of `c` (row 0 = the stripe's first unit), using the first `NV`
/// vectors of each packed row (`units <= NV * LANES`).
#[allow(clippy::too_many_arguments)]
fn accumulate_stripe<const NV: usize>(
    stripe: &[F32s],
    terms: &[SparseTerm],
    n: usize,
    alpha: f32,
    c: &mut [f32],
    ldc: usize,
    units: usize,
    c_lines: CLines,
) {
    let alpha = F32s::splat(alpha);
    // Finished columns, unit vector q of column p at [q * COLUMN_GROUP + p].
    let mut done = [F32s::ZERO; STRIPE_VECS * COLUMN_GROUP];
    debug_assert!(NV <= STRIPE_VECS && units <= NV * LANES);
    for j0 in (0..n).step_by(COLUMN_GROUP) {
        let width = (n - j0).min(COLUMN_GROUP);
        let ahead = j0 + C_PREFETCH_GROUPS * COLUMN_GROUP;
        if c_lines == CLines::Elsewhere && ahead < n {
            for r in 0..units {
                crate::simd::prefetch_line_for_write(c.as_ptr().wrapping_add(r * ldc + ahead));
            }
        }
        for p in 0..width {
            let sums = column_sums::<NV>(stripe, terms, j0 + p);
            for q in 0..NV {
                done[q * COLUMN_GROUP + p] = sums[q] * alpha;
            }
        }
        for q in 0..NV {
            let rows = units.saturating_sub(q * LANES).min(LANES);
            if rows == 0 {
                break;
            }
            let first = (q * LANES) * ldc + j0;
            // The last of the `rows` rows ends at column j0 + width.
            let needed = first + (rows - 1) * ldc + width;
            assert!(needed <= c.len(), "accumulate_stripe: C too short");
            // SAFETY: rows q*LANES .. q*LANES + rows of the stripe, columns
            // j0 .. j0 + width, are inside `c` (checked just above); rows <=
            // LANES as unpack_add requires.
            unsafe {
                unpack_add(
                    &done[q * COLUMN_GROUP..q * COLUMN_GROUP + width],
                    c.as_mut_ptr().add(first),
                    ldc,
                    rows,
                )
            };
        }
    }
}

/// Column `j`'s sums over every term's listed rows, for the stripe's first
/// `NV` vectors of units.
#[inline(always)]
fn column_sums<const NV: usize>(stripe: &[F32s], terms: &[SparseTerm], j: usize) -> [F32s; NV] {
    let mut even = [F32s::ZERO; NV];
    let mut odd = [F32s::ZERO; NV];
    let mut k0 = 0;
    for t in terms {
        let (rows, values) = t.b.column(j);
        let here = &stripe[k0 * STRIPE_VECS..(k0 + t.b.rows()) * STRIPE_VECS];
        let base = here.as_ptr();
        let pairs = rows.len() / 2;
        for e in 0..pairs {
            // SAFETY: a Csc lists rows < its `rows()` (built by `fill`, its
            // fields private), and `here` holds `rows()` packed rows of
            // STRIPE_VECS vectors; `2 e + 1 < rows.len() = values.len()`.
            unsafe {
                let (ra, rb) = (*rows.get_unchecked(2 * e), *rows.get_unchecked(2 * e + 1));
                let va = F32s::splat(*values.get_unchecked(2 * e));
                let vb = F32s::splat(*values.get_unchecked(2 * e + 1));
                let a = base.add(ra as usize * STRIPE_VECS);
                let b = base.add(rb as usize * STRIPE_VECS);
                for q in 0..NV {
                    even[q] = (*a.add(q)).mul_add(va, even[q]);
                    odd[q] = (*b.add(q)).mul_add(vb, odd[q]);
                }
            }
        }
        if rows.len() % 2 == 1 {
            let r = rows[rows.len() - 1] as usize;
            let a = &here[r * STRIPE_VECS..][..NV];
            let va = F32s::splat(values[rows.len() - 1]);
            for q in 0..NV {
                even[q] = a[q].mul_add(va, even[q]);
            }
        }
        k0 += t.b.rows();
    }
    // A plain loop, not array::from_fn: LLVM has left that one out of line
    // in a hot kernel before (a call and a stack round trip per column).
    for q in 0..NV {
        even[q] += odd[q];
    }
    even
}
