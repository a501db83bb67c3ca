//! Part B: the stacked denoising autoencoder (B1), the five-layer classifier
//! fine-tuned from it (B2), the sparse variant (B3), and the comparison with
//! the CNNs on the first 12000/2000 images.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::data::Dataset;
use crate::kernels::gemm::{sgemm, Trans};
use crate::kernels::noise::mask_noise;
use crate::kernels::rng::Rng;
use crate::model::{DaeStack, Mlp};
use crate::nn::Sparsity;
use crate::plot::{Colormap, Normalise, Tile};
use crate::train::{
    data_fingerprint, final_accuracy, pretrain_dae, train_classifier, Checkpoint, DaeConfig,
    EpochMetrics, Optimizer,
};

use super::cnn::SUBSET_RUNS;
use super::figures::{self, square_side, square_tiles, tiles};
use super::{
    epochs, figure, group_summary, images_f32, merge_summary, reference, sizes, stage_sizes,
    train_config, DaeSchemeArg, ExpError, Experiment, Options, Sizes,
};

/// The study's settings (docs/STUDY.md, part B).
const STACK: [usize; 4] = [784, 900, 625, 400];
const UNDERCOMPLETE: [usize; 2] = [784, 169];
const CLASSES: usize = 10;
pub(super) const PRETRAIN_EPOCHS: usize = 25;
pub(super) const FINETUNE_EPOCHS: usize = 25;
pub(super) const QUICK_PRETRAIN_EPOCHS: usize = 2;
pub(super) const QUICK_FINETUNE_EPOCHS: usize = 3;
const LR: f32 = 0.1;
/// The seed names no weight decay for part B.
const DECAY: f32 = 0.0;
const KEEP_PROB: f32 = 0.9;
/// Momentum of B3's layer-wise pre-training (the study's; `--momentum`
/// replaces it).
const B3_MOMENTUM: f32 = 0.1;
/// Units and test images shown in the weight and activation figures.
const SHOWN: usize = 100;

/// Pre-trains every layer of `stack` in turn, each in `dir/layerK`.
#[allow(clippy::too_many_arguments)]
fn pretrain_stack(
    data: &Dataset,
    opts: &Options,
    stack: &mut DaeStack,
    name: &str,
    title: &str,
    dir: &Path,
    sparsity: Option<Sparsity>,
    optimizer: Optimizer,
    sizes: Sizes,
) -> Result<Vec<(String, Vec<EpochMetrics>)>, ExpError> {
    let mut layers = Vec::new();
    // Whether a layer below trained in this call: a checkpoint of a higher
    // layer then holds a stack trained on the old lower layers (and would
    // restore them), so that layer starts over instead of resuming.
    let mut below_changed = false;
    for layer in 1..=stack.layers() {
        let (n_in, n_out) = (stack.sizes()[layer - 1], stack.sizes()[layer]);
        let layer_dir = dir.join(format!("layer{layer}"));
        let mut cfg = train_config(
            opts,
            &format!("{name}-layer{layer}"),
            &format!("{title}, layer {layer} ({n_in}-{n_out})"),
            layer_dir.clone(),
            epochs(opts, PRETRAIN_EPOCHS, QUICK_PRETRAIN_EPOCHS),
            LR,
            DECAY,
            optimizer,
            sizes,
        );
        let dae = DaeConfig {
            layer,
            scheme: opts.scheme.unwrap_or(DaeSchemeArg::ImageSpace).into(),
            keep_prob: KEEP_PROB,
            sparsity,
        };
        if below_changed && cfg.resume {
            crate::note!(
                "note: {} is not resumed: the layers below it changed since its checkpoint",
                layer_dir.display()
            );
            cfg.resume = false;
        }
        let report = pretrain_dae(
            stack,
            &dae,
            data.train(),
            data.test(),
            &cfg,
            None::<&mut dyn FnMut(&EpochMetrics, &DaeStack) -> ControlFlow<()>>,
        )?;
        below_changed |= report.metrics.len() > report.resumed_epochs;
        let mut extra = Map::new();
        extra.insert("model".into(), json!("dae"));
        extra.insert(
            "results".into(),
            json!({ "final training cost (nats per image)": report.metrics.last().map(|m| m.train_cost) }),
        );
        merge_summary(&layer_dir, extra)?;
        layers.push((format!("layer {layer} ({n_in}-{n_out})"), report.metrics));
    }
    Ok(layers)
}

