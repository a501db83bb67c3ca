//! Property tests of the packed GEMM against the naive reference loop, for
//! every compiled micro-kernel path, all four transpose forms, ragged tiles,
//! wide leading dimensions, random alpha / beta, every epilogue, NaN-poisoned
//! C when beta == 0, and exact equality on small-integer inputs.

mod common;

use common::{Lcg, PAD_SENTINEL};
use proptest::prelude::*;
use vcortex_kernels::gemm::{
    sgemm, sgemm_on_path, sgemm_parallel, sgemm_with_epilogue, shared_b_products, Activation, Bias,
    Blocking, Epilogue, KernelPath, Trans,
};
use vcortex_kernels::reference;

/// One generated product.
#[derive(Clone, Debug)]
struct Case {
    ta: Trans,
    tb: Trans,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    beta: f32,
    lda_pad: usize,
    ldb_pad: usize,
    ldc_pad: usize,
    bias: u8,
    activation: Activation,
    integers: bool,
    seed: u64,
}

fn filled(len: usize, rng: &mut Lcg, integers: bool) -> Vec<f32> {
    (0..len).map(|_| rng.value(integers)).collect()
}

fn trans() -> impl Strategy<Value = Trans> {
    prop_oneof![Just(Trans::N), Just(Trans::T)]
}

fn activation() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Identity),
        Just(Activation::Relu),
        Just(Activation::Sigmoid)
    ]
}

/// Shapes from 1 to three tiles plus one in m and n, k from 0 to three KC.
fn case(mr: usize, nr: usize, kc: usize, integers: bool) -> impl Strategy<Value = Case> {
    let scalars = if integers {
        // Powers of two and small integers keep every product exact.
        prop_oneof![Just(0.0f32), Just(1.0), Just(-1.0), Just(2.0), Just(0.5)].boxed()
    } else {
        (-2.0f32..2.0).boxed()
    };
    let beta = prop_oneof![Just(0.0f32), scalars.clone()];
    (
        (trans(), trans(), 1..=3 * mr + 1, 1..=3 * nr + 1, 0..=3 * kc),
        (scalars, beta, 0..3usize, 0..3usize, 0..3usize),
        (0..3u8, activation(), any::<u64>()),
    )
        .prop_map(
            move |(
                (ta, tb, m, n, k),
                (alpha, beta, lda_pad, ldb_pad, ldc_pad),
                (bias, activation, seed),
            )| Case {
                ta,
                tb,
                m,
                n,
                k,
                alpha,
                beta,
                lda_pad,
                ldb_pad,
                ldc_pad,
                bias,
                // Sigmoid is not exact, so integer cases use the other two.
                activation: if integers && activation == Activation::Sigmoid {
                    Activation::Relu
                } else {
                    activation
                },
                integers,
                seed,
            },
        )
}

/// How a case is run.
#[derive(Clone, Copy)]
enum Entry {
    Path(KernelPath, Option<Blocking>, bool),
    Public,
    PublicParallel,
}

