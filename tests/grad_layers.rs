//! Finite-difference checks of every layer and loss (see gradcheck/mod.rs for
//! the step and tolerance). Run: `cargo test --test grad_layers`.

mod gradcheck;

use gradcheck::*;
use proptest::prelude::*;
use vcortex::kernels::gemm::Activation;
use vcortex::kernels::rng::Rng;
use vcortex::nn::{
    activation_backward, sigmoid_binary_cross_entropy, softmax_cross_entropy, Conv2d, Dense,
    MaxPool2d, Sparsity, TiedAutoencoder,
};

const MAX_COORDS: usize = 40;

fn act_of(i: u8) -> Activation {
    [Activation::Identity, Activation::Relu, Activation::Sigmoid][i as usize % 3]
}

fn config() -> ProptestConfig {
    proptest_config(12)
}

proptest! {
    #![proptest_config(config())]

    /// Dense y = act(x W^T + b): gradients of sum c*y wrt W, b and x.
    #[test]
    fn dense(rows in 1usize..5, n_in in 1usize..20, n_out in 1usize..20, act in 0u8..3, seed: u64) {
        let mut rng = Rng::new(seed);
        let d = Dense::new(n_in, n_out, act_of(act));
        let mut w = uniform(&mut rng, n_in * n_out, -1.0, 1.0);
        let mut b = uniform(&mut rng, n_out, -0.5, 0.5);
        let mut x = uniform(&mut rng, rows * n_in, -1.0, 1.0);
        let c = uniform(&mut rng, rows * n_out, -1.0, 1.0);
        let mut y = vec![0.0; rows * n_out];
        if d.activation == Activation::Relu {
            // Pre-activations 0.012 from the kink (see conv2d).
            Dense::new(n_in, n_out, Activation::Identity).forward(&w, &b, &x, rows, &mut y);
            prop_assume!(y.iter().all(|z| z.abs() > 0.012));
        }
        d.forward(&w, &b, &x, rows, &mut y);
        let mut dy = c.clone();
        let (mut dw, mut db, mut dx) = (vec![0.0; w.len()], vec![0.0; n_out], vec![0.0; x.len()]);
        d.backward(&w, &x, &y, &mut dy, rows, &mut dw, &mut db, Some(&mut dx));

        let eval = |w: &[f32], b: &[f32], x: &[f32]| {
            let mut y = vec![0.0; rows * n_out];
            d.forward(w, b, x, rows, &mut y);
            let relu = d.activation == Activation::Relu;
            (weighted_sum(&c, &y), if relu { positive_mask(&y) } else { Vec::new() })
        };
        let cw = coords(w.len(), MAX_COORDS, &mut rng);
        let (b0, x0) = (b.clone(), x.clone());
        assert_mostly_checked(check(&mut w, &dw, &cw, |w| eval(w, &b0, &x0)), "dense dW");
        let w0 = w.clone();
        let cb = coords(n_out, MAX_COORDS, &mut rng);
        assert_mostly_checked(check(&mut b, &db, &cb, |b| eval(&w0, b, &x0)), "dense db");
        let cx = coords(x.len(), MAX_COORDS, &mut rng);
        assert_mostly_checked(check(&mut x, &dx, &cx, |x| eval(&w0, &b0, x)), "dense dx");
    }

    /// Conv2d (valid, stride 1) with identity or fused ReLU: dW, db, dx.
    #[test]
    fn conv2d(rows in 1usize..3, c_in in 1usize..3, c_out in 1usize..3, h in 3usize..7,
              w_ in 3usize..7, k in 1usize..4, relu: bool, seed: u64) {
        prop_assume!(k <= h && k <= w_);
        let mut rng = Rng::new(seed);
        let act = if relu { Activation::Relu } else { Activation::Identity };
        let conv = Conv2d::new(c_in, h, w_, c_out, k, act);
        let mut wt = uniform(&mut rng, conv.weight_len(), -1.0, 1.0);
        let mut b = uniform(&mut rng, c_out, -0.5, 0.5);
        let mut x = uniform(&mut rng, rows * conv.input_len(), -1.0, 1.0);
        let c = uniform(&mut rng, rows * conv.output_len(), -1.0, 1.0);
        let mut y = vec![0.0; rows * conv.output_len()];
        if relu {
            // Keep every pre-activation 0.012 away from the kink: a step of
            // h = 0.01 in one weight, input or bias (all |.| <= 1) moves a
            // pre-activation by at most 0.01, so it never crosses.
            let linear = Conv2d::new(c_in, h, w_, c_out, k, Activation::Identity);
            linear.forward(&wt, &b, &x, rows, &mut y);
            prop_assume!(y.iter().all(|z| z.abs() > 0.012));
        }
        conv.forward(&wt, &b, &x, rows, &mut y);
        let mut dy = c.clone();
        let (mut dw, mut db, mut dx) = (vec![0.0; wt.len()], vec![0.0; c_out], vec![0.0; x.len()]);
        conv.backward(&wt, &x, &y, &mut dy, false, rows, &mut dw, &mut db, Some(&mut dx));

        let eval = |wt: &[f32], b: &[f32], x: &[f32]| {
            let mut y = vec![0.0; rows * conv.output_len()];
            conv.forward(wt, b, x, rows, &mut y);
            (weighted_sum(&c, &y), if relu { positive_mask(&y) } else { Vec::new() })
        };
        let (b0, x0) = (b.clone(), x.clone());
        let cw = coords(wt.len(), MAX_COORDS, &mut rng);
        assert_mostly_checked(check(&mut wt, &dw, &cw, |w| eval(w, &b0, &x0)), "conv dW");
        let w0 = wt.clone();
        let cb = coords(c_out, MAX_COORDS, &mut rng);
        assert_mostly_checked(check(&mut b, &db, &cb, |b| eval(&w0, b, &x0)), "conv db");
        let cx = coords(x.len(), MAX_COORDS, &mut rng);
        assert_mostly_checked(check(&mut x, &dx, &cx, |x| eval(&w0, &b0, x)), "conv dx");
    }

    /// Max-pool 2x2 on inputs with distinct values >= 0.05 apart (so a step
    /// of h = 0.01 never changes a winner), alone and after a ReLU (the
    /// folded backward).
    #[test]
    fn maxpool(rows in 1usize..3, ch in 1usize..4, h in 2usize..8, w_ in 2usize..8,
               relu_below: bool, seed: u64) {
        let mut rng = Rng::new(seed);
        let pool = MaxPool2d { channels: ch, h, w: w_ };
        let n = rows * pool.input_len();
        // A shuffled ladder of values -> no ties, no value within 0.05 of
        // another or (with the offset) of zero.
        let mut x: Vec<f32> = (0..n).map(|i| 0.05 * i as f32 - 0.05 * (n / 2) as f32 + 0.025).collect();
        rng.shuffle(&mut x);
        let c = uniform(&mut rng, rows * pool.output_len(), -1.0, 1.0);
        let relu = |x: &[f32]| -> Vec<f32> {
            if relu_below { x.iter().map(|v| v.max(0.0)).collect() } else { x.to_vec() }
        };
        let mut y = vec![0.0; rows * pool.output_len()];
        let mut arg = vec![0u32; y.len()];
        pool.forward(&relu(&x), rows, &mut y, &mut arg);
        let mut dy = c.clone();
        let mut dx = vec![0.0; n];
        pool.backward(&y, &mut dy, &arg, relu_below, rows, &mut dx);
        let cx = coords(n, 2 * MAX_COORDS, &mut rng);
        let r = check_smooth(&mut x, &dx, &cx, |x| {
            let mut y = vec![0.0; rows * pool.output_len()];
            let mut arg = vec![0u32; y.len()];
            pool.forward(&relu(x), rows, &mut y, &mut arg);
            weighted_sum(&c, &y)
        });
        assert_mostly_checked(r, "maxpool dx");
    }

    /// ReLU and sigmoid derivatives (ReLU inputs at least 0.05 from the kink).
    #[test]
    fn activations(n in 1usize..60, seed: u64) {
        let mut rng = Rng::new(seed);
        let c = uniform(&mut rng, n, -1.0, 1.0);
        for act in [Activation::Relu, Activation::Sigmoid] {
            let mut x: Vec<f32> = (0..n)
                .map(|_| {
                    let m = rng.uniform(0.05, 2.0);
                    if rng.next_f32() < 0.5 { -m } else { m }
                })
                .collect();
            let f = |x: &[f32]| -> Vec<f32> {
                x.iter().map(|&v| vcortex::kernels::reference::activate(act, v)).collect()
            };
            let y = f(&x);
            let mut g = c.clone();
            activation_backward(act, &y, &mut g);
            let cx = coords(n, n, &mut rng);
            assert_mostly_checked(check_smooth(&mut x, &g, &cx, |x| weighted_sum(&c, &f(x))), "activation");
        }
    }

    /// Softmax cross-entropy, scaled by a random weight, wrt the logits.
    #[test]
    fn softmax_ce(rows in 1usize..6, classes in 2usize..12, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut logits = uniform(&mut rng, rows * classes, -3.0, 3.0);
        let labels: Vec<u8> = (0..rows).map(|_| rng.below(classes as u64) as u8).collect();
        let scale = rng.uniform(0.2, 2.0);
        let (mut p, mut g) = (vec![0.0; logits.len()], vec![0.0; logits.len()]);
        softmax_cross_entropy(&logits, &labels, classes, &mut p, &mut g, scale);
        let cx = coords(logits.len(), MAX_COORDS, &mut rng);
        let r = check_smooth(&mut logits, &g, &cx, |z| {
            let (mut p, mut g) = (vec![0.0; z.len()], vec![0.0; z.len()]);
            scale as f64 * softmax_cross_entropy(z, &labels, classes, &mut p, &mut g, 0.0)
        });
        assert_mostly_checked(r, "softmax cross-entropy");
    }

    /// Binary cross-entropy of sigmoid(logits) against targets in [0, 1].
    #[test]
    fn binary_ce(n in 1usize..80, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut logits = uniform(&mut rng, n, -4.0, 4.0);
        let targets = uniform(&mut rng, n, 0.0, 1.0);
        let scale = rng.uniform(0.2, 2.0);
        let (mut r, mut g) = (vec![0.0; n], vec![0.0; n]);
        sigmoid_binary_cross_entropy(&logits, &targets, &mut r, &mut g, scale);
        let cx = coords(n, MAX_COORDS, &mut rng);
        let res = check_smooth(&mut logits, &g, &cx, |z| {
            let (mut r, mut g) = (vec![0.0; n], vec![0.0; n]);
            scale as f64 * sigmoid_binary_cross_entropy(z, &targets, &mut r, &mut g, 0.0)
        });
        assert_mostly_checked(res, "binary cross-entropy");
    }

    /// KL sparsity beta * sum_j KL(rho || mean_rows h_j) wrt every h.
    #[test]
    fn kl_sparsity(rows in 1usize..6, units in 1usize..12, seed: u64) {
        let mut rng = Rng::new(seed);
        let sp = Sparsity { rho: rng.uniform(0.02, 0.3), beta: rng.uniform(0.1, 2.0) };
        let mut h = uniform(&mut rng, rows * units, 0.15, 0.85);
        let means = |h: &[f32]| -> Vec<f32> {
            (0..units).map(|j| (0..rows).map(|r| h[r * units + j]).sum::<f32>() / rows as f32).collect()
        };
        let mut g = vec![0.0; h.len()];
        sp.backward(&mut g, &means(&h), rows);
        let cx = coords(h.len(), MAX_COORDS, &mut rng);
        // The penalty's third derivative reaches 2 beta rho / q^3 ~ 400 at
        // q = 0.15, so h = 1e-2 would carry a truncation error h^2/6 * 400 ~
        // 7e-3; h = 2e-3 brings it to 3e-4, and the rounding term (means in
        // f32, slope <= 10) stays ~1e-6 / 4e-3 < 1e-3.
        let r = check_with_step(&mut h, &g, &cx, 2e-3, |h| (sp.cost(&means(h)), Vec::new()));
        assert_mostly_checked(r, "KL sparsity");
    }

    /// Tied autoencoder: logits = sigmoid(x W^T + b) W + b_vis; gradients of
    /// sum c*logits wrt the shared W (both uses), b and b_vis.
    #[test]
    fn tied_autoencoder(rows in 1usize..4, nv in 1usize..16, nh in 1usize..12, seed: u64) {
        let mut rng = Rng::new(seed);
        let ae = TiedAutoencoder { n_visible: nv, n_hidden: nh };
        // One buffer [W | b | b_vis] so one check covers all three.
        let (wl, total) = (nv * nh, nv * nh + nh + nv);
        let mut p = uniform(&mut rng, total, -1.0, 1.0);
        let x = uniform(&mut rng, rows * nv, 0.0, 1.0);
        let c = uniform(&mut rng, rows * nv, -1.0, 1.0);
        let forward = |p: &[f32]| -> (Vec<f32>, Vec<f32>) {
            let (w, rest) = p.split_at(wl);
            let (b, bv) = rest.split_at(nh);
            let mut h = vec![0.0; rows * nh];
            ae.encode(w, b, &x, rows, &mut h);
            let mut a = vec![0.0; rows * nv];
            ae.decode(w, bv, &h, rows, &mut a, Activation::Identity);
            (h, a)
        };
        let (h, _) = forward(&p);
        let mut grad = vec![0.0; total];
        let mut dh = vec![0.0; rows * nh];
        {
            let (dw, rest) = grad.split_at_mut(wl);
            let (db, dbv) = rest.split_at_mut(nh);
            ae.decode_backward(&p[..wl], &h, &c, rows, Some((&mut *dw, dbv, false)), Some(&mut dh));
            db.fill(0.0);
            ae.encode_backward(&x, &h, &mut dh, rows, dw, db, true);
        }
        let cp = coords(total, 2 * MAX_COORDS, &mut rng);
        assert_mostly_checked(check_smooth(&mut p, &grad, &cp, |p| weighted_sum(&c, &forward(p).1)), "tied AE");
    }
}