/// Loads a stack of `sizes` from the last layer's checkpoint of `dir`,
/// refusing one pre-trained on another dataset than `data`.
fn load_stack(
    dir: &Path,
    sizes: &[usize],
    seed: u64,
    stage: &str,
    data: &Dataset,
) -> Result<DaeStack, ExpError> {
    let path = dir
        .join(format!("layer{}", sizes.len() - 1))
        .join("checkpoint.bin");
    if !path.is_file() {
        return Err(ExpError::Missing {
            what: "the pre-trained stack".into(),
            path,
            hint: format!("run `vcortex run {stage}` first, with the same --out"),
        });
    }
    let ck = Checkpoint::load(&path)?;
    let here = data_fingerprint(&data.train(), &data.test());
    if here.differs_from_dataset_in(&ck.settings) {
        return Err(ExpError::Config(format!(
            "the pre-trained stack in {} was trained on another dataset than {}: run `vcortex \
             run {stage}` again with this --data (and another --out to keep both)",
            path.display(),
            data.dir().display()
        )));
    }
    let mut stack = DaeStack::new(sizes, seed);
    if ck.params.len() != stack.params().len() {
        return Err(ExpError::Config(format!(
            "{} holds {} parameters, the stack {:?} needs {}",
            path.display(),
            ck.params.len(),
            sizes,
            stack.params().len()
        )));
    }
    stack.params_mut().copy_from_slice(&ck.params);
    Ok(stack)
}

/// Unit j of `layer` as an image: w_j projected linearly through the encoders
/// below (W_1^T ... W_{k-1}^T w_j), nonlinearities ignored.
fn weights_in_image_space(stack: &DaeStack, layer: usize, units: usize) -> Vec<f32> {
    let sizes = stack.sizes();
    let units = units.min(sizes[layer]);
    let w = stack.tensor(&format!("dae{layer}.weight"));
    let mut cur = w[..units * sizes[layer - 1]].to_vec();
    for below in (1..layer).rev() {
        let (n_in, n_out) = (sizes[below - 1], sizes[below]);
        let wb = stack.tensor(&format!("dae{below}.weight")); // n_out x n_in
        let mut next = vec![0.0f32; units * n_in];
        // (units x n_out) * (n_out x n_in)
        sgemm(
            Trans::N,
            Trans::N,
            units,
            n_in,
            n_out,
            1.0,
            &cur,
            n_out,
            wb,
            n_in,
            0.0,
            &mut next,
            n_in,
        );
        cur = next;
    }
    cur
}