fn check(case: &Case, entry: Entry) -> Result<(), TestCaseError> {
    let Case {
        ta,
        tb,
        m,
        n,
        k,
        alpha,
        beta,
        ..
    } = *case;
    let mut rng = Lcg(case.seed);
    let (ar, ac) = if ta == Trans::N { (m, k) } else { (k, m) };
    let (br, bc) = if tb == Trans::N { (k, n) } else { (n, k) };
    let (lda, ldb, ldc) = (ac + case.lda_pad, bc + case.ldb_pad, n + case.ldc_pad);
    let a = filled(ar * lda, &mut rng, case.integers);
    let b = filled(br * ldb, &mut rng, case.integers);
    let mut c = filled(m * ldc, &mut rng, case.integers);
    for (idx, x) in c.iter_mut().enumerate() {
        if idx % ldc >= n {
            *x = PAD_SENTINEL;
        } else if beta == 0.0 {
            // beta == 0 must never read C.
            *x = f32::NAN;
        }
    }
    let bias_values = filled(m.max(n), &mut rng, case.integers);
    let bias = match case.bias {
        0 => Bias::None,
        1 => Bias::Row(&bias_values[..m]),
        _ => Bias::Col(&bias_values[..n]),
    };
    let epilogue = Epilogue {
        bias,
        activation: case.activation,
    };

    let mut want = c.clone();
    reference::sgemm(
        ta,
        tb,
        m,
        n,
        k,
        alpha,
        &a,
        lda,
        &b,
        ldb,
        beta,
        &mut want,
        ldc,
        bias,
        case.activation,
    );
    let mut got = c.clone();
    match entry {
        Entry::Path(path, blocking, parallel) => sgemm_on_path(
            path, blocking, parallel, ta, tb, m, n, k, alpha, &a, lda, &b, ldb, beta, &mut got,
            ldc, epilogue,
        ),
        Entry::Public => {
            if case.bias == 0 && case.activation == Activation::Identity {
                sgemm(
                    ta, tb, m, n, k, alpha, &a, lda, &b, ldb, beta, &mut got, ldc,
                )
            } else {
                sgemm_with_epilogue(
                    ta, tb, m, n, k, alpha, &a, lda, &b, ldb, beta, &mut got, ldc, epilogue,
                )
            }
        }
        Entry::PublicParallel => sgemm_parallel(
            ta, tb, m, n, k, alpha, &a, lda, &b, ldb, beta, &mut got, ldc, epilogue,
        ),
    }

    let at = |x: &[f32], ld: usize, t: Trans, r: usize, col: usize| match t {
        Trans::N => x[r * ld + col],
        Trans::T => x[col * ld + r],
    };
    for i in 0..m {
        for j in ldc * i..ldc * (i + 1) {
            let col = j - ldc * i;
            let (g, w) = (got[j], want[j]);
            if col >= n {
                prop_assert_eq!(
                    g.to_bits(),
                    PAD_SENTINEL.to_bits(),
                    "padding overwritten at ({}, {})",
                    i,
                    col
                );
                continue;
            }
            if case.integers {
                // Small integers (|x| <= 4, k <= 3 KC so |sum| < 2^24) and
                // power-of-two scalars: every intermediate is exact in f32, so
                // any summation order gives the reference's value exactly.
                prop_assert_eq!(g, w, "({}, {}) of {:?}", i, col, case);
                continue;
            }
            // Tolerance. A float sum of k products, however blocked, is within
            // gamma_k = k * u (u = 2^-24) of the exact sum *relative to the
            // sum of magnitudes* S = |alpha| sum_p |a_ip b_pj| + |beta c| +
            // |bias|; alpha, beta and the bias add three more roundings. So
            // rtol = (k + 4) * 2u, a factor 2 above the classical bound. It
            // multiplies S rather than |want| because random-sign inputs make
            // the result cancel far below S, where a bound relative to the
            // result would be meaningless. ReLU and sigmoid are 1- and
            // 1/4-Lipschitz, so the bound carries through them; atol = 1e-6
            // covers sigmoid's own rounding (a few ulp of a value <= 1).
            let mut s = 0.0f64;
            for p in 0..k {
                s += (at(&a, lda, ta, i, p) as f64 * at(&b, ldb, tb, p, col) as f64).abs();
            }
            s *= alpha.abs() as f64;
            if beta != 0.0 {
                s += (beta as f64 * c[j] as f64).abs();
            }
            s += match bias {
                Bias::None => 0.0,
                Bias::Row(r) => r[i].abs() as f64,
                Bias::Col(cb) => cb[col].abs() as f64,
            };
            let rtol = (k + 4) as f64 * f32::EPSILON as f64;
            let atol = 1e-6;
            let err = (g as f64 - w as f64).abs();
            prop_assert!(
                err <= atol + rtol * s,
                "({}, {}): got {} want {} err {} > tol {} in {:?}",
                i,
                col,
                g,
                w,
                err,
                atol + rtol * s,
                case
            );
        }
    }
    Ok(())
}

fn tiny_blocking(path: KernelPath) -> impl Strategy<Value = Blocking> {
    let (mr, nr) = path.tile();
    (1..=9usize, 1..=3usize, 1..=3usize).prop_map(move |(kc, mcs, ncs)| Blocking {
        kc,
        mc: mcs * mr,
        nc: ncs * nr,
    })
}

macro_rules! path_tests {
    ($module:ident, $path:expr) => {
        mod $module {
            use super::*;
            const PATH: KernelPath = $path;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(24))]

                /// Default blocking: k up to three KC, so the K loop runs
                /// one to three slices and edge tiles in both dimensions.
                #[test]
                fn floats_default_blocking(c in case(PATH.tile().0, PATH.tile().1, PATH.blocking().kc, false)) {
                    check(&c, Entry::Path(PATH, None, false))?;
                }

                #[test]
                fn integers_exact_default_blocking(c in case(PATH.tile().0, PATH.tile().1, PATH.blocking().kc, true)) {
                    check(&c, Entry::Path(PATH, None, false))?;
                }
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(96))]

                /// Tiny cache blocks so small matrices run several jc, pc and
                /// ic iterations (k again from 0 to three KC).
                #[test]
                fn floats_tiny_blocking(
                    (blk, c) in tiny_blocking(PATH).prop_flat_map(|blk| {
                        (Just(blk), case(PATH.tile().0, PATH.tile().1, blk.kc, false))
                    })
                ) {
                    check(&c, Entry::Path(PATH, Some(blk), false))?;
                }

                #[test]
                fn integers_exact_tiny_blocking(
                    (blk, c) in tiny_blocking(PATH).prop_flat_map(|blk| {
                        (Just(blk), case(PATH.tile().0, PATH.tile().1, blk.kc, true))
                    })
                ) {
                    check(&c, Entry::Path(PATH, Some(blk), false))?;
                }
            }

            /// Products big enough for the parallel entry to split, along N
            /// and along M, each form; on AVX-512, (128, 410, 400) and
            /// (100, 40, 600) go to the M-on-lanes kernel whole (A B with n >=
            /// 400, and any A B^T), so they are cut by its 64-row blocks.
            #[test]
            fn parallel_splits() {
                for (m, n, k) in [(40, 150, 400), (300, 33, 300), (64, 64, 600), (128, 410, 400), (100, 40, 600)] {
                    for (ta, tb) in [(Trans::N, Trans::N), (Trans::T, Trans::N), (Trans::N, Trans::T), (Trans::T, Trans::T)] {
                        let c = Case {
                            ta, tb, m, n, k, alpha: 0.75, beta: if k == 600 { 2.0 } else { 0.0 },
                            lda_pad: 1, ldb_pad: 2, ldc_pad: 3,
                            // Row bias on the M split, column bias on the N splits.
                            bias: if m > n { 1 } else { 2 },
                            activation: Activation::Relu, integers: true, seed: (m * n + k) as u64,
                        };
                        check(&c, Entry::Path(PATH, None, true)).unwrap();
                    }
                }
            }
        }
    };
}

