//! The fused gradient-and-update phase of the MLP and the DAE layers (the
//! engine computes weight gradients block by block from the chunks' deltas)
//! against a plain reference: the full-batch gradient from one workspace
//! (`loss_and_gradient`) and the reference optimizer kernels.
//! Run: `cargo test --test train_fused`.

use vcortex::data::Split;
use vcortex::kernels::reference;
use vcortex::kernels::rng::Rng;
use vcortex::model::{Classifier, DaeStack, Mlp};
use vcortex::nn::{u8_to_unit, Sparsity};
use vcortex::train::{
    pretrain_dae, train_classifier, DaeConfig, DaeScheme, Optimizer, TrainConfig,
};

const PIXELS: usize = 64;
const CLASSES: usize = 4;

/// `n` images with about `zeros_in_10` tenths of their pixels exactly 0
/// (MNIST has 8: the first layer then takes the sparse weight gradient,
/// which needs 7 or more), and their labels.
fn data(n: usize, seed: u64, zeros_in_10: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng::new(seed);
    let images = (0..n * PIXELS)
        .map(|_| {
            if rng.below(10) < zeros_in_10 {
                0
            } else {
                1 + rng.below(255) as u8
            }
        })
        .collect();
    let labels = (0..n).map(|_| rng.below(CLASSES as u64) as u8).collect();
    (images, labels)
}

fn split<'a>(images: &'a [u8], labels: &'a [u8]) -> Split<'a> {
    Split::in_memory(images, labels, 8, 8)
}

/// Every image is one batch: each epoch is one step on the same batch (in
/// another order, which changes the gradient's rounding only).
fn config(
    dir: &std::path::Path,
    batch: usize,
    threads: usize,
    optimizer: Optimizer,
) -> TrainConfig {
    let mut cfg = TrainConfig::new("fused", dir);
    cfg.epochs = 2;
    cfg.batch_size = batch;
    cfg.train_count = Some(batch);
    cfg.test_count = Some(8);
    cfg.lr = 0.1;
    cfg.decay = 1e-2;
    cfg.optimizer = optimizer;
    cfg.threads = threads;
    cfg.seed = 3;
    cfg.timing_only = true;
    cfg
}

/// One reference step of `opt` on `p` (state `s`) with gradient `g`.
fn reference_step(opt: Optimizer, p: &mut [f32], s: &mut [f32], g: &[f32], lr: f32, decay: f32) {
    match opt {
        Optimizer::Sgd => reference::sgd_update(p, g, lr, decay),
        Optimizer::Momentum { gamma } => reference::momentum_update(p, s, g, lr, decay, gamma),
        Optimizer::RmsProp { rho, eps } => reference::rmsprop_update(p, s, g, lr, decay, rho, eps),
    }
}

/// The fused path sums the batch in another order and folds the decay into
/// the GEMM's beta, so it agrees with the reference to f32 rounding: with
/// lr 0.1 and gradients of order 1 over two steps that is ~1e-6; a missing
/// or doubled term (a chunk, the decoder term, a block) is off by 1e-3 or
/// more.
fn assert_close(fused: &[f32], reference: &[f32], what: &str) {
    assert_eq!(fused.len(), reference.len());
    let (i, err) = fused
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0.0f32), |m, (i, e)| if e > m.1 { (i, e) } else { m });
    assert!(
        err < 2e-5,
        "{what}: parameter {i} differs by {err} ({} vs {})",
        fused[i],
        reference[i]
    );
}

const OPTIMIZERS: [Optimizer; 3] = [
    Optimizer::Sgd,
    Optimizer::Momentum { gamma: 0.9 },
    Optimizer::RmsProp {
        rho: 0.9,
        eps: 1e-6,
    },
];