/// Weights, activations and reconstructions of a trained stack.
fn stack_figures(
    dir: &Path,
    title: &str,
    stack: &DaeStack,
    data: &Dataset,
    seed: u64,
) -> Result<Vec<Value>, ExpError> {
    let mut figs = Vec::new();
    let (iw, ih) = (data.train().cols, data.train().rows);
    for layer in 1..=stack.layers() {
        let n = stack.sizes()[layer];
        let shown = SHOWN.min(n);
        let w = weights_in_image_space(stack, layer, shown);
        let file = format!("weights_layer{layer}.png");
        figures::grid(
            &dir.join(&file),
            &format!("{title}: weights of {shown} units of layer {layer}"),
            tiles(&w, iw, ih, shown, |_| None),
            10,
            2,
            Normalise::PerTile,
            Colormap::Gray,
        )?;
        let how = if layer == 1 {
            format!("as {iw}x{ih} images")
        } else {
            let through = if layer == 2 {
                "W1^T w".to_string()
            } else {
                format!("W1^T..W{}^T w", layer - 1)
            };
            format!("projected to image space through the encoders below ({through}, nonlinearities ignored)")
        };
        figs.push(figure(&file, &format!("Weights of the first {shown} units of layer {layer}, {how}; each unit scaled on its own.")));
    }
    let test = data.test();
    if test.count == 0 {
        // The rest shows test images; a dataset without any has none to show.
        return Ok(figs);
    }
    let count = SHOWN.min(test.count);
    let images = images_f32(test, 0, count);
    for layer in 1..=stack.layers() {
        let n = stack.sizes()[layer];
        let s = square_side(n);
        let t = square_tiles(&stack.hidden(layer, &images), n);
        let file = format!("activations_layer{layer}.png");
        figures::grid(
            &dir.join(&file),
            &format!("{title}: layer {layer} activations of {count} test images"),
            t,
            10,
            3,
            Normalise::Fixed(0.0, 1.0),
            Colormap::Gray,
        )?;
        figs.push(figure(&file, &format!(
            "Activations of layer {layer} ({n} sigmoid units, shown as a {s}x{s} square each, black 0, white 1) for the first {count} test images (clean input)."
        )));
    }
    // Reconstructions of corrupted test images through each depth.
    let shown = 10.min(test.count);
    let clean = images_f32(test, 0, shown);
    let mut noisy = vec![0.0f32; clean.len()];
    mask_noise(&clean, &mut noisy, KEEP_PROB, &mut Rng::stream(seed, 0xF16));
    let mut rows = vec![
        ("clean".to_string(), tiles(&clean, iw, ih, shown, |_| None)),
        (
            "corrupted (10% zeroed)".to_string(),
            tiles(&noisy, iw, ih, shown, |_| None),
        ),
    ];
    for layer in 1..=stack.layers() {
        let r = stack.reconstruct(layer, &noisy);
        rows.push((
            format!("through layer {layer}"),
            tiles(&r, iw, ih, shown, |_| None),
        ));
    }
    figures::rows(
        &dir.join("reconstructions.png"),
        &format!("{title}: reconstructions of corrupted test images"),
        rows,
        56,
        Normalise::Fixed(0.0, 1.0),
    )?;
    figs.push(figure(
        "reconstructions.png",
        "Test images, the same with 10% of pixels zeroed, and their reconstructions decoded back to image space from each layer.",
    ));
    Ok(figs)
}

fn layer_results(layers: &[(String, Vec<EpochMetrics>)]) -> Map<String, Value> {
    let mut results = Map::new();
    for (label, m) in layers {
        results.insert(
            format!("{label}: final training cost"),
            json!(m.last().map(|e| e.train_cost)),
        );
        results.insert(
            format!("{label}: final test reconstruction cost"),
            json!(m.last().and_then(|e| e.test_cost)),
        );
    }
    results
}

fn wall(layers: &[(String, Vec<EpochMetrics>)]) -> f64 {
    layers
        .iter()
        .flat_map(|(_, m)| m.iter().map(|e| e.seconds))
        .sum()
}

