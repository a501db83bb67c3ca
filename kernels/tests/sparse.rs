//! Property tests of the sparse-input product C = act(X W^T + bias) against
//! the naive reference GEMM, for every vector width, over ragged m / n / k
//! (k from 0; n not a multiple of the lanes or of the block), padded leading
//! dimensions, every epilogue, NaN-poisoned C, sparsity from all-zero rows
//! to none (with -0.0 and NaN inputs), and exact equality on small integers.

mod common;

use common::{Lcg, PAD_SENTINEL};
use proptest::prelude::*;
use vcortex_kernels::gemm::{
    sgemm_sparse_input, sgemm_sparse_input_on_path, sgemm_sparse_input_panels, sgemm_with_epilogue,
    Activation, Bias, Epilogue, KernelPath, SparsePanels, Trans,
};
use vcortex_kernels::reference;

#[derive(Clone, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    ldx_pad: usize,
    ldw_pad: usize,
    ldc_pad: usize,
    /// Percent of X's entries that are non-zero (0 and 100 included).
    density: u32,
    /// Whether some rows are made all zero.
    zero_rows: bool,
    /// Whether one entry of X is NaN.
    nan_input: bool,
    bias: u8,
    activation: Activation,
    integers: bool,
    seed: u64,
}

fn activation() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Identity),
        Just(Activation::Relu),
        Just(Activation::Sigmoid)
    ]
}

fn density() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(100u32), 1..100u32]
}