/// The checker must reject wrong gradients: scaled, one coordinate off, or
/// with the tied decoder's share left out.
#[test]
fn checker_rejects_broken_gradients() {
    let mut rng = Rng::new(5);
    let (rows, n_in, n_out) = (3, 6, 4);
    let d = Dense::new(n_in, n_out, Activation::Sigmoid);
    let mut w = uniform(&mut rng, n_in * n_out, -1.0, 1.0);
    let b = uniform(&mut rng, n_out, -0.5, 0.5);
    let x = uniform(&mut rng, rows * n_in, -1.0, 1.0);
    let c = uniform(&mut rng, rows * n_out, -1.0, 1.0);
    let mut y = vec![0.0; rows * n_out];
    d.forward(&w, &b, &x, rows, &mut y);
    let mut dy = c.clone();
    let (mut dw, mut db) = (vec![0.0; w.len()], vec![0.0; n_out]);
    d.backward(&w, &x, &y, &mut dy, rows, &mut dw, &mut db, None);
    let all: Vec<usize> = (0..w.len()).collect();
    let eval = |w: &[f32]| {
        let mut y = vec![0.0; rows * n_out];
        d.forward(w, &b, &x, rows, &mut y);
        weighted_sum(&c, &y)
    };
    // The correct gradient passes...
    assert!(check_smooth(&mut w, &dw, &all, eval).is_ok());
    // ...a 10% scale error fails...
    let scaled: Vec<f32> = dw.iter().map(|g| g * 1.1).collect();
    assert!(check_smooth(&mut w, &scaled, &all, eval).is_err());
    // ...one wrong coordinate fails...
    let mut one_off = dw.clone();
    let i = (0..dw.len())
        .max_by(|&a, &b| dw[a].abs().total_cmp(&dw[b].abs()))
        .unwrap();
    one_off[i] = -one_off[i];
    assert!(check_smooth(&mut w, &one_off, &all, eval).is_err());
    // ...and the sigmoid derivative left out fails.
    let mut raw = vec![0.0; w.len()];
    let id = Dense::new(n_in, n_out, Activation::Identity);
    let mut dy = c.clone();
    id.backward(&w, &x, &y, &mut dy, rows, &mut raw, &mut db, None);
    assert!(check_smooth(&mut w, &raw, &all, eval).is_err());
}

/// A pattern change (a ReLU crossing its kink) is skipped, not compared.
#[test]
fn checker_skips_kinks() {
    let relu = |x: &[f32]| (x[0].max(0.0) as f64, positive_mask(x));
    // At x = 0.004 the step h crosses the kink, h / 10 does not.
    let r = check(&mut [0.004f32], &[1.0], &[0], relu).unwrap();
    assert_eq!((r.checked, r.skipped), (1, 0));
    assert!(check(&mut [0.004f32], &[0.5], &[0], relu).is_err());
    // At x = 0.0004 both steps cross it: skipped.
    let r = check(&mut [0.0004f32], &[1.0], &[0], relu).unwrap();
    assert_eq!((r.checked, r.skipped), (0, 1));
}