pub fn b1(data: &Dataset, opts: &Options) -> Result<Vec<Map<String, Value>>, ExpError> {
    let sizes = sizes(data, opts, None, None)?;
    let dir = opts.out_dir.join("b1");
    let title = "B1: stacked denoising autoencoder 784-900-625-400";
    let mut stack = DaeStack::new(&STACK, opts.seed);
    let layers = pretrain_stack(
        data,
        opts,
        &mut stack,
        "b1",
        title,
        &dir,
        None,
        Optimizer::Sgd,
        sizes,
    )?;
    let mut figs = Vec::new();
    figures::layer_costs(
        &dir.join("layer_costs.png"),
        &format!("{title}: cost per layer"),
        &layers,
    )?;
    figs.push(figure("layer_costs.png", "Training cost (cross-entropy of the image-space reconstruction against the clean image, per image) and the test reconstruction cost of each layer against epochs."));
    figs.extend(stack_figures(&dir, "B1", &stack, data, opts.seed)?);

    // The undercomplete single layer of 169 units shown beside it.
    let under_dir = opts.out_dir.join("b1-undercomplete");
    let under_title = "B1: undercomplete denoising autoencoder 784-169";
    let mut under = DaeStack::new(&UNDERCOMPLETE, opts.seed);
    let under_layers = pretrain_stack(
        data,
        opts,
        &mut under,
        "b1-undercomplete",
        under_title,
        &under_dir,
        None,
        Optimizer::Sgd,
        sizes,
    )?;
    let w = weights_in_image_space(&under, 1, UNDERCOMPLETE[1]);
    figures::grid(
        &under_dir.join("weights.png"),
        &format!("{under_title}: weights of all 169 units"),
        tiles(
            &w,
            data.train().cols,
            data.train().rows,
            UNDERCOMPLETE[1],
            |_| None,
        ),
        13,
        2,
        Normalise::PerTile,
        Colormap::Gray,
    )?;
    let mut extra = group_summary(opts, "b1-undercomplete", under_title, "dae");
    extra.insert(
        "figures".into(),
        json!([figure(
            "weights.png",
            "Weights of the 169 hidden units as 28x28 images (after the full 25 epochs the seed report sees pen strokes and digit parts in them)."
        )]),
    );
    extra.insert(
        "results".into(),
        Value::Object(layer_results(&under_layers)),
    );
    extra.insert(
        "reference".into(),
        reference(&[("weights", "look like pen strokes and digits")]),
    );
    extra.insert("wall_seconds".into(), json!(wall(&under_layers)));
    merge_summary(&under_dir, extra)?;

    let mut extra = group_summary(opts, "b1", title, "dae");
    extra.insert("settings".into(), json!({
        "layers": "784-900-625-400, sigmoid, tied weights",
        "scheme": match opts.scheme.unwrap_or(DaeSchemeArg::ImageSpace) {
            DaeSchemeArg::ImageSpace => "image space (layer k decoded back through the lower decoders)",
            DaeSchemeArg::LayerLocal => "layer-local (each layer reconstructs its own clean input)",
        },
        "corruption": "binomial keep-mask p = 0.9, no rescaling",
        "epochs per layer": epochs(opts, PRETRAIN_EPOCHS, QUICK_PRETRAIN_EPOCHS),
        "learning rate": opts.lr.unwrap_or(LR),
        "batch size": opts.batch_size.unwrap_or(128),
        "train images": sizes.train,
        "seed": opts.seed,
    }));
    extra.insert("figures".into(), Value::Array(figs));
    extra.insert("results".into(), Value::Object(layer_results(&layers)));
    extra.insert(
        "reference".into(),
        reference(&[
            ("layer 1 (784-900): final training cost", "about 60"),
            (
                "layer 2 (900-625): final training cost",
                "about 60 (a tiny bit above layer 1)",
            ),
            (
                "layer 3 (625-400): final training cost",
                "about 60 (a tiny bit above layer 1)",
            ),
        ]),
    );
    extra.insert("wall_seconds".into(), json!(wall(&layers)));
    let summary = merge_summary(&dir, extra)?;
    Ok(vec![summary])
}

/// Fine-tunes a five-layer classifier; returns its metrics.
#[allow(clippy::too_many_arguments)]
fn finetune(
    data: &Dataset,
    opts: &Options,
    mut model: Mlp,
    name: &str,
    title: &str,
    dir: PathBuf,
    sizes: Sizes,
    reference: Value,
) -> Result<(Map<String, Value>, Vec<EpochMetrics>), ExpError> {
    let cfg = train_config(
        opts,
        name,
        title,
        dir.clone(),
        epochs(opts, FINETUNE_EPOCHS, QUICK_FINETUNE_EPOCHS),
        LR,
        DECAY,
        Optimizer::Sgd,
        sizes,
    );
    let report = train_classifier(
        &mut model,
        data.train(),
        data.test(),
        &cfg,
        None::<&mut dyn FnMut(&EpochMetrics, &Mlp) -> ControlFlow<()>>,
    )?;
    figures::learning_curves(&dir.join("curves.png"), title, &report.metrics)?;
    let mut extra = Map::new();
    extra.insert("model".into(), json!("mlp"));
    extra.insert("reference".into(), reference);
    extra.insert(
        "figures".into(),
        json!([figure(
            "curves.png",
            "Test accuracy, and training and test cross-entropy (log scale), against epochs."
        )]),
    );
    Ok((merge_summary(&dir, extra)?, report.metrics))
}

/// The five-layer classifier: the B1 stack plus the softmax layer.
pub(super) fn five_layer_sizes() -> Vec<usize> {
    let mut s = STACK.to_vec();
    s.push(CLASSES);
    s
}