/// m straddles the 8-row tile, n the 16-lane vector and the 48-column block
/// (the f32x4 / f32x8 widths use 12- and 24-column blocks) and the 16 x 16
/// transposition, k starts at 0 and straddles the 16-column step blocks.
fn cases(integers: bool) -> impl Strategy<Value = Case> {
    (
        (0..=20usize, 0..=150usize, 0..=80usize),
        (0..3usize, 0..3usize, 0..3usize),
        (density(), any::<bool>(), any::<bool>()),
        (0..3u8, activation(), any::<u64>()),
    )
        .prop_map(
            move |(
                (m, n, k),
                (ldx_pad, ldw_pad, ldc_pad),
                (density, zero_rows, nan_input),
                (bias, activation, seed),
            )| Case {
                m,
                n,
                k,
                ldx_pad,
                ldw_pad,
                ldc_pad,
                density,
                zero_rows,
                nan_input: nan_input && !integers,
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
    Path(KernelPath),
    Public,
    /// W^T from panels of the path's width, filled block by block in
    /// reverse order after a fill from another W.
    Panels(KernelPath),
}

fn check(case: &Case, entry: Entry) -> Result<(), TestCaseError> {
    let Case { m, n, k, .. } = *case;
    let mut rng = Lcg(case.seed);
    let (ldx, ldw, ldc) = (k + case.ldx_pad, k + case.ldw_pad, n + case.ldc_pad);
    let mut x = vec![0.0f32; m * ldx];
    for i in 0..m {
        let zero_row = case.zero_rows && rng.below(3) == 0;
        for p in 0..k {
            let keep = !zero_row && rng.below(100) < case.density;
            x[i * ldx + p] = if keep {
                rng.value(case.integers)
            } else if rng.below(2) == 0 {
                -0.0
            } else {
                0.0
            };
        }
    }
    if case.nan_input && m * k > 0 {
        let (i, p) = (rng.below(m as u32) as usize, rng.below(k as u32) as usize);
        x[i * ldx + p] = f32::NAN;
    }
    let w: Vec<f32> = (0..n * ldw).map(|_| rng.value(case.integers)).collect();
    let bias_values: Vec<f32> = (0..m.max(n)).map(|_| rng.value(case.integers)).collect();
    let bias = match case.bias {
        0 => Bias::None,
        1 => Bias::Row(&bias_values[..m]),
        _ => Bias::Col(&bias_values[..n]),
    };
    let epilogue = Epilogue {
        bias,
        activation: case.activation,
    };
    // beta = 0: C is never read, so it starts NaN-poisoned.
    let c: Vec<f32> = (0..m * ldc)
        .map(|idx| {
            if idx % ldc >= n {
                PAD_SENTINEL
            } else {
                f32::NAN
            }
        })
        .collect();

    let mut want = c.clone();
    reference::sgemm(
        Trans::N,
        Trans::T,
        m,
        n,
        k,
        1.0,
        &x,
        ldx,
        &w,
        ldw,
        0.0,
        &mut want,
        ldc,
        bias,
        case.activation,
    );
    let mut got = c.clone();
    match entry {
        Entry::Path(path) => {
            sgemm_sparse_input_on_path(path, m, n, k, &x, ldx, &w, ldw, &mut got, ldc, epilogue)
        }
        Entry::Public => sgemm_sparse_input(m, n, k, &x, ldx, &w, ldw, &mut got, ldc, epilogue),
        Entry::Panels(path) => {
            let mut panels = SparsePanels::on_path(path, n, k);
            let other: Vec<f32> = w.iter().map(|v| v * 3.0 + 1.0).collect();
            panels.fill_all(&other, ldw);
            let (layout, blocks) = panels.parts_mut();
            for block in blocks.iter_mut().rev() {
                layout.fill(block, &w, ldw);
            }
            sgemm_sparse_input_panels(m, &x, ldx, &panels, &mut got, ldc, epilogue);
            // The same bits as the product that transposes W itself.
            let mut own = c.clone();
            sgemm_sparse_input_on_path(path, m, n, k, &x, ldx, &w, ldw, &mut own, ldc, epilogue);
            for (idx, (g, o)) in got.iter().zip(&own).enumerate() {
                prop_assert_eq!(g.to_bits(), o.to_bits(), "panels vs own at {}", idx);
            }
        }
    }

    for i in 0..m {
        for col in 0..ldc {
            let (g, want_v) = (got[i * ldc + col], want[i * ldc + col]);
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
            if want_v.is_nan() {
                // Only a NaN input makes the reference NaN (W is finite).
                prop_assert!(g.is_nan(), "({}, {}): got {}, want NaN", i, col, g);
                continue;
            }
            if case.integers {
                // |x|, |w|, |bias| <= 4 are integers and k <= 80, so every
                // partial sum is an integer below 2^24: exact in f32 in any
                // order, hence equal to the reference bit for bit (up to the
                // sign of zero, which == ignores).
                prop_assert_eq!(g, want_v, "({}, {}) of {:?}", i, col, case);
                continue;
            }
            // A float sum of k products in any order is within k * u
            // (u = 2^-24) of the exact sum relative to the sum of magnitudes
            // S = sum_p |x_ip w_jp| + |bias|; the bias adds one rounding.
            // rtol = (k + 2) * 2u is a factor 2 above that bound; it
            // multiplies S since random signs make the result cancel far
            // below S. ReLU and sigmoid are 1- and 1/4-Lipschitz, so the
            // bound carries through them; atol = 1e-6 covers sigmoid's own
            // rounding (a few ulp of a value <= 1).
            let mut s = 0.0f64;
            for p in 0..k {
                s += (x[i * ldx + p] as f64 * w[col * ldw + p] as f64).abs();
            }
            s += match bias {
                Bias::None => 0.0,
                Bias::Row(r) => r[i].abs() as f64,
                Bias::Col(cb) => cb[col].abs() as f64,
            };
            if s.is_nan() {
                // A NaN input whose NaN the activation removed (ReLU's max
                // gives 0): the same value must come out.
                prop_assert_eq!(g, want_v, "({}, {}) after a NaN input", i, col);
                continue;
            }
            let tol = 1e-6 + (k + 2) as f64 * 2.0 * f32::EPSILON as f64 / 2.0 * s;
            prop_assert!(
                ((g as f64) - (want_v as f64)).abs() <= tol,
                "({}, {}): got {}, want {}, tol {} in {:?}",
                i,
                col,
                g,
                want_v,
                tol,
                case
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn sparse_input_matches_reference_on_every_width(case in cases(false)) {
        for path in KernelPath::ALL {
            check(&case, Entry::Path(path))?;
        }
    }

    #[test]
    fn sparse_input_is_exact_on_small_integers(case in cases(true)) {
        for path in KernelPath::ALL {
            check(&case, Entry::Path(path))?;
        }
        check(&case, Entry::Public)?;
    }

    /// Prebuilt panels give the reference's values and the same bits as
    /// the call that transposes W itself, on every width.
    #[test]
    fn sparse_input_from_panels(case in cases(false)) {
        for path in KernelPath::ALL {
            check(&case, Entry::Panels(path))?;
        }
    }
}

/// Image-like rows (a 28 x 28 blob of mostly zeros, most rows of a tile
/// differing): the sparse product equals the dense GEMM up to rounding, and
/// a call reusing the pooled buffers with a smaller shape is unaffected by
/// the larger one before it.
#[test]
fn sparse_input_matches_dense_gemm_on_image_like_rows() {
    let mut rng = Lcg(7);
    for &(m, n) in &[(64usize, 900usize), (13, 70)] {
        let k = 784;
        let x: Vec<f32> = (0..m * k)
            .map(|idx| {
                let (r, c) = ((idx % k) / 28, idx % 28);
                let inside = (5..23).contains(&r) && (7..21).contains(&c);
                if inside && rng.below(100) < 45 {
                    (rng.below(256) as f32) / 255.0
                } else {
                    0.0
                }
            })
            .collect();
        let w: Vec<f32> = (0..n * k).map(|_| rng.value(false) * 0.07).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.value(false)).collect();
        let ep = Epilogue {
            bias: Bias::Col(&b),
            activation: Activation::Sigmoid,
        };
        let mut dense = vec![0.0f32; m * n];
        sgemm_with_epilogue(
            Trans::N,
            Trans::T,
            m,
            n,
            k,
            1.0,
            &x,
            k,
            &w,
            k,
            0.0,
            &mut dense,
            n,
            ep,
        );
        let mut sparse = vec![f32::NAN; m * n];
        sgemm_sparse_input(m, n, k, &x, k, &w, k, &mut sparse, n, ep);
        for (idx, (&s, &d)) in sparse.iter().zip(&dense).enumerate() {
            // Each product is within k * u (u = 2^-24) of the exact sum
            // relative to S = sum_p |x_ip w_jp| + |b_j|, so they differ by at
            // most 2 k u S before the sigmoid (slope <= 1/4), plus 1e-6 for
            // the sigmoid's own rounding.
            let (i, j) = (idx / n, idx % n);
            let sum_abs: f64 = (0..k)
                .map(|p| (x[i * k + p] as f64 * w[j * k + p] as f64).abs())
                .sum::<f64>()
                + b[j].abs() as f64;
            let tol = 1e-6 + 2.0 * k as f64 * f32::EPSILON as f64 / 2.0 * sum_abs / 4.0;
            assert!(
                ((s - d).abs() as f64) <= tol,
                "{idx}: sparse {s} dense {d} tol {tol}"
            );
        }
    }
}
