//! Part A: the CNN trained with SGD (A1), momentum (A2) and RMSProp (A3), and
//! the comparisons on the first 12000/2000 images.

use std::ops::ControlFlow;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::data::Dataset;
use crate::model::{Classifier, Cnn};
use crate::plot::{Colormap, Normalise};
use crate::train::{
    final_accuracy, first_epoch_reaching, train_classifier, EpochMetrics, Optimizer, RunReport,
};

use super::figures::{self, tiles};
use super::{
    epochs, figure, group_summary, images_f32, merge_summary, reference, stage_sizes, train_config,
    ExpError, Experiment, Options,
};

/// The study's CNN settings (docs/STUDY.md, part A).
pub(super) const EPOCHS: usize = 100;
pub(super) const QUICK_EPOCHS: usize = 3;
const LR_SGD: f32 = 0.05;
const LR_RMSPROP: f32 = 0.001;
const DECAY: f32 = 1e-4;

/// One CNN training run.
struct CnnRun<'a> {
    name: &'a str,
    folder: &'a str,
    title: String,
    optimizer: Optimizer,
    lr: f32,
    subset: bool,
    reference: Value,
}

fn momentum(gamma: f32) -> Optimizer {
    Optimizer::Momentum { gamma }
}

const RMSPROP: Optimizer = Optimizer::RmsProp {
    rho: 0.9,
    eps: 1e-6,
};

/// Trains one CNN run and draws its figures; returns its summary.
fn run_cnn(data: &Dataset, opts: &Options, run: &CnnRun) -> Result<Map<String, Value>, ExpError> {
    // The subset runs take the subset stage's images, the others all of them.
    let stage = if run.subset {
        Experiment::ASubset
    } else {
        Experiment::A1
    };
    let sizes = stage_sizes(stage, data, opts)?;
    let dir = opts.out_dir.join(run.folder);
    let mut cfg = train_config(
        opts,
        run.name,
        &run.title,
        dir.clone(),
        epochs(opts, EPOCHS, QUICK_EPOCHS),
        run.lr,
        DECAY,
        run.optimizer,
        sizes,
    );
    // The CNN's momentum runs compare the study's fixed values (0.1 and
    // 0.9, named in their folders and titles): --momentum is b3's.
    cfg.optimizer = run.optimizer;
    let mut model = Cnn::study(opts.seed);
    let report = train_classifier(
        &mut model,
        data.train(),
        data.test(),
        &cfg,
        None::<&mut dyn FnMut(&EpochMetrics, &Cnn) -> ControlFlow<()>>,
    )?;
    let figs = cnn_figures(&dir, &run.title, &model, data, &report)?;
    let mut extra = Map::new();
    extra.insert("model".into(), json!("cnn"));
    extra.insert("reference".into(), run.reference.clone());
    extra.insert("figures".into(), Value::Array(figs));
    merge_summary(&dir, extra)
}

