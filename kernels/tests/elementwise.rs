//! Elementwise, loss, noise and optimizer kernels against `reference`.
//!
//! Lengths straddle the SIMD width (16, 8 or 4 lanes) so every kernel's ragged
//! tail is exercised. Kernels that evaluate the reference's f32 expression in
//! the same order are checked for bit equality; the ones built on the
//! vectorised exp/log1p get explicit, justified tolerances.

use proptest::prelude::*;
use vcortex_kernels::lanes::{F32s, LANES};
use vcortex_kernels::rng::Rng;
use vcortex_kernels::{activation, loss, noise, optim, reference, vmath};

/// Applies a vector function to a slice, lane group by lane group.
fn map_vec(xs: &[f32], f: impl Fn(F32s) -> F32s) -> Vec<f32> {
    let mut out = xs.to_vec();
    vcortex_kernels::lanes::map_inplace(&mut out, f);
    out
}

/// Bitwise equality, with every NaN equal to every NaN and -0 == +0.
fn assert_same(fast: &[f32], slow: &[f32], what: &str) {
    assert_eq!(fast.len(), slow.len(), "{what}: lengths");
    for (i, (&a, &b)) in fast.iter().zip(slow).enumerate() {
        let same =
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()) || (a == 0.0 && b == 0.0);
        assert!(
            same,
            "{what}[{i}]: fast {a:e} ({:#x}) vs reference {b:e} ({:#x})",
            a.to_bits(),
            b.to_bits()
        );
    }
}

fn max_rel_err(xs: &[f32], fast: impl Fn(F32s) -> F32s, exact: impl Fn(f64) -> f64) -> f64 {
    let got = map_vec(xs, fast);
    xs.iter()
        .zip(&got)
        .map(|(&x, &y)| {
            let e = exact(x as f64);
            ((y as f64 - e) / e).abs()
        })
        .fold(0.0, f64::max)
}

fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| lo + (hi - lo) * (i as f32 / (n - 1) as f32))
        .collect()
}

fn sigmoid_f64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

// Measured max relative errors (native AVX-512, x86-64-v3 and plain x86-64
// builds alike unless noted): exp 8.2e-8 over [-87.3, 88] (7.8e-8 without
// FMA), ln_1p_unit 1.24e-7 over [0, 1], sigmoid 1.69e-7 over [-87, 30]; f32's
// unit roundoff is 6e-8, so these are 1-2 ulp. The bound allows ~2.5 ulp.
const TRANSCENDENTAL_REL: f64 = 3.0e-7;

#[test]
fn exp_is_accurate_to_about_one_ulp() {
    let xs = grid(-87.3, 88.0, 400_003);
    let err = max_rel_err(&xs, vmath::exp, f64::exp);
    eprintln!("exp max relative error {err:.3e}");
    assert!(err < TRANSCENDENTAL_REL, "exp max relative error {err:e}");
    // Edges: underflow flushes to 0, NaN propagates, e^0 is exactly 1.
    let edge = map_vec(
        &[-88.0, -1000.0, f32::NEG_INFINITY, f32::NAN, 0.0],
        vmath::exp,
    );
    assert_eq!(&edge[..3], &[0.0, 0.0, 0.0]);
    assert!(edge[3].is_nan());
    assert_eq!(edge[4], 1.0);
}

#[test]
fn ln_1p_unit_is_accurate_to_about_one_ulp() {
    let mut us = grid(0.0, 1.0, 200_003);
    us.extend((0..120).map(|k| 2f32.powi(-k)));
    us.retain(|&u| u > 0.0);
    let err = max_rel_err(&us, vmath::ln_1p_unit, f64::ln_1p);
    eprintln!("ln_1p_unit max relative error {err:.3e}");
    assert!(
        err < TRANSCENDENTAL_REL,
        "ln_1p_unit max relative error {err:e}"
    );
    assert_eq!(map_vec(&[0.0], vmath::ln_1p_unit)[0], 0.0);
}