pub fn b2(data: &Dataset, opts: &Options) -> Result<Vec<Map<String, Value>>, ExpError> {
    let sizes = sizes(data, opts, None, None)?;
    let stack = load_stack(&opts.out_dir.join("b1"), &STACK, opts.seed, "b1", data)?;
    let dir = opts.out_dir.join("b2");
    let (pre, pre_m) = finetune(
        data,
        opts,
        Mlp::from_dae_stack(&stack, CLASSES, opts.seed),
        "b2-pretrained",
        "B2: five-layer classifier 784-900-625-400-10, pre-trained by B1",
        dir.join("pretrained"),
        sizes,
        reference(&[(
            "first epoch",
            "starts at a very high accuracy and a low error; smooth learning",
        )]),
    )?;
    let (rnd, rnd_m) = finetune(
        data,
        opts,
        Mlp::new(&five_layer_sizes(), opts.seed),
        "b2-random",
        "B2: five-layer classifier 784-900-625-400-10, random initialisation",
        dir.join("random"),
        sizes,
        reference(&[(
            "comparison",
            "worse than the pre-trained network, noisier weights",
        )]),
    )?;
    let runs = vec![
        ("pre-trained (B1)".to_string(), pre_m),
        ("random init".to_string(), rnd_m),
    ];
    figures::compare_runs(
        &dir.join("compare.png"),
        "B2: pre-trained vs randomly initialised five-layer classifier",
        &runs,
    )?;
    let mut extra = group_summary(
        opts,
        "b2",
        "B2: five-layer classifier from the B1 stack vs from random initialisation",
        "mlp",
    );
    extra.insert(
        "figures".into(),
        json!([figure(
            "compare.png",
            "Test accuracy and test cross-entropy of the two classifiers against epochs."
        )]),
    );
    extra.insert(
        "results".into(),
        json!({
            "pre-trained: epoch 1 accuracy": runs[0].1.first().and_then(|m| m.test_accuracy),
            "pre-trained: final accuracy": final_accuracy(&runs[0].1),
            "random init: epoch 1 accuracy": runs[1].1.first().and_then(|m| m.test_accuracy),
            "random init: final accuracy": final_accuracy(&runs[1].1),
        }),
    );
    extra.insert(
        "reference".into(),
        reference(&[
            (
                "pre-trained: epoch 1 accuracy",
                "very high from the first epoch",
            ),
            (
                "random init: final accuracy",
                "below the pre-trained network",
            ),
        ]),
    );
    extra.insert("wall_seconds".into(), json!(wall(&runs)));
    merge_summary(&dir, extra)?;
    Ok(vec![pre, rnd])
}

/// B3. With `compare_with_b1`, layer 1 is drawn beside b1's when b1's stack
/// exists; a study training b1 beside b3 passes false and calls
/// [`compare_b3_with_b1`] once both have ended.
pub fn b3(
    data: &Dataset,
    opts: &Options,
    compare_with_b1: bool,
) -> Result<Vec<Map<String, Value>>, ExpError> {
    let sizes = sizes(data, opts, None, None)?;
    let dir = opts.out_dir.join("b3");
    // --momentum replaces the study's 0.1 here (and only here).
    let gamma = opts.momentum.unwrap_or(B3_MOMENTUM);
    let title = &format!(
        "B3: sparse stacked denoising autoencoder (KL rho 0.05, beta 0.5, momentum {gamma})"
    );
    let mut stack = DaeStack::new(&STACK, opts.seed);
    let layers = pretrain_stack(
        data,
        opts,
        &mut stack,
        "b3",
        "B3: sparse DAE",
        &dir,
        Some(Sparsity::STUDY),
        Optimizer::Momentum { gamma: B3_MOMENTUM },
        sizes,
    )?;
    let mut figs = Vec::new();
    figures::layer_costs(
        &dir.join("layer_costs.png"),
        "B3: cost per layer (training cost with the KL penalty, test cost without)",
        &layers,
    )?;
    figs.push(figure("layer_costs.png", "Training cost (image-space cross-entropy plus the KL penalty) and test reconstruction cost (no penalty) of each layer against epochs."));
    figs.extend(stack_figures(&dir, "B3", &stack, data, opts.seed)?);

    // Layer 1 without and with sparsity, side by side, when B1 has run (a
    // study that trains b1 beside b3 draws them once both have ended).
    if compare_with_b1 {
        if let Ok(plain) = load_stack(&opts.out_dir.join("b1"), &STACK, opts.seed, "b1", data) {
            figs.extend(b1_vs_b3_figures(&dir, data, &plain, &stack)?);
        }
    }

    let (fine, fine_m) = finetune(
        data,
        opts,
        Mlp::from_dae_stack(&stack, CLASSES, opts.seed),
        "b3-finetune",
        "B3: five-layer classifier fine-tuned from the sparse stack",
        dir.join("finetune"),
        sizes,
        reference(&[(
            "first epoch",
            "high accuracy from the first epoch, smooth, still rising at the end",
        )]),
    )?;
    let mut results = layer_results(&layers);
    results.insert(
        "fine-tuned: final accuracy".into(),
        json!(final_accuracy(&fine_m)),
    );
    let mut extra = group_summary(opts, "b3", title, "dae");
    extra.insert("figures".into(), Value::Array(figs));
    extra.insert("results".into(), Value::Object(results));
    extra.insert(
        "reference".into(),
        reference(&[
            ("layer 1 (784-900): final training cost", "about 66"),
            ("layer 2 (900-625): final training cost", "about 68"),
            ("layer 3 (625-400): final training cost", "about 72"),
        ]),
    );
    extra.insert(
        "wall_seconds".into(),
        json!(wall(&layers) + fine_m.iter().map(|e| e.seconds).sum::<f64>()),
    );
    merge_summary(&dir, extra)?;
    Ok(vec![fine])
}