/// Learning curves, the conv1 filters and the feature maps of two test digits.
fn cnn_figures(
    dir: &Path,
    title: &str,
    model: &Cnn,
    data: &Dataset,
    report: &RunReport,
) -> Result<Vec<Value>, ExpError> {
    let mut figs = Vec::new();
    figures::learning_curves(&dir.join("curves.png"), title, &report.metrics)?;
    figs.push(figure(
        "curves.png",
        "Test accuracy, and training and test cross-entropy (log scale), against epochs.",
    ));

    let s = model.shape;
    let weights = model
        .named_params()
        .into_iter()
        .find(|(n, _, _)| *n == "conv1.weight")
        .map(|(_, w, _)| w.to_vec())
        .expect("the CNN has conv1.weight");
    figures::grid(
        &dir.join("filters.png"),
        &format!(
            "{title}: the {} learned {}x{} conv1 filters",
            s.c1, s.k1, s.k1
        ),
        tiles(&weights, s.k1, s.k1, s.c1, |i| Some(format!("{}", i + 1))),
        s.c1.min(8),
        12,
        Normalise::PerTile,
        Colormap::Diverging,
    )?;
    figs.push(figure(
        "filters.png",
        "The conv1 filters after training (blue negative, red positive; each filter scaled on its own).",
    ));

    let test = data.test();
    let n = 2.min(test.count);
    let images = images_f32(test, 0, n);
    let feats = model.features(&images);
    let (h1, w1) = (s.in_h + 1 - s.k1, s.in_w + 1 - s.k1);
    let (ph1, pw1) = (h1 / 2, w1 / 2);
    let (h2, w2) = (ph1 + 1 - s.k2, pw1 + 1 - s.k2);
    let (ph2, pw2) = (h2 / 2, w2 / 2);
    for d in 0..n {
        let label = test.labels[d];
        let plane = |v: &[f32], c: usize, h: usize, w: usize| -> Vec<f32> {
            v[d * c * h * w..(d + 1) * c * h * w].to_vec()
        };
        let rows = vec![
            (
                format!("input (label {label})"),
                tiles(&images[d * s.in_h * s.in_w..], s.in_w, s.in_h, 1, |_| None),
            ),
            (
                format!("conv1 {}x{h1}x{w1}", s.c1),
                tiles(&plane(&feats.conv1, s.c1, h1, w1), w1, h1, s.c1, |_| None),
            ),
            (
                format!("pool1 {}x{ph1}x{pw1}", s.c1),
                tiles(&plane(&feats.pool1, s.c1, ph1, pw1), pw1, ph1, s.c1, |_| {
                    None
                }),
            ),
            (
                format!("conv2 {}x{h2}x{w2}", s.c2),
                tiles(&plane(&feats.conv2, s.c2, h2, w2), w2, h2, s.c2, |_| None),
            ),
            (
                format!("pool2 {}x{ph2}x{pw2}", s.c2),
                tiles(&plane(&feats.pool2, s.c2, ph2, pw2), pw2, ph2, s.c2, |_| {
                    None
                }),
            ),
        ];
        let file = format!("feature_maps_{}.png", d + 1);
        figures::rows(
            &dir.join(&file),
            &format!("{title}: feature maps of test image {} (a {label})", d + 1),
            rows,
            48,
            Normalise::PerTile,
        )?;
        figs.push(figure(
            &file,
            &format!(
                "Feature maps of test image {} (label {label}) after ReLU at conv1 and conv2 and after each \
                 max-pool; each map scaled on its own from black (lowest) to white (highest); an all-zero \
                 map, a unit silent on this image, is black.",
                d + 1
            ),
        ));
    }
    Ok(figs)
}

pub fn a1(data: &Dataset, opts: &Options) -> Result<Vec<Map<String, Value>>, ExpError> {
    Ok(vec![run_cnn(
        data,
        opts,
        &CnnRun {
            name: "a1",
            folder: "a1",
            // --lr replaces the study's learning rate, in the title too.
            title: format!("A1: CNN, mini-batch SGD (lr {})", opts.lr.unwrap_or(LR_SGD)),
            optimizer: Optimizer::Sgd,
            lr: LR_SGD,
            subset: false,
            reference: reference(&[
                ("final_test_accuracy", "about 0.99"),
                ("convergence", "no change from epoch 60 to 100"),
            ]),
        },
    )?])
}

pub fn a2(data: &Dataset, opts: &Options) -> Result<Vec<Map<String, Value>>, ExpError> {
    let mut out = Vec::new();
    for (gamma, folder) in [(0.1f32, "a2-momentum-0.1"), (0.9, "a2-momentum-0.9")] {
        out.push(run_cnn(
            data,
            opts,
            &CnnRun {
                name: folder,
                folder,
                title: format!("A2: CNN, SGD with momentum {gamma}"),
                optimizer: momentum(gamma),
                lr: LR_SGD,
                subset: false,
                reference: reference(&[(
                    "final_test_accuracy",
                    "about 0.99 (\"really good performances\"; no exact figure quoted)",
                )]),
            },
        )?);
    }
    Ok(out)
}

pub fn a3(data: &Dataset, opts: &Options) -> Result<Vec<Map<String, Value>>, ExpError> {
    Ok(vec![run_cnn(
        data,
        opts,
        &CnnRun {
            name: "a3",
            folder: "a3",
            title: format!(
                "A3: CNN, RMSProp (lr {}, rho 0.9, eps 1e-6)",
                opts.lr.unwrap_or(LR_RMSPROP)
            ),
            optimizer: RMSPROP,
            lr: LR_RMSPROP,
            subset: false,
            reference: reference(&[
                ("best_test_accuracy", "about 0.993"),
                ("early epochs", "big jumps in accuracy"),
            ]),
        },
    )?])
}

