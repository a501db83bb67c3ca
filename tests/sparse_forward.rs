//! The first layers' sparse-input forward passes (`Dense::forward_sparse_input`,
//! `TiedAutoencoder::encode_sparse_input`) against the dense forward on real
//! MNIST chunks, clean and with the DAE's 10% masking noise, for the chunk
//! sizes the trainer uses (64 rows per thread) and a ragged one; the same
//! bits on a repeated call (determinism); and the stack's first encoder
//! giving the same bits from its prebuilt transposed weight as without it.

use std::path::Path;
use vcortex::data::{CacheLocation, Dataset, LoadOptions};
use vcortex::kernels::gemm::Activation;
use vcortex::kernels::noise::mask_noise;
use vcortex::kernels::rng::Rng;
use vcortex::kernels::team::Team;
use vcortex::model::DaeStack;
use vcortex::nn::{Dense, TiedAutoencoder};

fn first_images(count: usize) -> Vec<f32> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let options = LoadOptions {
        cache: vec![CacheLocation::Memory],
    };
    let dataset = Dataset::load_with(&dir, &options).expect("shipped MNIST loads");
    dataset.train().images[..count * 784]
        .iter()
        .map(|&b| b as f32 / 255.0)
        .collect()
}

/// Glorot-uniform-like weights, +-4 sqrt(6 / (n_in + n_out)) as the study's
/// sigmoid layers use, and small biases.
fn weights(n_in: usize, n_out: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let bound = 4.0 * (6.0 / (n_in + n_out) as f32).sqrt();
    let w = (0..n_in * n_out)
        .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
        .collect();
    let b = (0..n_out).map(|_| (rng.next_f32() - 0.5) * 0.2).collect();
    (w, b)
}

/// Both results are float sums of the same k products (zero ones aside) in
/// different orders, each within k u S of the exact sum (u = 2^-24, S =
/// sum_p |x_p w_p| + |b|), so they differ by at most 2 k u S before the
/// activation, whose slope is at most 1 (ReLU; sigmoid 1/4); 1e-6 covers
/// the sigmoid's own rounding.
fn assert_close(sparse: &[f32], dense: &[f32], x: &[f32], w: &[f32], b: &[f32], what: &str) {
    let n = b.len();
    let k = w.len() / n;
    for (idx, (&s, &d)) in sparse.iter().zip(dense).enumerate() {
        let (i, j) = (idx / n, idx % n);
        let sum_abs: f64 = (0..k)
            .map(|p| (x[i * k + p] as f64 * w[j * k + p] as f64).abs())
            .sum::<f64>()
            + b[j].abs() as f64;
        let tol = 1e-6 + 2.0 * k as f64 * (f32::EPSILON as f64 / 2.0) * sum_abs;
        assert!(
            ((s - d).abs() as f64) <= tol,
            "{what} [{idx}]: sparse {s}, dense {d}, tol {tol}"
        );
    }
}

#[test]
fn sparse_first_layers_equal_the_dense_forward_on_mnist_chunks() {
    let images = first_images(128);
    let mut noisy = vec![0.0f32; images.len()];
    mask_noise(&images, &mut noisy, 0.9, &mut Rng::new(3));
    let dae = TiedAutoencoder {
        n_visible: 784,
        n_hidden: 900,
    };
    let (w_dae, b_dae) = weights(784, 900, 1);
    let mlp_fc1 = Dense::new(784, 900, Activation::Sigmoid);
    let relu_fc = Dense::new(784, 100, Activation::Relu);
    let (w_relu, b_relu) = weights(784, 100, 2);
    for x in [&images, &noisy] {
        for (start, rows) in [(0usize, 64usize), (64, 64), (10, 13)] {
            let x = &x[start * 784..(start + rows) * 784];
            let (mut dense, mut sparse) = (vec![0.0f32; rows * 900], vec![f32::NAN; rows * 900]);
            dae.encode(&w_dae, &b_dae, x, rows, &mut dense);
            dae.encode_sparse_input(&w_dae, &b_dae, x, rows, &mut sparse, None);
            assert_close(&sparse, &dense, x, &w_dae, &b_dae, "dae encoder");
            let again = sparse.clone();
            dae.encode_sparse_input(&w_dae, &b_dae, x, rows, &mut sparse, None);
            assert!(
                again
                    .iter()
                    .zip(&sparse)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "a repeated call changed bits"
            );

            mlp_fc1.forward(&w_dae, &b_dae, x, rows, &mut dense);
            mlp_fc1.forward_sparse_input(&w_dae, &b_dae, x, rows, &mut sparse);
            assert_close(&sparse, &dense, x, &w_dae, &b_dae, "mlp fc1");

            let (mut dense, mut sparse) = (vec![0.0f32; rows * 100], vec![f32::NAN; rows * 100]);
            relu_fc.forward(&w_relu, &b_relu, x, rows, &mut dense);
            relu_fc.forward_sparse_input(&w_relu, &b_relu, x, rows, &mut sparse);
            assert_close(&sparse, &dense, x, &w_relu, &b_relu, "relu layer");
        }
    }
}

/// Layer 1 of the stack frozen (training layer 2 or 3): the prebuilt W1^T
/// is built for layers >= 2 only, gives the same bits for h1 and h2 as the
/// per-call transposition (clean images, 70 rows: a ragged last tile), and
/// is dropped by any change through `params_mut` or to layer 1's tensors,
/// but kept while layer 2's change.
#[test]
fn stack_encoder_reads_the_frozen_layers_transposed_weight() {
    let images = first_images(70);
    let team = Team::new(2).expect("a team of 2");
    let mut stack = DaeStack::study(5);
    let (h1_own, h2_own) = (stack.hidden(1, &images), stack.hidden(2, &images));
    stack.prepare_batch(1, &team);
    assert!(!stack.layer1_transposed_is_current(), "layer 1 trains W1");
    stack.prepare_batch(2, &team);
    assert!(stack.layer1_transposed_is_current());
    let (h1, h2) = (stack.hidden(1, &images), stack.hidden(2, &images));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&h1), bits(&h1_own));
    assert_eq!(bits(&h2), bits(&h2_own));
    // Training layer 2 keeps it; layer 1's update or params_mut drop it.
    stack.layer_params_mut(2)[0] += 1.0;
    assert!(stack.layer1_transposed_is_current());
    // W1[0, 406]: unit 0's weight on a centre pixel (the corner pixels
    // are zero in every image, so the sparse product never reads them).
    let centre = 14 * 28 + 14;
    let original = stack.params()[centre];
    stack.layer_params_mut(1)[centre] = original + 1.0;
    assert!(!stack.layer1_transposed_is_current());
    stack.prepare_batch(3, &team);
    assert!(stack.layer1_transposed_is_current());
    let h1_changed = stack.hidden(1, &images);
    stack.params_mut()[centre] = original;
    assert!(!stack.layer1_transposed_is_current());
    // The rebuilt W^T followed the changed W1 (unit 0's outputs moved),
    // and with the change undone the first bits come back.
    assert_ne!(bits(&h1_changed), bits(&h1_own));
    stack.prepare_batch(2, &team);
    assert_eq!(bits(&stack.hidden(1, &images)), bits(&h1_own));
}
