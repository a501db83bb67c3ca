//! Packing of A and B blocks into contiguous, zero-padded micro-panels.
//!
//! Packed A: for each group of MR rows, `kc` steps of MR floats (the column of
//! the tile the micro-kernel broadcasts from). Packed B: for each group of NR
//! columns, `kc` rows of NR floats. Padding rows / columns are zero so a
//! micro-kernel may read a full panel.

use super::Trans;
use wide::f32x8;

/// Packs rows `i0..i0 + mc`, shared indices `p0..p0 + kc` of op(A).
///
/// # Safety
/// op(A) must be readable at every packed index through `a`/`lda`; `dst` must
/// hold `ceil(mc / mr) * mr * kc` floats.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_a(
    ta: Trans,
    a: *const f32,
    lda: usize,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
    mr: usize,
    dst: *mut f32,
) {
    let mut out = dst;
    for ip in (0..mc).step_by(mr) {
        let rows = mr.min(mc - ip);
        // SAFETY: indices stay inside op(A)'s block and dst's panel.
        unsafe {
            match ta {
                Trans::N => {
                    // A(i, p) = a[i * lda + p]: read each row contiguously.
                    for r in 0..rows {
                        let src = a.add((i0 + ip + r) * lda + p0);
                        for p in 0..kc {
                            *out.add(p * mr + r) = *src.add(p);
                        }
                    }
                    for r in rows..mr {
                        for p in 0..kc {
                            *out.add(p * mr + r) = 0.0;
                        }
                    }
                }
                Trans::T => {
                    // A(i, p) = a[p * lda + i]: a step is `rows` contiguous floats.
                    for p in 0..kc {
                        let src = a.add((p0 + p) * lda + i0 + ip);
                        let o = out.add(p * mr);
                        core::ptr::copy_nonoverlapping(src, o, rows);
                        for r in rows..mr {
                            *o.add(r) = 0.0;
                        }
                    }
                }
            }
            out = out.add(mr * kc);
        }
    }
}

/// Packs shared indices `p0..p0 + kc`, columns `j0..j0 + nc` of op(B).
///
/// # Safety
/// op(B) must be readable at every packed index through `b`/`ldb`; `dst` must
/// hold `ceil(nc / nr) * nr * kc` floats; `nr` is a multiple of 8.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_b(
    tb: Trans,
    b: *const f32,
    ldb: usize,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    nr: usize,
    dst: *mut f32,
) {
    let mut out = dst;
    for jp in (0..nc).step_by(nr) {
        let cols = nr.min(nc - jp);
        // SAFETY: indices stay inside op(B)'s block and dst's panel.
        unsafe {
            match tb {
                Trans::N => {
                    // B(p, j) = b[p * ldb + j]: a packed row is a contiguous copy.
                    for p in 0..kc {
                        let src = b.add((p0 + p) * ldb + j0 + jp);
                        let o = out.add(p * nr);
                        core::ptr::copy_nonoverlapping(src, o, cols);
                        core::ptr::write_bytes(o.add(cols), 0, nr - cols);
                    }
                }
                Trans::T => pack_b_transposed(b, ldb, p0, kc, j0 + jp, cols, nr, out),
            }
            out = out.add(nr * kc);
        }
    }
}

/// One NR-column panel of B^T: B(p, j) = b[j * ldb + p]. Full 8 x 8 blocks go
/// through an in-register transpose; the ragged rim is copied one by one.
///
/// # Safety
/// As [`pack_b`] for one panel of `cols <= nr` columns.
#[allow(clippy::too_many_arguments)]
unsafe fn pack_b_transposed(
    b: *const f32,
    ldb: usize,
    p0: usize,
    kc: usize,
    j0: usize,
    cols: usize,
    nr: usize,
    out: *mut f32,
) {
    let full_j = cols / 8 * 8;
    let full_p = kc / 8 * 8;
    // SAFETY: every read is b[(j0 + j) * ldb + p0 + p] with j < cols, p < kc;
    // every write is out[p * nr + j] with j < nr, p < kc.
    unsafe {
        for j in (0..full_j).step_by(8) {
            for p in (0..full_p).step_by(8) {
                let rows: [f32x8; 8] = core::array::from_fn(|r| {
                    core::ptr::read_unaligned(b.add((j0 + j + r) * ldb + p0 + p) as *const f32x8)
                });
                let t = f32x8::transpose(rows);
                for (q, v) in t.iter().enumerate() {
                    core::ptr::write_unaligned(out.add((p + q) * nr + j) as *mut f32x8, *v);
                }
            }
            for p in full_p..kc {
                for r in 0..8 {
                    *out.add(p * nr + j + r) = *b.add((j0 + j + r) * ldb + p0 + p);
                }
            }
        }
        for p in 0..kc {
            for j in full_j..cols {
                *out.add(p * nr + j) = *b.add((j0 + j) * ldb + p0 + p);
            }
            for j in cols..nr {
                *out.add(p * nr + j) = 0.0;
            }
        }
    }
}