/// The four subset runs, in the order of [`SUBSET_RUNS`].
pub const SUBSET_RUNS: [(&str, &str); 4] = [
    ("a-subset/gd", "GD"),
    ("a-subset/momentum-0.1", "momentum 0.1"),
    ("a-subset/momentum-0.9", "momentum 0.9"),
    ("a-subset/rmsprop", "RMSProp"),
];

pub fn a_subset(data: &Dataset, opts: &Options) -> Result<Vec<Map<String, Value>>, ExpError> {
    // The images the runs take, for the titles (--quick and the size flags
    // change the study's 12000/2000).
    let used = stage_sizes(Experiment::ASubset, data, opts)?;
    let used = format!("{}/{}", used.train, used.test);
    let specs = [
        (
            Optimizer::Sgd,
            LR_SGD,
            reference(&[
                ("first_epoch_reaching_0_97", "about 40"),
                (
                    "final_test_accuracy",
                    "0.9685-0.976 in public Theano runs of this assignment",
                ),
            ]),
        ),
        (
            momentum(0.1),
            LR_SGD,
            reference(&[("first_epoch_reaching_0_97", "about 22")]),
        ),
        (
            momentum(0.9),
            LR_SGD,
            reference(&[(
                "first_epoch_reaching_0_97",
                "much earlier than momentum 0.1 (\"way bigger\" efficiency)",
            )]),
        ),
        (
            RMSPROP,
            LR_RMSPROP,
            reference(&[("comparison", "shown beside GD and momentum")]),
        ),
    ];
    let mut out = Vec::new();
    let mut curves = Vec::new();
    for ((folder, label), (optimizer, lr, reference)) in SUBSET_RUNS.iter().zip(specs) {
        let name = folder.replace('/', "-");
        let summary = run_cnn(
            data,
            opts,
            &CnnRun {
                name: &name,
                folder,
                title: format!("A subset: CNN, {label}, first {used} images"),
                optimizer,
                lr,
                subset: true,
                reference,
            },
        )?;
        curves.push((
            label.to_string(),
            figures::read_metrics(&opts.out_dir.join(folder))?,
        ));
        out.push(summary);
    }
    let dir = opts.out_dir.join("a-subset");
    let pick = |idx: &[usize]| -> Vec<(String, Vec<EpochMetrics>)> {
        idx.iter().map(|&i| curves[i].clone()).collect()
    };
    let comparisons = [
        (
            "compare_gd_momentum_0.1.png",
            "GD vs momentum 0.1",
            pick(&[0, 1]),
        ),
        (
            "compare_gd_momentum_0.9.png",
            "GD vs momentum 0.9",
            pick(&[0, 2]),
        ),
        (
            "compare_gd_momentum_rmsprop.png",
            "GD vs momentum 0.1 vs RMSProp",
            pick(&[0, 1, 3]),
        ),
        (
            "compare_all.png",
            "All four optimizers",
            pick(&[0, 1, 2, 3]),
        ),
    ];
    let mut figs = Vec::new();
    for (file, title, runs) in comparisons {
        figures::compare_runs(&dir.join(file), &format!("CNN on {used}: {title}"), &runs)?;
        figs.push(figure(
            file,
            &format!("{title}: test accuracy and test cross-entropy against epochs."),
        ));
    }
    let mut results = Map::new();
    for (label, m) in &curves {
        results.insert(
            format!("{label}: first epoch at 0.97"),
            json!(first_epoch_reaching(m, 0.97)),
        );
        results.insert(format!("{label}: final accuracy"), json!(final_accuracy(m)));
    }
    let mut extra = group_summary(
        opts,
        "a-subset",
        &format!("A subset comparisons: GD, momentum and RMSProp on the first {used} images"),
        "cnn",
    );
    extra.insert("figures".into(), Value::Array(figs));
    extra.insert("results".into(), Value::Object(results));
    extra.insert(
        "reference".into(),
        reference(&[
            ("GD: first epoch at 0.97", "about 40"),
            ("momentum 0.1: first epoch at 0.97", "about 22"),
            ("momentum 0.9: first epoch at 0.97", "faster still"),
            ("GD: final accuracy", "0.9685-0.976 (public Theano runs)"),
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