/// Layer 1's weights and activations of b1's stack (`plain`) beside b3's
/// (`sparse`), drawn into b3's folder `dir`; their summary entries.
fn b1_vs_b3_figures(
    dir: &Path,
    data: &Dataset,
    plain: &DaeStack,
    sparse: &DaeStack,
) -> Result<Vec<Value>, ExpError> {
    let mut figs = Vec::new();
    let (iw, ih) = (data.train().cols, data.train().rows);
    let n = 20;
    let rows = vec![
        (
            "B1 (no sparsity)".to_string(),
            tiles(&weights_in_image_space(plain, 1, n), iw, ih, n, |_| None),
        ),
        (
            "B3 (sparse)".to_string(),
            tiles(&weights_in_image_space(sparse, 1, n), iw, ih, n, |_| None),
        ),
    ];
    figures::rows(
        &dir.join("weights_b1_vs_b3.png"),
        "Layer 1 weights without and with sparsity",
        rows,
        56,
        Normalise::PerTile,
    )?;
    figs.push(figure(
        "weights_b1_vs_b3.png",
        "The first 20 units of layer 1, without (B1) and with (B3) the sparsity penalty.",
    ));
    let test = data.test();
    // Without test images there are no activations to compare.
    if test.count > 0 {
        let count = 20.min(test.count);
        let images = images_f32(test, 0, count);
        // Layer 1 activations of both stacks as tiles, with their mean.
        let act = |st: &DaeStack| -> (Vec<Tile>, f64) {
            let h = st.hidden(1, &images);
            let mean = h.iter().map(|&v| v as f64).sum::<f64>() / h.len() as f64;
            (square_tiles(&h, STACK[1]), mean)
        };
        let ((plain_tiles, plain_mean), (sparse_tiles, sparse_mean)) = (act(plain), act(sparse));
        figures::rows(
            &dir.join("activations_b1_vs_b3.png"),
            "Layer 1 activations without and with sparsity",
            vec![
                ("B1 (no sparsity)".into(), plain_tiles),
                ("B3 (sparse)".into(), sparse_tiles),
            ],
            56,
            Normalise::Fixed(0.0, 1.0),
        )?;
        figs.push(figure("activations_b1_vs_b3.png", &format!(
            "Layer 1 activations of {count} test images as {side}x{side} squares: mean activation {:.3} without, {:.3} with sparsity (target rho 0.05).",
            plain_mean, sparse_mean, side = square_side(STACK[1])
        )));
    }
    Ok(figs)
}

