//! The sparse-input weight gradient (`sgemm_tn_sparse_sum`) and its column
//! lists (`Csc`) against plain loops: ragged stripes (m around 64) and column
//! groups (n around 16), several terms with k from 0, random sparsity with
//! signed zeros, alpha / beta, NaN-poisoned C at beta == 0, wide leading
//! dimensions, and exact equality on small integers.

mod common;

use common::{Lcg, PAD_SENTINEL};
use proptest::prelude::*;
use vcortex_kernels::sparse_grad::{sgemm_tn_sparse_sum, CLines, Csc, SparseTerm};

/// One term: A (k x lda), B (k x ldb) with a share `zeros` of exact zeros,
/// half of them negative zeros.
struct Term {
    k: usize,
    a: Vec<f32>,
    lda: usize,
    b: Vec<f32>,
    ldb: usize,
}

fn term(
    rng: &mut Lcg,
    k: usize,
    m: usize,
    n: usize,
    pad: usize,
    zeros: f32,
    integers: bool,
) -> Term {
    let (lda, ldb) = (m + pad, n + 2 * pad);
    let a = (0..k * lda).map(|_| rng.value(integers)).collect();
    let b = (0..k * ldb)
        .map(|_| {
            let u = rng.unit();
            if u < zeros / 2.0 {
                0.0
            } else if u < zeros {
                -0.0
            } else {
                rng.value(integers)
            }
        })
        .collect();
    Term { k, a, lda, b, ldb }
}

/// alpha * sum_t A_t^T B_t + beta * C0 in f64, and the same sum of absolute
/// values (for the error bound).
fn reference(
    m: usize,
    n: usize,
    terms: &[Term],
    alpha: f32,
    beta: f32,
    c0: &[f32],
    ldc: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut want = vec![0.0f64; m * n];
    let mut size = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut s_abs) = (0.0f64, 0.0f64);
            for t in terms {
                for r in 0..t.k {
                    let p = t.a[r * t.lda + i] as f64 * t.b[r * t.ldb + j] as f64;
                    s += p;
                    s_abs += p.abs();
                }
            }
            let old = if beta == 0.0 {
                0.0
            } else {
                beta as f64 * c0[i * ldc + j] as f64
            };
            want[i * n + j] = alpha as f64 * s + old;
            size[i * n + j] = (alpha as f64 * s_abs).abs() + old.abs();
        }
    }
    (want, size)
}