path_tests!(avx512, KernelPath::Avx512);
path_tests!(avx2, KernelPath::Avx2);
path_tests!(portable, KernelPath::Portable);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The AVX-512 path's M-on-lanes kernel (B transposed, m <= 128 with the
    /// default blocking): m from 1 to 139 straddles its 64-row blocks and the
    /// 128-row limit, n up to 19 its 6-column groups.
    #[test]
    fn m_lanes_floats(c in case(46, 6, 40, false)) {
        check(&Case { tb: Trans::T, ..c }, Entry::Path(KernelPath::Avx512, None, false))?;
    }

    #[test]
    fn m_lanes_integers_exact(c in case(46, 6, 40, true)) {
        check(&Case { tb: Trans::T, ..c }, Entry::Path(KernelPath::Avx512, None, false))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The public entries (this build's native path).
    #[test]
    fn public_entries(c in case(12, 32, 192, false), parallel in any::<bool>()) {
        check(&c, if parallel { Entry::PublicParallel } else { Entry::Public })?;
    }
}

/// Default blocking on both sides of the choice between reading a
/// row-major A in place (n <= 256, lda not a multiple of 64) and packing it
/// (n > 256, or lda = 256), on every path, with K spanning one or two
/// slices, ragged row and column tiles, and the fused epilogue.
#[test]
fn direct_and_packed_a() {
    let shapes = [
        (50, 200, 300, 1),
        (50, 257, 300, 1),
        (50, 200, 256, 0),
        (29, 10, 1100, 3),
        (130, 256, 70, 3),
    ];
    for path in KernelPath::ALL {
        for (i, &(m, n, k, lda_pad)) in shapes.iter().enumerate() {
            let c = Case {
                ta: Trans::N,
                // B^T only past the M-on-lanes limit (m > 128).
                tb: if m > 128 { Trans::T } else { Trans::N },
                m,
                n,
                k,
                alpha: 0.5,
                beta: if i == 3 { 0.0 } else { 1.5 },
                lda_pad,
                ldb_pad: 1,
                ldc_pad: 2,
                bias: (i % 3) as u8,
                activation: Activation::Relu,
                integers: true,
                seed: i as u64,
            };
            check(&c, Entry::Path(path, None, false)).unwrap();
        }
    }
}

/// The parallel entry's shared packing of B (tall products: each part has
/// more than one MC block of rows), on every path and form: with tiny
/// blocks (several jc blocks, K slices of 7 and a ragged last one, ragged
/// last panels, the dot-product edge of a row-major A) and with the default
/// blocks (one product the AVX-512 path takes with A read in place and a
/// 4-column dot edge, one with A packed). Each case has its own B, so a part
/// that read the buffer before its block was packed would see another
/// case's values. The only test that makes such products, so none of them
/// finds the shared buffer busy (run by one test, path after path).
#[test]
fn parallel_shared_b() {
    let before = shared_b_products();
    let mut cases = 0;
    for path in KernelPath::ALL {
        let (mr, nr) = path.tile();
        let tiny = Blocking {
            kc: 7,
            mc: 2 * mr,
            nc: 3 * nr,
        };
        let runs = [
            (Some(tiny), 150, 70 + nr / 2, 200),
            (Some(tiny), 241, 8 * nr + 4, 190),
            (None, 800, 36, 150),
            (None, 1000, 300, 40),
        ];
        for (i, &(blk, m, n, k)) in runs.iter().enumerate() {
            for (ta, tb) in [
                (Trans::N, Trans::N),
                (Trans::T, Trans::N),
                (Trans::N, Trans::T),
                (Trans::T, Trans::T),
            ] {
                let c = Case {
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    alpha: 0.5,
                    beta: if i % 2 == 0 { 0.0 } else { 1.5 },
                    lda_pad: 1,
                    ldb_pad: 3,
                    ldc_pad: 2,
                    bias: (i % 3) as u8,
                    activation: Activation::Relu,
                    integers: true,
                    seed: 100 + cases,
                };
                check(&c, Entry::Path(path, blk, true)).unwrap();
                cases += 1;
            }
        }
    }
    if rayon::current_num_threads() >= 2 {
        assert_eq!(
            shared_b_products() - before,
            cases as usize,
            "every case should pack B once for both parts"
        );
    }
}

/// Short K (A^T B weight gradients, k <= 128) with default blocking: M
/// spans several of the taller short-K blocks (MC_SHORT_K = 264), the tiles
/// run in row order, and the last column tile is ragged.
#[test]
fn short_k_tall_blocks() {
    for path in KernelPath::ALL {
        for (i, &(m, n, k)) in [(600, 100, 128), (541, 70, 64), (300, 45, 129)]
            .iter()
            .enumerate()
        {
            let c = Case {
                ta: Trans::T,
                tb: Trans::N,
                m,
                n,
                k,
                alpha: 1.0,
                beta: if i == 1 { 0.5 } else { 0.0 },
                lda_pad: 1,
                ldb_pad: 0,
                ldc_pad: 1,
                bias: i as u8,
                activation: Activation::Identity,
                integers: true,
                seed: 7 + i as u64,
            };
            check(&c, Entry::Path(path, None, false)).unwrap();
        }
    }
}

/// The dot-product edge kernel (row-major op(A), 1 to 12 ragged last
/// columns, A read in place or packed for the full tiles): k tails shorter
/// than a vector, K spanning two slices, ragged row sub-tiles, both forms of
/// B (B^T with m > 128, past the M-on-lanes kernel), every bias and
/// epilogue. Only the AVX-512 path has that kernel; on the other paths the
/// same shapes exercise their ordinary edge tiles.
#[test]
fn dot_edge_columns() {
    let shapes = [
        (37, 100, 181, Trans::N),
        (130, 44, 17, Trans::T),
        (50, 9, 1100, Trans::N),
        (7, 1, 3, Trans::N),
        (140, 76, 64, Trans::T),
        // A packed for the full tiles: n > 256, or lda = 64.
        (37, 268, 70, Trans::N),
        (30, 100, 64, Trans::N),
    ];
    for path in KernelPath::ALL {
        for (i, &(m, n, k, tb)) in shapes.iter().enumerate() {
            for integers in [false, true] {
                let mut c = edge_case(i, (m, n, k), (Trans::N, tb), integers, 40);
                c.lda_pad = if i == 6 { 0 } else { 1 };
                check(&c, Entry::Path(path, None, false)).unwrap();
            }
        }
    }
}

/// Case `i` of an edge-kernel battery: alpha, beta, padding, bias and
/// activation cycle with `i` (sigmoid only on float inputs, whose results
/// the small-integer check could not hold exactly).
fn edge_case(
    i: usize,
    (m, n, k): (usize, usize, usize),
    (ta, tb): (Trans, Trans),
    integers: bool,
    seed: u64,
) -> Case {
    Case {
        ta,
        tb,
        m,
        n,
        k,
        alpha: if integers { 2.0 } else { 0.7 },
        beta: if i.is_multiple_of(2) { 0.0 } else { 0.5 },
        lda_pad: 1,
        ldb_pad: i % 2,
        ldc_pad: 3,
        bias: (i % 3) as u8,
        activation: match i % 3 {
            0 => Activation::Identity,
            1 => Activation::Relu,
            _ if integers => Activation::Relu,
            _ => Activation::Sigmoid,
        },
        integers,
        seed: seed + i as u64,
    }
}

/// The ragged last columns (1 to 8) of a product with a packed op(A) = A^T
/// (a row-major A's take the dot edge), which the AVX-512 path runs with
/// the panel's rows on the lanes: ragged row tiles, odd and even k, K
/// spanning two slices (default blocks: k > 1024), both forms of B (B^T
/// with m > 128, past the M-on-lanes kernel), every bias and epilogue. On
/// the other paths the same shapes exercise their ordinary edge tiles.
#[test]
fn edge_lanes_columns() {
    let shapes = [
        (150, 452, 128, Trans::T, Trans::N),
        (150, 33, 7, Trans::T, Trans::N),
        (130, 71, 64, Trans::T, Trans::T),
        (200, 40, 1100, Trans::T, Trans::N),
        (25, 6, 3, Trans::T, Trans::N),
        (140, 296, 65, Trans::T, Trans::T),
    ];
    for path in KernelPath::ALL {
        for (i, &(m, n, k, ta, tb)) in shapes.iter().enumerate() {
            for integers in [false, true] {
                let c = edge_case(i, (m, n, k), (ta, tb), integers, 60);
                check(&c, Entry::Path(path, None, false)).unwrap();
            }
        }
    }
}

#[test]
fn native_path_matches_build() {
    assert_eq!(
        KernelPath::NATIVE == KernelPath::Avx512,
        vcortex_kernels::SIMD_LEVEL == "avx512f"
    );
}

/// Called from inside a rayon worker, the parallel entry must not fork again
/// (it runs on the calling thread) and must still be correct.
#[test]
fn parallel_inside_rayon_pool() {
    use rayon::prelude::*;
    (0..4usize).into_par_iter().for_each(|t| {
        let c = Case {
            ta: Trans::N,
            tb: Trans::T,
            m: 64,
            n: 96,
            k: 700,
            alpha: 1.0,
            beta: 2.0,
            lda_pad: 0,
            ldb_pad: 0,
            ldc_pad: 0,
            bias: 1,
            activation: Activation::Identity,
            integers: true,
            seed: t as u64,
        };
        check(&c, Entry::PublicParallel).unwrap();
    });
}

#[test]
fn empty_products() {
    let mut c = vec![1.0f32; 6];
    // k == 0: C <- beta * C (+ bias), A and B never read.
    sgemm(
        Trans::N,
        Trans::N,
        2,
        3,
        0,
        1.0,
        &[],
        0,
        &[],
        3,
        2.0,
        &mut c,
        3,
    );
    assert_eq!(c, vec![2.0; 6]);
    // m == 0 and n == 0 touch nothing.
    sgemm(
        Trans::N,
        Trans::N,
        0,
        3,
        4,
        1.0,
        &[],
        4,
        &[0.0; 12],
        3,
        0.0,
        &mut [],
        3,
    );
    sgemm(
        Trans::N,
        Trans::N,
        2,
        0,
        4,
        1.0,
        &[0.0; 8],
        4,
        &[],
        0,
        0.0,
        &mut [],
        0,
    );
}

/// Products for the M-on-lanes kernel with B stored k x n (NN and T N
/// forms, AVX-512 path, default blocking, m <= 128 and n >= 400): m from 1
/// to 127 and never a multiple of 16 (ragged last vector of the 64-row
/// block, and one or two blocks), n from 400 to 437 and never a multiple of
/// 6 (a ragged last column group), k from 0, leading dimensions up to 70
/// floats past the matrix (B's rows then fall at unaligned, varying
/// offsets), every bias and activation, and beta 0 with NaN-poisoned C
/// (set up by `check`).
fn m_lanes_nn_case(integers: bool) -> impl Strategy<Value = Case> {
    (
        case(46, 6, 40, integers),
        1..=127usize,
        400..=437usize,
        (0..=70usize, 0..=70usize, 0..=70usize),
    )
        .prop_map(move |(c, m, n, (lda_pad, ldb_pad, ldc_pad))| Case {
            tb: Trans::N,
            m: if m % 16 == 0 { m - 1 } else { m },
            n: if n % 6 == 0 { n + 1 } else { n },
            lda_pad,
            ldb_pad,
            ldc_pad,
            ..c
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Tolerance: `check`'s rtol = (k + 4) * 2u relative to the sum of
    /// magnitudes (each k step is one FMA in a fixed order; the epilogue
    /// adds at most three roundings), atol 1e-6 for sigmoid.
    #[test]
    fn m_lanes_nn_floats(c in m_lanes_nn_case(false)) {
        check(&c, Entry::Path(KernelPath::Avx512, None, false))?;
    }

    /// Small integers and power-of-two scalars: exact, any summation order.
    #[test]
    fn m_lanes_nn_integers_exact(c in m_lanes_nn_case(true)) {
        check(&c, Entry::Path(KernelPath::Avx512, None, false))?;
    }

    /// The same products through the public single-threaded entries (this
    /// build's native path: the M-on-lanes kernel where it is AVX-512).
    #[test]
    fn m_lanes_nn_public_entry(c in m_lanes_nn_case(false)) {
        check(&c, Entry::Public)?;
    }
}

/// The trainer's NN products on the M-on-lanes kernel, exactly, on small
/// integers: the DAE decoder `h W` (64 x 900 x 784, column bias and ReLU in
/// place of sigmoid, which is not exact), the backward deltas `delta W`
/// (64 x 625 x 900, 64 x 400 x 625, beta 2), a 128-row product (two
/// blocks) and the limits 400 columns and 128 rows, k = 0 and k = 1.
#[test]
fn m_lanes_nn_trainer_shapes_exact() {
    for (m, k, n, beta, bias) in [
        (64, 900, 784, 0.0, 2),
        (64, 625, 900, 2.0, 0),
        (64, 400, 625, 0.5, 1),
        (128, 300, 402, 0.0, 1),
        (127, 33, 400, 0.0, 2),
        (65, 0, 401, -1.0, 2),
        (3, 1, 777, 0.0, 0),
    ] {
        for (ta, seed) in [(Trans::N, 1u64), (Trans::T, 2u64)] {
            let c = Case {
                ta,
                tb: Trans::N,
                m,
                n,
                k,
                alpha: 1.0,
                beta,
                lda_pad: 3,
                ldb_pad: 5,
                ldc_pad: 1,
                bias,
                activation: if bias == 2 {
                    Activation::Relu
                } else {
                    Activation::Identity
                },
                integers: true,
                seed,
            };
            check(&c, Entry::Path(KernelPath::Avx512, None, false)).unwrap();
            check(&c, Entry::Public).unwrap();
        }
    }
}
/// The M-on-lanes epilogue (on AVX-512 builds: an in-register transpose of
/// each 16-row group and one masked store per row) on every row-group shape
/// and column count: m on both sides of 8, 16, 64 and 128 (the group's row
/// pairs i / i + 8, ragged and full groups, one and two blocks), the last
/// column group 1 to 6 wide in both B forms (B^T: n = 1..=12; B stored
/// k x n: n = 400..=405), each epilogue (alpha != 1; beta 0 with C
/// NaN-poisoned by `check`, beta 1 and -0.5; row and column bias; ReLU and
/// sigmoid), C with and without a wide leading dimension. Integer inputs
/// make every case exact but the sigmoid ones, which `check` compares
/// within its float tolerance.
#[test]
fn m_lanes_epilogue_every_group_shape() {
    // (alpha, beta, bias, activation)
    let epilogues = [
        (1.0, 0.0, 0, Activation::Identity),
        (0.5, 0.0, 1, Activation::Relu),
        (-2.0, 1.0, 2, Activation::Sigmoid),
        (1.0, -0.5, 1, Activation::Sigmoid),
        (2.0, 1.0, 0, Activation::Relu),
        (1.0, 2.0, 2, Activation::Identity),
    ];
    let mut seed = 0u64;
    for m in [1, 7, 8, 9, 15, 16, 17, 31, 48, 63, 64, 65, 121, 128] {
        let widths = (1..=12)
            .map(|n| (Trans::T, n))
            .chain((400..=405).map(|n| (Trans::N, n)));
        for (tb, n) in widths {
            for (e, &(alpha, beta, bias, activation)) in epilogues.iter().enumerate() {
                for ldc_pad in [0, 37] {
                    seed += 1;
                    let c = Case {
                        // Both A forms, alternating.
                        ta: if seed.is_multiple_of(2) {
                            Trans::N
                        } else {
                            Trans::T
                        },
                        tb,
                        m,
                        n,
                        k: 3 + e,
                        alpha,
                        beta,
                        lda_pad: 1,
                        ldb_pad: 2,
                        ldc_pad,
                        bias,
                        activation,
                        integers: activation != Activation::Sigmoid,
                        seed,
                    };
                    check(&c, Entry::Path(KernelPath::Avx512, None, false)).unwrap();
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// sgemm_sum: several (A, B) pairs summed along K in one blocked product.

use vcortex_kernels::gemm::{sgemm_sum, sgemm_sum_on_path, KTerm};

/// One generated sum: a term per entry of `ks` (k may be 0), each with its
/// own leading-dimension padding.
#[derive(Clone, Debug)]
struct SumCase {
    ta: Trans,
    tb: Trans,
    m: usize,
    n: usize,
    ks: Vec<usize>,
    alpha: f32,
    beta: f32,
    ldc_pad: usize,
    bias: u8,
    activation: Activation,
    integers: bool,
    seed: u64,
}

/// Shapes from 1 to three tiles plus one in m and n, 0 to 4 terms of k from
/// 0 to `k_max` (a term of k == 0 in a third of them).
fn sum_case(mr: usize, nr: usize, k_max: usize, integers: bool) -> impl Strategy<Value = SumCase> {
    let scalars = if integers {
        prop_oneof![Just(0.0f32), Just(1.0), Just(-1.0), Just(2.0), Just(0.5)].boxed()
    } else {
        (-2.0f32..2.0).boxed()
    };
    let beta = prop_oneof![Just(0.0f32), scalars.clone()];
    let k = prop_oneof![1 => Just(0usize), 2 => 0..=k_max];
    (
        (trans(), trans(), 1..=3 * mr + 1, 1..=3 * nr + 1),
        prop::collection::vec(k, 0..=4),
        (scalars, beta, 0..3usize, 0..3u8, activation(), any::<u64>()),
    )
        .prop_map(
            move |((ta, tb, m, n), ks, (alpha, beta, ldc_pad, bias, activation, seed))| SumCase {
                ta,
                tb,
                m,
                n,
                ks,
                alpha,
                beta,
                ldc_pad,
                bias,
                activation: if integers && activation == Activation::Sigmoid {
                    Activation::Relu
                } else {
                    activation
                },
                integers,
                seed,
            },
        )
}

/// How a sum is run: on a path (with optional blocking), or the public entry.
#[derive(Clone, Copy)]
enum SumEntry {
    Path(KernelPath, Option<Blocking>),
    Public,
}

fn check_sum(case: &SumCase, entry: SumEntry) -> Result<(), TestCaseError> {
    let SumCase {
        ta,
        tb,
        m,
        n,
        alpha,
        beta,
        ..
    } = *case;
    let mut rng = Lcg(case.seed);
    // Each term's operands, stored per ta / tb with leading dims 0-2 wider.
    let mut stored = Vec::new();
    for (t, &k) in case.ks.iter().enumerate() {
        let (ar, ac) = if ta == Trans::N { (m, k) } else { (k, m) };
        let (br, bc) = if tb == Trans::N { (k, n) } else { (n, k) };
        let (lda, ldb) = (ac + t % 3, bc + (t + 1) % 3);
        let a = filled(ar * lda, &mut rng, case.integers);
        let b = filled(br * ldb, &mut rng, case.integers);
        stored.push((a, lda, b, ldb, k));
    }
    let terms: Vec<KTerm> = stored
        .iter()
        .map(|(a, lda, b, ldb, k)| KTerm {
            a,
            lda: *lda,
            b,
            ldb: *ldb,
            k: *k,
        })
        .collect();
    // The reference: one product over the concatenated K, with op(A) stored
    // m x K and op(B) K x n.
    let k_total: usize = case.ks.iter().sum();
    let at = |x: &[f32], ld: usize, t: Trans, r: usize, col: usize| match t {
        Trans::N => x[r * ld + col],
        Trans::T => x[col * ld + r],
    };
    let mut a_cat = vec![0.0f32; m * k_total];
    let mut b_cat = vec![0.0f32; k_total * n];
    let mut p0 = 0;
    for (a, lda, b, ldb, k) in &stored {
        for p in 0..*k {
            for i in 0..m {
                a_cat[i * k_total + p0 + p] = at(a, *lda, ta, i, p);
            }
            for j in 0..n {
                b_cat[(p0 + p) * n + j] = at(b, *ldb, tb, p, j);
            }
        }
        p0 += k;
    }

    let ldc = n + case.ldc_pad;
    let mut c = filled(m * ldc, &mut rng, case.integers);
    for (idx, x) in c.iter_mut().enumerate() {
        if idx % ldc >= n {
            *x = PAD_SENTINEL;
        } else if beta == 0.0 {
            // beta == 0 must never read C.
            *x = f32::NAN;
        }
    }
    let bias_values = filled(m.max(n), &mut rng, case.integers);
    let bias = match case.bias {
        0 => Bias::None,
        1 => Bias::Row(&bias_values[..m]),
        _ => Bias::Col(&bias_values[..n]),
    };
    let epilogue = Epilogue {
        bias,
        activation: case.activation,
    };
    let mut want = c.clone();
    reference::sgemm(
        Trans::N,
        Trans::N,
        m,
        n,
        k_total,
        alpha,
        &a_cat,
        k_total,
        &b_cat,
        n,
        beta,
        &mut want,
        ldc,
        bias,
        case.activation,
    );
    let mut got = c.clone();
    match entry {
        SumEntry::Path(path, blocking) => sgemm_sum_on_path(
            path, blocking, ta, tb, m, n, &terms, alpha, beta, &mut got, ldc, epilogue,
        ),
        SumEntry::Public => sgemm_sum(ta, tb, m, n, &terms, alpha, beta, &mut got, ldc, epilogue),
    }

    for i in 0..m {
        for col in 0..ldc {
            let j = i * ldc + col;
            let (g, w) = (got[j], want[j]);
            if col >= n {
                prop_assert_eq!(
                    g.to_bits(),
                    PAD_SENTINEL.to_bits(),
                    "padding at ({}, {})",
                    i,
                    col
                );
                continue;
            }
            if case.integers {
                // As in `check`: |x| <= 4, K <= 3 KC and power-of-two scalars
                // keep every intermediate exact, in any summation order.
                prop_assert_eq!(g, w, "({}, {}) of {:?}", i, col, case);
                continue;
            }
            // The tolerance of `check`, with k the total K: however the sum
            // over all terms is blocked, it is one float sum of K products,
            // within K u of the exact sum relative to the sum of magnitudes
            // S; rtol = (K + 4) * 2u leaves a factor 2 and the roundings of
            // alpha, beta and the bias; atol covers sigmoid's own rounding.
            let mut s = 0.0f64;
            for p in 0..k_total {
                s += (a_cat[i * k_total + p] as f64 * b_cat[p * n + col] as f64).abs();
            }
            s *= alpha.abs() as f64;
            if beta != 0.0 {
                s += (beta as f64 * c[j] as f64).abs();
            }
            s += match bias {
                Bias::None => 0.0,
                Bias::Row(r) => r[i].abs() as f64,
                Bias::Col(cb) => cb[col].abs() as f64,
            };
            let tol = 1e-6 + (k_total + 4) as f64 * f32::EPSILON as f64 * s;
            let err = (g as f64 - w as f64).abs();
            prop_assert!(
                err <= tol,
                "({}, {}): got {} want {} err {} > tol {} in {:?}",
                i,
                col,
                g,
                w,
                err,
                tol,
                case
            );
        }
    }
    Ok(())
}

macro_rules! sum_path_tests {
    ($module:ident, $path:expr) => {
        mod $module {
            use super::*;
            const PATH: KernelPath = $path;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(24))]

                /// Default blocking: up to four terms of up to 3/4 KC each,
                /// so the concatenated K runs one to three slices, with term
                /// boundaries inside slices.
                #[test]
                fn sum_floats_default_blocking(
                    c in sum_case(PATH.tile().0, PATH.tile().1, PATH.blocking().kc * 3 / 4, false)
                ) {
                    check_sum(&c, SumEntry::Path(PATH, None))?;
                }

                #[test]
                fn sum_integers_exact_default_blocking(
                    c in sum_case(PATH.tile().0, PATH.tile().1, PATH.blocking().kc * 3 / 4, true)
                ) {
                    check_sum(&c, SumEntry::Path(PATH, None))?;
                }
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(96))]

                /// Tiny cache blocks: terms span several KC slices and
                /// slices span several terms; several jc and ic blocks.
                #[test]
                fn sum_floats_tiny_blocking(
                    (blk, c) in tiny_blocking(PATH).prop_flat_map(|blk| {
                        (Just(blk), sum_case(PATH.tile().0, PATH.tile().1, 3 * blk.kc, false))
                    })
                ) {
                    check_sum(&c, SumEntry::Path(PATH, Some(blk)))?;
                }

                #[test]
                fn sum_integers_exact_tiny_blocking(
                    (blk, c) in tiny_blocking(PATH).prop_flat_map(|blk| {
                        (Just(blk), sum_case(PATH.tile().0, PATH.tile().1, 3 * blk.kc, true))
                    })
                ) {
                    check_sum(&c, SumEntry::Path(PATH, Some(blk)))?;
                }
            }
        }
    };
}

sum_path_tests!(sum_avx512, KernelPath::Avx512);
sum_path_tests!(sum_avx2, KernelPath::Avx2);
sum_path_tests!(sum_portable, KernelPath::Portable);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The public entry (this build's native path).
    #[test]
    fn sum_public_entry(c in sum_case(12, 32, 150, false)) {
        check_sum(&c, SumEntry::Public)?;
    }
}

/// The trainer's shapes with default blocking, exact: A^T B weight-gradient
/// blocks (228 and 216 rows, and 300 > MC_SHORT_K) against n = 784 or a
/// ragged 100, over two chunks x two terms of k = 64 (one slice of 256 on
/// AVX-512, short row-order slices elsewhere) and two terms of 64 and 32.
#[test]
fn sum_trainer_shapes() {
    let shapes: [(usize, usize, &[usize]); 4] = [
        (228, 784, &[64, 64, 64, 64]),
        (216, 100, &[64, 0, 64]),
        (300, 100, &[64, 32]),
        (10, 400, &[64, 64]),
    ];
    for path in KernelPath::ALL {
        for (i, &(m, n, ks)) in shapes.iter().enumerate() {
            let c = SumCase {
                ta: Trans::T,
                tb: Trans::N,
                m,
                n,
                ks: ks.to_vec(),
                alpha: -0.5,
                beta: if i % 2 == 0 { 1.0 } else { 0.0 },
                ldc_pad: 0,
                bias: 0,
                activation: Activation::Identity,
                integers: true,
                seed: 90 + i as u64,
            };
            check_sum(&c, SumEntry::Path(path, None)).unwrap();
        }
    }
}

/// With at most one non-empty term the sum is the single product, bit for
/// bit (same code path), and empty terms are skipped.
#[test]
fn sum_of_one_term_is_the_product() {
    let (m, n, k) = (37, 45, 70);
    let mut rng = Lcg(5);
    let a = filled(k * m, &mut rng, false);
    let b = filled(k * n, &mut rng, false);
    let c0 = filled(m * n, &mut rng, false);
    for path in KernelPath::ALL {
        let mut want = c0.clone();
        sgemm_on_path(
            path,
            None,
            false,
            Trans::T,
            Trans::N,
            m,
            n,
            k,
            0.3,
            &a,
            m,
            &b,
            n,
            0.7,
            &mut want,
            n,
            Epilogue::NONE,
        );
        let empty = KTerm {
            a: &[],
            lda: m,
            b: &[],
            ldb: n,
            k: 0,
        };
        let term = KTerm {
            a: &a,
            lda: m,
            b: &b,
            ldb: n,
            k,
        };
        let mut got = c0.clone();
        sgemm_sum_on_path(
            path,
            None,
            Trans::T,
            Trans::N,
            m,
            n,
            &[empty, term, empty],
            0.3,
            0.7,
            &mut got,
            n,
            Epilogue::NONE,
        );
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want));
    }
    // No terms: C <- beta * C.
    let mut c = vec![1.0f32; 6];
    sgemm_sum(
        Trans::N,
        Trans::N,
        2,
        3,
        &[],
        1.0,
        2.0,
        &mut c,
        3,
        Epilogue::NONE,
    );
    assert_eq!(c, vec![2.0; 6]);
}

#[test]
#[should_panic(expected = "B too short")]
fn sum_checks_every_term() {
    let a = [0.0f32; 6];
    let mut c = [0.0f32; 4];
    let good = KTerm {
        a: &a,
        lda: 3,
        b: &a,
        ldb: 2,
        k: 3,
    };
    let short = KTerm { b: &a[..5], ..good };
    sgemm_sum(
        Trans::N,
        Trans::N,
        2,
        2,
        &[good, short],
        1.0,
        0.0,
        &mut c,
        2,
        Epilogue::NONE,
    );
}