/// b3's comparison with b1 (see [`b1_vs_b3_figures`]), from both stacks'
/// checkpoints, added to b3's summary: for a study whose b3 trained beside
/// b1 (`b3(.., compare_with_b1: false)`), once both have ended.
pub fn compare_b3_with_b1(data: &Dataset, opts: &Options) -> Result<(), ExpError> {
    let plain = load_stack(&opts.out_dir.join("b1"), &STACK, opts.seed, "b1", data)?;
    let sparse = load_stack(&opts.out_dir.join("b3"), &STACK, opts.seed, "b3", data)?;
    let dir = opts.out_dir.join("b3");
    let added = b1_vs_b3_figures(&dir, data, &plain, &sparse)?;
    let summary = crate::jsonfile::read_object(&dir.join("summary.json"));
    let mut figs = match summary.get("figures") {
        Some(Value::Array(listed)) => listed.clone(),
        _ => Vec::new(),
    };
    figs.extend(added);
    let mut extra = Map::new();
    extra.insert("figures".into(), Value::Array(figs));
    merge_summary(&dir, extra)?;
    Ok(())
}

pub fn b_subset(data: &Dataset, opts: &Options) -> Result<Vec<Map<String, Value>>, ExpError> {
    let sizes = stage_sizes(Experiment::BSubset, data, opts)?;
    // For the titles: --quick and the size flags change the study's sizes.
    let used = format!("{}/{}", sizes.train, sizes.test);
    let dir = opts.out_dir.join("b-subset");
    let plain = load_stack(&opts.out_dir.join("b1"), &STACK, opts.seed, "b1", data)?;
    let sparse = load_stack(&opts.out_dir.join("b3"), &STACK, opts.seed, "b3", data)?;
    let mut out = Vec::new();
    let mut runs: Vec<(String, Vec<EpochMetrics>)> = Vec::new();
    // The CNN curves from the A subset runs, when they exist.
    for (folder, label) in SUBSET_RUNS {
        if folder.ends_with("momentum-0.9") {
            continue;
        }
        if let Ok(m) = figures::read_metrics(&opts.out_dir.join(folder)) {
            runs.push((format!("CNN {label}"), m));
        }
    }
    for (model, folder, label) in [
        (
            Mlp::from_dae_stack(&plain, CLASSES, opts.seed),
            "pretrained",
            "5-layer, pre-trained (B1)",
        ),
        (
            Mlp::from_dae_stack(&sparse, CLASSES, opts.seed),
            "sparse",
            "5-layer, pre-trained sparse (B3)",
        ),
        (
            Mlp::new(&five_layer_sizes(), opts.seed),
            "random",
            "5-layer, random init",
        ),
    ] {
        let (summary, m) = finetune(
            data,
            opts,
            model,
            &format!("b-subset-{folder}"),
            &format!("B subset: {label}, first {used} images"),
            dir.join(folder),
            sizes,
            reference(&[]),
        )?;
        out.push(summary);
        runs.push((label.to_string(), m));
    }
    figures::compare_runs(
        &dir.join("compare.png"),
        &format!("{used}: CNNs vs five-layer networks"),
        &runs,
    )?;
    let mut results = Map::new();
    for (label, m) in &runs {
        results.insert(format!("{label}: final accuracy"), json!(final_accuracy(m)));
    }
    let mut extra = group_summary(
        opts,
        "b-subset",
        &format!("B subset comparison: CNNs and five-layer networks on the first {used} images"),
        "mlp",
    );
    extra.insert("figures".into(), json!([figure("compare.png", "Test accuracy and test cross-entropy against epochs: the CNNs (from the A subset runs) and the five-layer networks pre-trained, pre-trained with sparsity, and randomly initialised.")]));
    extra.insert("results".into(), Value::Object(results));
    extra.insert(
        "reference".into(),
        reference(&[
            (
                "ranking",
                "CNN best; sparse pre-trained > pre-trained > random init",
            ),
            (
                "5-layer, pre-trained sparse (B3): final accuracy",
                "better than B1's, converging a bit slower",
            ),
        ]),
    );
    extra.insert(
        "wall_seconds".into(),
        json!(out
            .iter()
            .filter_map(|s| s.get("wall_seconds").and_then(Value::as_f64))
            .sum::<f64>()),
    );
    merge_summary(&dir, extra)?;
    Ok(out)
}