#[allow(clippy::too_many_arguments)]
fn check(
    m: usize,
    n: usize,
    ks: &[usize],
    alpha: f32,
    beta: f32,
    pad: usize,
    zeros: f32,
    integers: bool,
    seed: u64,
) {
    // Small integers stay exact only with integer alpha and beta.
    let (alpha, beta) = if integers {
        (alpha.round(), beta.round())
    } else {
        (alpha, beta)
    };
    let mut rng = Lcg(seed);
    let terms: Vec<Term> = ks
        .iter()
        .map(|&k| term(&mut rng, k, m, n, pad, zeros, integers))
        .collect();
    let lists: Vec<Csc> = terms
        .iter()
        .map(|t| {
            let mut c = Csc::new();
            c.fill(&t.b, t.k, n, t.ldb);
            c
        })
        .collect();
    let ldc = n + pad;
    let mut c: Vec<f32> = (0..m * ldc)
        .map(|i| {
            if i % ldc >= n {
                PAD_SENTINEL
            } else {
                rng.value(integers)
            }
        })
        .collect();
    let c0 = c.clone();
    if beta == 0.0 {
        for (i, x) in c.iter_mut().enumerate() {
            if i % ldc < n {
                *x = f32::NAN;
            }
        }
    }
    let sparse: Vec<SparseTerm> = terms
        .iter()
        .zip(&lists)
        .map(|(t, l)| SparseTerm {
            a: &t.a,
            lda: t.lda,
            b: l,
        })
        .collect();
    // Prefetching C for writing changes no value: both ways, the same bits.
    let mut c_prefetched = c.clone();
    sgemm_tn_sparse_sum(m, n, &sparse, alpha, beta, &mut c, ldc, CLines::Here);
    sgemm_tn_sparse_sum(
        m,
        n,
        &sparse,
        alpha,
        beta,
        &mut c_prefetched,
        ldc,
        CLines::Elsewhere,
    );
    assert!(
        c.iter()
            .zip(&c_prefetched)
            .all(|(x, y)| x.to_bits() == y.to_bits()),
        "CLines::Elsewhere changed the result, m {m} n {n} ks {ks:?}"
    );
    let (want, size) = reference(m, n, &terms, alpha, beta, &c0, ldc);
    let k_total: usize = ks.iter().sum();
    for i in 0..m {
        for j in 0..ldc {
            let got = c[i * ldc + j];
            if j >= n {
                assert_eq!(
                    got.to_bits(),
                    PAD_SENTINEL.to_bits(),
                    "padding ({i}, {j}) written"
                );
                continue;
            }
            let w = want[i * n + j];
            if integers {
                // Small integers: every product and partial sum is exact.
                assert_eq!(got as f64, w, "({i}, {j}) m {m} n {n} ks {ks:?}");
            } else {
                // Each element is a sum of at most k_total + 1 rounded
                // products plus the scaled old value; the classic bound for
                // recursive summation in f32 is (k + 2) eps times the sum of
                // absolute values. Doubled for the alpha / beta roundings.
                let tol =
                    2.0 * (k_total as f64 + 2.0) * f32::EPSILON as f64 * size[i * n + j] + 1e-30;
                assert!(
                    (got as f64 - w).abs() <= tol,
                    "({i}, {j}) {got} vs {w} (tol {tol}) m {m} n {n} ks {ks:?}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn sparse_sum_matches_reference(
        m in 1usize..=140,
        n in 1usize..=40,
        ks in proptest::collection::vec(0usize..=70, 0..=3),
        alpha in prop_oneof![Just(1.0f32), Just(-0.1f32), -2.0f32..2.0],
        beta in prop_oneof![Just(0.0f32), Just(1.0f32), -1.5f32..1.5],
        pad in 0usize..=3,
        zeros in prop_oneof![Just(0.0f32), Just(1.0f32), 0.0f32..1.0],
        integers in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check(m, n, &ks, alpha, beta, pad, zeros, integers, seed);
    }
}

/// The shapes the trainer runs: a 456-unit block of 784-pixel columns, two
/// chunks of 64 rows at MNIST-like sparsity.
#[test]
fn trainer_shape() {
    check(456, 784, &[64, 64], -0.1, 1.0, 0, 0.83, false, 7);
    check(444, 784, &[64, 64], 1.0, 0.0, 0, 0.83, true, 8);
}

#[test]
fn csc_lists_nonzeros_in_row_order() {
    let b = [
        0.0,
        1.0,
        -0.0,
        2.0,
        f32::NAN, //
        3.0,
        0.0,
        0.0,
        -0.0,
        4.0, //
        0.0,
        5.0,
        6.0,
        0.0,
        f32::INFINITY,
    ];
    let mut c = Csc::new();
    c.fill(&b, 3, 5, 5);
    assert_eq!((c.rows(), c.cols(), c.nnz()), (3, 5, 8));
    assert_eq!(c.column(0), (&[1u32][..], &[3.0f32][..]));
    assert_eq!(c.column(1), (&[0u32, 2][..], &[1.0f32, 5.0][..]));
    assert_eq!(c.column(2), (&[2u32][..], &[6.0f32][..]));
    assert_eq!(c.column(3), (&[0u32][..], &[2.0f32][..]));
    let (rows, values) = c.column(4);
    assert_eq!(rows, &[0u32, 1, 2][..]);
    assert!(values[0].is_nan() && values[1] == 4.0 && values[2] == f32::INFINITY);
    // Refilling, from a view whose leading dimension (5) exceeds its 3
    // columns, replaces the lists.
    c.fill(&b[5..], 2, 3, 5);
    assert_eq!((c.rows(), c.cols(), c.nnz()), (2, 3, 3));
    assert_eq!(c.column(0), (&[0u32][..], &[3.0f32][..]));
    assert_eq!(c.column(1), (&[1u32][..], &[5.0f32][..]));
}

/// `fill_up_to` lists a matrix with at most `max_nnz` non-zeros exactly as
/// `fill` does, and leaves a denser one unlisted (0 x 0).
#[test]
fn fill_up_to_stops_at_the_limit() {
    let b = [0.0, 1.0, 2.0, 0.0, 3.0, 0.0];
    let (mut full, mut capped) = (Csc::new(), Csc::new());
    full.fill(&b, 2, 3, 3);
    assert!(capped.fill_up_to(&b, 2, 3, 3, 3));
    for j in 0..3 {
        assert_eq!(full.column(j), capped.column(j));
    }
    assert!(!capped.fill_up_to(&b, 2, 3, 3, 2));
    assert_eq!((capped.rows(), capped.cols(), capped.nnz()), (0, 0, 0));
    // Listing again after a refusal works.
    assert!(capped.fill_up_to(&b[3..], 1, 3, 3, 2));
    assert_eq!(capped.column(1), (&[0u32][..], &[3.0f32][..]));
}

/// A listed NaN input reaches every unit of its column; the other columns
/// stay finite.
#[test]
fn nan_input_is_kept() {
    let (m, n, k) = (70, 3, 2);
    let a = vec![0.5f32; k * m];
    let b = [0.0, f32::NAN, 1.0, 0.0, 0.0, 2.0];
    let mut list = Csc::new();
    list.fill(&b, k, n, n);
    let mut c = vec![0.0f32; m * n];
    sgemm_tn_sparse_sum(
        m,
        n,
        &[SparseTerm {
            a: &a,
            lda: m,
            b: &list,
        }],
        1.0,
        0.0,
        &mut c,
        n,
        CLines::Here,
    );
    for i in 0..m {
        assert_eq!(c[i * n], 0.0);
        assert!(c[i * n + 1].is_nan());
        assert_eq!(c[i * n + 2], 1.5);
    }
}

#[test]
#[should_panic(expected = "columns, not n")]
fn wrong_column_count_panics() {
    let mut list = Csc::new();
    list.fill(&[1.0, 2.0], 1, 2, 2);
    let mut c = vec![0.0f32; 3];
    sgemm_tn_sparse_sum(
        1,
        3,
        &[SparseTerm {
            a: &[1.0],
            lda: 1,
            b: &list,
        }],
        1.0,
        0.0,
        &mut c,
        3,
        CLines::Here,
    );
}