/// MLP: fc1 has 1100 units (3 blocks on 3 threads: 372, 372 and a ragged
/// 356) and the model is large enough for the parallel phase; 24 rows on 3
/// threads. The 2-image batch on 3 threads leaves a chunk empty. Sparse
/// images (fc1's weight gradient from the listed non-zeros) and dense ones.
#[test]
fn mlp_update_matches_the_full_batch_reference() {
    for (zeros, sizes, batch) in [
        (8, &[PIXELS, 1100, 30, CLASSES][..], 24),
        (0, &[PIXELS, 1100, 30, CLASSES][..], 24),
        (8, &[PIXELS, 20, CLASSES][..], 2),
    ] {
        let (imgs, labs) = data(24, 1, zeros);
        let train = split(&imgs, &labs);
        for opt in OPTIMIZERS {
            let dir = tempfile::tempdir().unwrap();
            let cfg = config(dir.path(), batch, 3, opt);
            let mut fused = Mlp::new(sizes, 5);
            let mut plain = fused.clone();
            train_classifier(&mut fused, train, train, &cfg, None).unwrap();

            let n = plain.params().len();
            let (mut grad, mut state) = (vec![0.0; n], vec![0.0; n]);
            let mut ws = plain.workspace(batch);
            for (i, img) in imgs.chunks_exact(PIXELS).take(batch).enumerate() {
                u8_to_unit(
                    img,
                    &mut plain.input_mut(&mut ws)[i * PIXELS..(i + 1) * PIXELS],
                );
            }
            for _ in 0..cfg.epochs {
                plain.loss_and_gradient(&mut ws, &labs[..batch], 1.0 / batch as f32, &mut grad);
                reference_step(
                    opt,
                    plain.params_mut(),
                    &mut state,
                    &grad,
                    cfg.lr,
                    cfg.decay,
                );
            }
            assert_close(
                fused.params(),
                plain.params(),
                &format!("mlp {sizes:?} {opt:?}, {zeros}/10 zeros"),
            );
        }
    }
}

/// DAE layers (on sparse images: layer 1's encoder term from the listed
/// non-zeros): layer 1 of 64-1100 (parallel phase, ragged last block) and
/// layer 2 of 64-200-130 with the KL penalty, in both schemes. Keep
/// probability 1 makes the corruption the identity, so the reference needs
/// no noise streams.
#[test]
fn dae_update_matches_the_full_batch_reference() {
    let (imgs, labs) = data(24, 2, 8);
    let train = split(&imgs, &labs);
    let batch = 24;
    let cases = [
        (
            &[PIXELS, 1100][..],
            1,
            DaeScheme::ImageSpace,
            None,
            OPTIMIZERS[0],
        ),
        (
            &[PIXELS, 200, 130][..],
            2,
            DaeScheme::ImageSpace,
            Some(Sparsity::STUDY),
            OPTIMIZERS[1],
        ),
        (
            &[PIXELS, 200, 130][..],
            2,
            DaeScheme::LayerLocal,
            Some(Sparsity::STUDY),
            OPTIMIZERS[0],
        ),
        (
            &[PIXELS, 200, 130][..],
            2,
            DaeScheme::ImageSpace,
            None,
            OPTIMIZERS[2],
        ),
    ];
    for (sizes, layer, scheme, sparsity, opt) in cases {
        let what = format!("dae {sizes:?} layer {layer} {scheme:?} {sparsity:?} {opt:?}");
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), batch, 3, opt);
        let dae = DaeConfig {
            layer,
            scheme,
            keep_prob: 1.0,
            sparsity,
        };
        let mut fused = DaeStack::new(sizes, 6);
        let mut plain = fused.clone();
        pretrain_dae(&mut fused, &dae, train, train, &cfg, None).unwrap();

        let range = plain.layer_range(layer);
        let (mut grad, mut state) = (vec![0.0; range.len()], vec![0.0; range.len()]);
        let mut ws = plain.workspace(batch);
        for (i, img) in imgs.chunks_exact(PIXELS).take(batch).enumerate() {
            u8_to_unit(img, &mut ws.clean[i * PIXELS..(i + 1) * PIXELS]);
        }
        ws.noisy.copy_from_slice(&ws.clean);
        let units = sizes[layer];
        for _ in 0..cfg.epochs {
            match scheme {
                DaeScheme::ImageSpace => plain.encode(layer, &mut ws, batch, true),
                DaeScheme::LayerLocal => {
                    plain.encode_local(layer, &mut ws, batch, |_, c, n| n.copy_from_slice(c))
                }
            }
            plain.hidden_sums(layer, &mut ws, batch);
            let rho_hat: Vec<f32> = ws.col_sums()[..units]
                .iter()
                .map(|s| s / batch as f32)
                .collect();
            let sp = sparsity.map(|sp| (sp, &rho_hat[..], batch));
            plain.loss_and_gradient(layer, &mut ws, batch, 1.0 / batch as f32, sp, &mut grad);
            let params = &mut plain.params_mut()[range.clone()];
            reference_step(opt, params, &mut state, &grad, cfg.lr, cfg.decay);
        }
        assert_close(fused.params(), plain.params(), &what);
    }
}