#[test]
fn sigmoid_is_accurate_to_about_one_ulp() {
    let xs = grid(-87.0, 30.0, 300_007);
    let err = max_rel_err(&xs, vmath::sigmoid, sigmoid_f64);
    eprintln!("sigmoid max relative error {err:.3e}");
    assert!(
        err < TRANSCENDENTAL_REL,
        "sigmoid max relative error {err:e}"
    );
    let edge = map_vec(&[f32::NAN, 100.0, -100.0, 0.0], vmath::sigmoid);
    assert!(edge[0].is_nan());
    assert_eq!(&edge[1..], &[1.0, 0.0, 0.5]);
}

/// Lengths 0..=5 LANES + 3: empty, shorter than a vector, ragged tails.
fn len() -> impl Strategy<Value = usize> {
    0..=5 * LANES + 3
}

fn vec_f32(n: usize, lo: f32, hi: f32) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(lo..hi, n)
}

/// (rows, cols, data) with cols straddling the vector width.
fn matrix(lo: f32, hi: f32) -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
    (1usize..6, 1usize..=3 * LANES + 2)
        .prop_flat_map(move |(r, c)| (Just(r), Just(c), vec_f32(r * c, lo, hi)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn relu_forward_and_backward_match(x in len().prop_flat_map(|n| vec_f32(n, -3.0, 3.0))) {
        let mut fast = x.clone();
        let mut slow = x.clone();
        activation::relu_inplace(&mut fast);
        reference::relu_inplace(&mut slow);
        assert_same(&fast, &slow, "relu");

        let g: Vec<f32> = x.iter().map(|v| v * 1.7 + 0.3).collect();
        let mut fast_g = g.clone();
        activation::relu_backward(&fast, &mut fast_g);
        let slow_g: Vec<f32> = g.iter().zip(&slow).map(|(&g, &y)| if y <= 0.0 { 0.0 } else { g }).collect();
        assert_same(&fast_g, &slow_g, "relu_backward");
        let mut into = vec![f32::NAN; g.len()];
        activation::relu_backward_into(&fast, &g, &mut into);
        assert_same(&into, &slow_g, "relu_backward_into");
    }

    #[test]
    fn sigmoid_forward_within_tolerance_backward_exact(
        x in len().prop_flat_map(|n| vec_f32(n, -90.0, 90.0))
    ) {
        let mut fast = x.clone();
        activation::sigmoid_inplace(&mut fast);
        for (&f, &v) in fast.iter().zip(&x) {
            let r = reference::sigmoid(v);
            // Both sides are ~1 ulp from the true value (vector exp vs libm
            // expf); the absolute term covers the flush to 0 below e^-87.3.
            prop_assert!((f - r).abs() <= 3.0e-7 * r.abs() + 1e-37, "sigmoid({v}) = {f} vs {r}");
        }
        let g: Vec<f32> = x.iter().map(|v| v * 0.5 - 1.0).collect();
        let mut fast_g = g.clone();
        activation::sigmoid_backward(&fast, &mut fast_g);
        let slow_g: Vec<f32> = g.iter().zip(&fast).map(|(&g, &y)| g * (y * (1.0 - y))).collect();
        assert_same(&fast_g, &slow_g, "sigmoid_backward");
    }

    #[test]
    fn bias_add_grad_and_column_means_match((rows, cols, x) in matrix(-2.0, 2.0)) {
        let bias: Vec<f32> = (0..cols).map(|j| j as f32 * 0.37 - 1.0).collect();
        let mut fast = x.clone();
        activation::add_bias_rows(&mut fast, &bias);
        let slow: Vec<f32> = x.iter().enumerate().map(|(i, &v)| v + bias[i % cols]).collect();
        assert_same(&fast, &slow, "add_bias_rows");

        let mut fast_b = vec![f32::NAN; cols];
        activation::bias_grad_rows(&x, &mut fast_b);
        let mut slow_b = vec![0.0f32; cols];
        for r in 0..rows {
            for j in 0..cols {
                slow_b[j] += x[r * cols + j];
            }
        }
        assert_same(&fast_b, &slow_b, "bias_grad_rows");

        let mut fast_m = vec![f32::NAN; cols];
        loss::column_means(&x, &mut fast_m);
        let mut slow_m = vec![0.0f32; cols];
        reference::column_means(&x, &mut slow_m);
        assert_same(&fast_m, &slow_m, "column_means");
    }

    #[test]
    fn u8_scaling_matches(src in len().prop_flat_map(|n| prop::collection::vec(any::<u8>(), n))) {
        let mut fast = vec![f32::NAN; src.len()];
        let mut slow = vec![0.0; src.len()];
        activation::u8_to_unit_f32(&src, &mut fast);
        reference::u8_to_unit_f32(&src, &mut slow);
        assert_same(&fast, &slow, "u8_to_unit_f32");
    }

    #[test]
    fn softmax_cross_entropy_within_tolerance(
        (rows, classes, logits) in (1usize..6, 1usize..=2 * LANES + 3)
            .prop_flat_map(|(r, c)| (Just(r), Just(c), vec_f32(r * c, -30.0, 30.0))),
        seed in any::<u64>(),
        grad_scale in -2.0f32..2.0,
    ) {
        let mut rng = Rng::new(seed);
        let labels: Vec<u8> = (0..rows).map(|_| rng.below(classes as u64) as u8).collect();
        let n = rows * classes;
        let (mut p, mut g) = (vec![f32::NAN; n], vec![f32::NAN; n]);
        let (mut rp, mut rg) = (vec![0.0; n], vec![0.0; n]);
        let fast = loss::softmax_cross_entropy(&logits, &labels, classes, &mut p, &mut g, grad_scale);
        let slow = reference::softmax_cross_entropy(&logits, &labels, classes, &mut rp, &mut rg, grad_scale);
        // f32 exps (~1 ulp), x - max rounded in f32 (relative error in the exp
        // <= |x - max| * 2^-24 <= 60 * 6e-8 = 3.6e-6 here) and an f32 row sum
        // against the f64 reference: 1e-5 relative. Absolute 1e-30 covers
        // probabilities that underflow.
        for i in 0..n {
            prop_assert!((p[i] - rp[i]).abs() <= 1e-5 * rp[i] + 1e-30, "p[{i}] {} vs {}", p[i], rp[i]);
            // grad = (p - y) * s: the error of p, scaled, plus one rounding.
            let tol = (1e-5 * rp[i] + 1e-30) * grad_scale.abs() + 2.4e-7 * rg[i].abs();
            prop_assert!((g[i] - rg[i]).abs() <= tol, "g[{i}] {} vs {}", g[i], rg[i]);
        }
        // Per row the loss is ln(sum) - (x_label - max): only ln(sum) differs,
        // by the f32 sum's relative error (< 1e-5 absolute in the log).
        prop_assert!((fast - slow).abs() <= 1e-5 * rows as f64 + 1e-6 * slow.abs(), "loss {fast} vs {slow}");
    }

    #[test]
    fn sigmoid_binary_cross_entropy_within_tolerance(
        n in 0usize..=70 * LANES + 5,
        seed in any::<u64>(),
        spread in prop::sample::select(vec![1.0f32, 10.0, 100.0]),
        grad_scale in -2.0f32..2.0,
    ) {
        // Lengths up to past one 64-vector accumulation block.
        let mut rng = Rng::new(seed);
        let a: Vec<f32> = (0..n).map(|_| rng.uniform(-spread, spread)).collect();
        let x: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { rng.next_f32() } else { (i % 2) as f32 }).collect();
        let (mut r, mut g) = (vec![f32::NAN; n], vec![f32::NAN; n]);
        let (mut rr, mut rg) = (vec![0.0; n], vec![0.0; n]);
        let fast = loss::sigmoid_binary_cross_entropy(&a, &x, &mut r, &mut g, grad_scale);
        let slow = reference::sigmoid_binary_cross_entropy(&a, &x, &mut rr, &mut rg, grad_scale);
        let mut bound = 0.0f64;
        for i in 0..n {
            // recon is the sigmoid (~1 ulp each side, see above).
            prop_assert!((r[i] - rr[i]).abs() <= 3.0e-7 * rr[i] + 1e-37, "recon[{i}] {} vs {}", r[i], rr[i]);
            // (z - x) * s rounds twice on each side (fast and reference):
            // up to 4 half-ulps, 2.4e-7 relative, of the result.
            let tol = (3.0e-7 * rr[i] + 1e-37) * grad_scale.abs() + 2.4e-7 * rg[i].abs();
            prop_assert!((g[i] - rg[i]).abs() <= tol, "grad[{i}] {} vs {}", g[i], rg[i]);
            // Each f32 term has a few roundings of intermediates as large as
            // |a|, |a x| and ln 2: a few ulp of their sum.
            bound += 4.0e-7 * (a[i].abs() as f64 + (a[i] * x[i]).abs() as f64 + 1.0);
        }
        prop_assert!((fast - slow).abs() <= bound + 1e-9, "loss {fast} vs {slow} (bound {bound})");
    }

    #[test]
    fn kl_sparsity_matches((rows, cols, h) in matrix(0.01, 0.99), rho in 0.01f32..0.2, beta in 0.0f32..3.0) {
        let mut rho_hat = vec![0.0; cols];
        loss::column_means(&h, &mut rho_hat);
        let scale = 1.0 / rows as f32;
        let g0: Vec<f32> = h.iter().map(|v| v - 0.5).collect();
        let mut fast = g0.clone();
        let mut slow = g0.clone();
        loss::kl_sparsity_backward(&mut fast, &rho_hat, rho, beta, scale);
        reference::kl_sparsity_backward(&mut slow, cols, &rho_hat, rho, beta, scale);
        assert_same(&fast, &slow, "kl_sparsity_backward");
        prop_assert_eq!(
            loss::kl_sparsity_cost(&rho_hat, rho, beta),
            reference::kl_sparsity_cost(&rho_hat, rho, beta)
        );
    }

    #[test]
    fn optimizers_match_bit_for_bit(
        (p0, s0, g) in len().prop_flat_map(|n| (vec_f32(n, -1.0, 1.0), vec_f32(n, 0.0, 1.0), vec_f32(n, -5.0, 5.0))),
        lr in 1e-4f32..0.5,
        decay in 0.0f32..1e-2,
        gamma in 0.0f32..0.99,
        eps in 1e-8f32..1e-4,
    ) {
        // Same f32 operations in the same order, no FMA contraction (Rust
        // never contracts, and the kernels use plain mul/add): exact.
        let (mut fp, mut sp) = (p0.clone(), p0.clone());
        optim::sgd_update(&mut fp, &g, lr, decay);
        reference::sgd_update(&mut sp, &g, lr, decay);
        assert_same(&fp, &sp, "sgd p");

        let (mut fp, mut sp, mut fv, mut sv) = (p0.clone(), p0.clone(), s0.clone(), s0.clone());
        optim::momentum_update(&mut fp, &mut fv, &g, lr, decay, gamma);
        reference::momentum_update(&mut sp, &mut sv, &g, lr, decay, gamma);
        assert_same(&fp, &sp, "momentum p");
        assert_same(&fv, &sv, "momentum v");

        let (mut fp, mut sp, mut fv, mut sv) = (p0.clone(), p0.clone(), s0.clone(), s0.clone());
        optim::momentum_finish(&mut fp, &mut fv, lr * decay);
        reference::momentum_finish(&mut sp, &mut sv, lr * decay);
        assert_same(&fp, &sp, "momentum_finish p");
        assert_same(&fv, &sv, "momentum_finish v");

        let (mut fp, mut sp, mut fr, mut sr) = (p0.clone(), p0.clone(), s0.clone(), s0.clone());
        optim::rmsprop_update(&mut fp, &mut fr, &g, lr, decay, gamma, eps);
        reference::rmsprop_update(&mut sp, &mut sr, &g, lr, decay, gamma, eps);
        assert_same(&fp, &sp, "rmsprop p");
        assert_same(&fr, &sr, "rmsprop r");

        let (mut fd, mut sd) = (p0.clone(), p0.clone());
        optim::add_assign(&mut fd, &g);
        reference::add_assign(&mut sd, &g);
        assert_same(&fd, &sd, "add_assign");
        optim::scale(&mut fd, lr);
        reference::scale(&mut sd, lr);
        assert_same(&fd, &sd, "scale");
    }

    #[test]
    fn mask_noise_matches_reference_and_draw_count(
        n in 0usize..=1100, // past one 512-element mask block, odd and even
        seed in any::<u64>(),
        keep_prob in prop::sample::select(vec![0.0f32, 0.1, 0.5, 0.9, 1.0]),
    ) {
        let input: Vec<f32> = (0..n).map(|i| i as f32 - 7.5).collect();
        let (mut fast, mut slow) = (vec![f32::NAN; n], vec![f32::NAN; n]);
        let (mut rf, mut rs) = (Rng::new(seed), Rng::new(seed));
        noise::mask_noise(&input, &mut fast, keep_prob, &mut rf);
        reference::mask_noise(&input, &mut slow, keep_prob, &mut rs);
        assert_same(&fast, &slow, "mask_noise");
        prop_assert_eq!(rf.state(), rs.state());
        let mut counted = Rng::new(seed);
        for _ in 0..n.div_ceil(2) {
            counted.next_u64();
        }
        prop_assert_eq!(rf.state(), counted.state());

        let bytes: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
        let (mut fast_u8, mut slow_u8) = (vec![f32::NAN; n], vec![f32::NAN; n]);
        let (mut rf, mut rs) = (Rng::new(seed), Rng::new(seed));
        noise::mask_noise_u8(&bytes, &mut fast_u8, keep_prob, &mut rf);
        reference::mask_noise_u8(&bytes, &mut slow_u8, keep_prob, &mut rs);
        assert_same(&fast_u8, &slow_u8, "mask_noise_u8");
        prop_assert_eq!(rf.state(), rs.state());
        // And it equals the two fast steps in sequence.
        let mut scaled = vec![0.0; n];
        activation::u8_to_unit_f32(&bytes, &mut scaled);
        let mut two_step = vec![f32::NAN; n];
        noise::mask_noise(&scaled, &mut two_step, keep_prob, &mut Rng::new(seed));
        assert_same(&fast_u8, &two_step, "mask_noise_u8 vs two steps");
    }

    #[test]
    fn mask_noise_rows_matches_row_by_row_reference(
        // Past two groups of 8 rows, with rows left over; rows shorter than
        // a 16-float block, whole blocks (784 = 49 x 16) and ragged tails.
        rows in 0usize..=19,
        row_len in prop::sample::select(vec![1usize, 2, 7, 15, 16, 17, 31, 32, 33, 100, 784]),
        seed in any::<u64>(),
        keep_prob in prop::sample::select(vec![0.0f32, 0.1, 0.5, 0.9, 1.0]),
    ) {
        let n = rows * row_len;
        let input: Vec<f32> = (0..n).map(|i| (i % 97) as f32 - 40.5).collect();
        let mut fast = vec![f32::NAN; n];
        noise::mask_noise_rows(&input, &mut fast, row_len, keep_prob, |r| {
            Rng::stream(seed, r as u64)
        });
        let mut slow = vec![f32::NAN; n];
        for r in 0..rows {
            let span = r * row_len..(r + 1) * row_len;
            let mut rng = Rng::stream(seed, r as u64);
            reference::mask_noise(&input[span.clone()], &mut slow[span], keep_prob, &mut rng);
        }
        assert_same(&fast, &slow, "mask_noise_rows");
    }
}

#[test]
fn mask_noise_keeps_the_right_fraction() {
    let n = 200_000;
    let input = vec![1.0f32; n];
    let mut out = vec![0.0; n];
    noise::mask_noise(&input, &mut out, 0.9, &mut Rng::new(11));
    let kept = out.iter().filter(|&&v| v == 1.0).count() as f64 / n as f64;
    // Binomial standard error sqrt(0.9 * 0.1 / n) = 6.7e-4; allow 5 sigma.
    assert!((kept - 0.9).abs() < 3.4e-3, "kept fraction {kept}");
    assert_eq!(noise::keep_threshold(1.0), 1 << 32);
    assert_eq!(noise::keep_threshold(0.0), 0);
}

#[test]
#[should_panic(expected = "keep_prob")]
fn mask_noise_rejects_bad_keep_prob() {
    let mut out = [0.0];
    noise::mask_noise(&[1.0], &mut out, f32::NAN, &mut Rng::new(0));
}
