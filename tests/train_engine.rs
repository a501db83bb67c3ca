//! The training engine on small synthetic data: batch arithmetic,
//! determinism, exact resume, checkpoint refusal, settings validation, NaN
//! detection, learning, layer-wise DAE training and the run-folder files.
//! Run: `cargo test --test train_engine`.

use std::ops::ControlFlow;
use std::path::Path;

use vcortex::data::Split;
use vcortex::kernels::rng::Rng;
use vcortex::model::{Classifier, Cnn, CnnShape, DaeStack, Mlp};
use vcortex::nn::Sparsity;
use vcortex::train::{
    batches_per_epoch, pretrain_dae, train_classifier, DaeConfig, DaeScheme, EpochMetrics,
    Optimizer, TrainConfig, TrainError,
};

const SIDE: usize = 8;
const CLASSES: usize = 4;

/// 8x8 images; class c is a bright horizontal band on rows 2c and 2c+1 over
/// dim noise, so the classes are linearly separable.
fn synthetic(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng::new(seed);
    let mut images = vec![0u8; n * SIDE * SIDE];
    let mut labels = vec![0u8; n];
    for i in 0..n {
        let c = rng.below(CLASSES as u64) as usize;
        labels[i] = c as u8;
        for y in 0..SIDE {
            for x in 0..SIDE {
                let bright = y / 2 == c;
                let v = if bright {
                    150 + rng.below(100)
                } else {
                    rng.below(60)
                };
                images[(i * SIDE + y) * SIDE + x] = v as u8;
            }
        }
    }
    (images, labels)
}

fn split<'a>(images: &'a [u8], labels: &'a [u8]) -> Split<'a> {
    Split::in_memory(images, labels, SIDE, SIDE)
}

const TINY_CNN: CnnShape = CnnShape {
    in_h: SIDE,
    in_w: SIDE,
    c1: 4,
    k1: 3,
    c2: 6,
    k2: 2,
    hidden: 8,
    classes: CLASSES,
};

fn config(dir: &Path, epochs: usize) -> TrainConfig {
    let mut cfg = TrainConfig::new("test", dir);
    cfg.epochs = epochs;
    cfg.batch_size = 16;
    cfg.lr = 0.1;
    cfg.decay = 1e-4;
    cfg.seed = 7;
    cfg.threads = 2;
    cfg
}

/// Metrics without the wall-clock field.
fn curve(m: &[EpochMetrics]) -> Vec<(usize, u64, Option<u64>, Option<u64>)> {
    m.iter()
        .map(|m| {
            (
                m.epoch,
                m.train_cost.to_bits(),
                m.test_cost.map(f64::to_bits),
                m.test_accuracy.map(f64::to_bits),
            )
        })
        .collect()
}

fn bits(p: &[f32]) -> Vec<u32> {
    p.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn batches_per_epoch_drops_the_partial_batch() {
    assert_eq!(batches_per_epoch(60000, 128), 468);
    assert_eq!(batches_per_epoch(12000, 128), 93);
    assert_eq!(batches_per_epoch(127, 128), 0);
    assert_eq!(batches_per_epoch(256, 128), 2);
}

#[test]
fn same_seed_and_threads_give_identical_runs() {
    let (imgs, labs) = synthetic(100, 1);
    let (timgs, tlabs) = synthetic(40, 2);
    let run = || {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Cnn::new(TINY_CNN, 3);
        let mut cfg = config(dir.path(), 2);
        cfg.optimizer = Optimizer::Momentum { gamma: 0.9 };
        let r = train_classifier(
            &mut model,
            split(&imgs, &labs),
            split(&timgs, &tlabs),
            &cfg,
            None,
        )
        .unwrap();
        (curve(&r.metrics), bits(model.params()))
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    // 100 images in batches of 16 -> 6 batches; the model did move.
    assert_ne!(bits(Cnn::new(TINY_CNN, 3).params()), a.1);
}

/// Stop after epoch 2 (as a killed run would: the checkpoint of epoch 2 is
/// the last thing written), resume, and compare with an uninterrupted run.
#[test]
fn resume_reproduces_the_uninterrupted_run() {
    let (imgs, labs) = synthetic(100, 1);
    let (timgs, tlabs) = synthetic(40, 2);
    let (train, test) = (split(&imgs, &labs), split(&timgs, &tlabs));
    for optimizer in [
        Optimizer::Momentum { gamma: 0.5 },
        Optimizer::RmsProp {
            rho: 0.9,
            eps: 1e-6,
        },
    ] {
        let full_dir = tempfile::tempdir().unwrap();
        let mut full = Cnn::new(TINY_CNN, 5);
        let mut cfg = config(full_dir.path(), 4);
        cfg.optimizer = optimizer;
        if let Optimizer::RmsProp { .. } = optimizer {
            cfg.lr = 0.01;
        }
        let whole = train_classifier(&mut full, train, test, &cfg, None).unwrap();

        let dir = tempfile::tempdir().unwrap();
        cfg.out_dir = dir.path().to_path_buf();
        let mut first = Cnn::new(TINY_CNN, 5);
        let mut stop = |m: &EpochMetrics, _: &Cnn| {
            if m.epoch == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let part = train_classifier(&mut first, train, test, &cfg, Some(&mut stop)).unwrap();
        assert!(part.stopped_early);
        assert_eq!(part.metrics.len(), 2);

        let mut resumed = Cnn::new(TINY_CNN, 5);
        cfg.resume = true;
        let rest = train_classifier(&mut resumed, train, test, &cfg, None).unwrap();
        assert_eq!(rest.resumed_epochs, 2);
        assert_eq!(curve(&rest.metrics), curve(&whole.metrics), "{optimizer:?}");
        assert_eq!(bits(resumed.params()), bits(full.params()), "{optimizer:?}");
        let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
        assert_eq!(csv.lines().count(), 5, "{csv}");
    }
}

/// A DAE layer with sparsity and momentum: the two-phase batch, the noise
/// streams and the optimizer state all survive a resume bit for bit; only the
/// trained layer changes.
#[test]
fn dae_layer_resume_is_exact_and_touches_only_its_layer() {
    let (imgs, labs) = synthetic(64, 3);
    let (timgs, tlabs) = synthetic(20, 4);
    let (train, test) = (split(&imgs, &labs), split(&timgs, &tlabs));
    let sizes = [64, 20, 12, 8];
    let dae = DaeConfig {
        scheme: DaeScheme::ImageSpace,
        layer: 2,
        keep_prob: 0.9,
        sparsity: Some(Sparsity::STUDY),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 3);
    cfg.optimizer = Optimizer::Momentum { gamma: 0.1 };
    let start = DaeStack::new(&sizes, 9);
    let mut whole = start.clone();
    let r = pretrain_dae(&mut whole, &dae, train, test, &cfg, None).unwrap();
    assert_eq!(r.metrics.len(), 3);
    assert!(r
        .metrics
        .iter()
        .all(|m| m.test_accuracy.is_none() && m.test_cost.is_some()));
    for layer in [1, 3] {
        let range = start.layer_range(layer);
        assert_eq!(
            bits(&start.params()[range.clone()]),
            bits(&whole.params()[range])
        );
    }
    let l2 = start.layer_range(2);
    assert_ne!(bits(&start.params()[l2.clone()]), bits(&whole.params()[l2]));

    let dir2 = tempfile::tempdir().unwrap();
    cfg.out_dir = dir2.path().to_path_buf();
    cfg.epochs = 1;
    let mut part = start.clone();
    pretrain_dae(&mut part, &dae, train, test, &cfg, None).unwrap();
    cfg.epochs = 3;
    cfg.resume = true;
    let mut resumed = start.clone();
    let r2 = pretrain_dae(&mut resumed, &dae, train, test, &cfg, None).unwrap();
    assert_eq!(curve(&r2.metrics), curve(&r.metrics));
    assert_eq!(bits(resumed.params()), bits(whole.params()));
    let csv = std::fs::read_to_string(dir2.path().join("metrics.csv")).unwrap();
    assert!(
        csv.starts_with("layer,epoch,train_cost,test_cost,seconds\n2,1,"),
        "{csv}"
    );
}

#[test]
fn dae_pretraining_lowers_the_reconstruction_cost() {
    let (imgs, labs) = synthetic(256, 5);
    let (timgs, tlabs) = synthetic(64, 6);
    let mut stack = DaeStack::new(&[64, 24], 2);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 6);
    cfg.lr = 0.1;
    let dae = DaeConfig {
        scheme: DaeScheme::ImageSpace,
        layer: 1,
        keep_prob: 0.9,
        sparsity: None,
    };
    let r = pretrain_dae(
        &mut stack,
        &dae,
        split(&imgs, &labs),
        split(&timgs, &tlabs),
        &cfg,
        None,
    )
    .unwrap();
    let first = r.metrics[0].test_cost.unwrap();
    let last = r.metrics.last().unwrap().test_cost.unwrap();
    assert!(last < 0.9 * first, "test cost {first} -> {last}");
    assert!(r.metrics.last().unwrap().train_cost < r.metrics[0].train_cost);
}

#[test]
fn layer_local_scheme_trains_layer_two() {
    let (imgs, labs) = synthetic(128, 5);
    let (timgs, tlabs) = synthetic(32, 6);
    let start = DaeStack::new(&[64, 24, 16], 2);
    let mut stack = start.clone();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 4);
    let dae = DaeConfig {
        scheme: DaeScheme::LayerLocal,
        ..DaeConfig::study(2)
    };
    let r = pretrain_dae(
        &mut stack,
        &dae,
        split(&imgs, &labs),
        split(&timgs, &tlabs),
        &cfg,
        None,
    )
    .unwrap();
    assert!(r.metrics.last().unwrap().train_cost < r.metrics[0].train_cost);
    let l1 = start.layer_range(1);
    assert_eq!(bits(&start.params()[l1.clone()]), bits(&stack.params()[l1]));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["settings"]["scheme"], "layer-local");
    assert_eq!(s["model"], "dae-layer2-local");
}

#[test]
fn classifiers_learn_a_separable_problem() {
    let (imgs, labs) = synthetic(512, 7);
    let (timgs, tlabs) = synthetic(128, 8);
    let (train, test) = (split(&imgs, &labs), split(&timgs, &tlabs));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 5);
    cfg.optimizer = Optimizer::Momentum { gamma: 0.9 };
    cfg.lr = 0.05;
    let mut cnn = Cnn::new(TINY_CNN, 1);
    let r = train_classifier(&mut cnn, train, test, &cfg, None).unwrap();
    let last = r.metrics.last().unwrap();
    assert!(last.train_cost < 0.5 * r.metrics[0].train_cost || last.train_cost < 0.05);
    assert!(last.test_accuracy.unwrap() > 0.9, "{:?}", r.metrics);

    // The five-layer classifier, from a (briefly) pre-trained stack.
    let mut stack = DaeStack::new(&[64, 20, 16, 12], 4);
    let mlp_from_stack = Mlp::from_dae_stack(&stack, CLASSES, 4);
    for name in ["fc1.weight", "fc2.bias", "fc3.weight"] {
        let dae_name = name.replace("fc", "dae");
        let range = mlp_from_stack.layout().range(name);
        assert_eq!(&mlp_from_stack.params()[range], stack.tensor(&dae_name));
    }
    let dae = DaeConfig {
        scheme: DaeScheme::ImageSpace,
        layer: 1,
        keep_prob: 0.9,
        sparsity: None,
    };
    let dae_dir = tempfile::tempdir().unwrap();
    pretrain_dae(
        &mut stack,
        &dae,
        train,
        test,
        &config(dae_dir.path(), 1),
        None,
    )
    .unwrap();
    let mut mlp = Mlp::from_dae_stack(&stack, CLASSES, 4);
    cfg.epochs = 8;
    cfg.lr = 0.5;
    let r = train_classifier(&mut mlp, train, test, &cfg, None).unwrap();
    assert!(
        r.metrics.last().unwrap().test_accuracy.unwrap() > 0.9,
        "{:?}",
        r.metrics
    );
}

#[test]
fn huge_learning_rate_stops_with_epoch_and_layer() {
    let (imgs, labs) = synthetic(64, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 3);
    cfg.lr = 1e30;
    // (With the decay, lr x decay would be refused before training.)
    cfg.decay = 0.0;
    let mut model = Cnn::new(TINY_CNN, 1);
    let err = train_classifier(
        &mut model,
        split(&imgs, &labs),
        split(&imgs, &labs),
        &cfg,
        None,
    )
    .unwrap_err();
    match &err {
        TrainError::NonFinite { epoch, layer, .. } => {
            assert_eq!(*epoch, 1);
            assert!(
                layer.starts_with("conv") || layer.starts_with("fc"),
                "{layer}"
            );
        }
        other => panic!("expected NonFinite, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("epoch 1") && msg.contains("layer"), "{msg}");

    // Sigmoid units saturate instead: the DAE's weights overflow f32 only
    // with a step of f32::MAX.
    cfg.lr = f32::MAX;
    let mut stack = DaeStack::new(&[64, 12, 8], 1);
    let err = pretrain_dae(
        &mut stack,
        &DaeConfig::study(2),
        split(&imgs, &labs),
        split(&imgs, &labs),
        &cfg,
        None,
    )
    .unwrap_err();
    match &err {
        TrainError::NonFinite { epoch, layer, .. } => {
            assert_eq!(*epoch, 1);
            assert!(layer.starts_with("dae2"), "{layer}");
        }
        other => panic!("expected NonFinite, got {other}"),
    }
}

/// A fresh run into a folder that holds an earlier one replaces it from
/// the start: if it then fails, neither the earlier checkpoint (which a
/// later --resume would continue) nor its figures are left beside the new
/// run's files.
#[test]
fn a_failed_rerun_leaves_no_earlier_run_behind() {
    let (imgs, labs) = synthetic(64, 1);
    let (train, test) = (split(&imgs, &labs), split(&imgs, &labs));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1);
    train_classifier(&mut Mlp::new(&[64, 8, CLASSES], 1), train, test, &cfg, None).unwrap();
    // The earlier run's figures, as its summary lists them (the
    // experiments add the list after training), and files of the caller's.
    let figure = dir.path().join("curves.png");
    std::fs::write(&figure, b"the earlier run's figure").unwrap();
    let summary_path = dir.path().join("summary.json");
    let mut summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    summary["figures"] = serde_json::json!([{"file": "curves.png", "caption": "c"}, "../x.png"]);
    std::fs::write(&summary_path, summary.to_string()).unwrap();
    let kept = [dir.path().join("notes.txt"), dir.path().join("mine.png")];
    for file in &kept {
        std::fs::write(file, b"not vcortex's").unwrap();
    }
    assert!(dir.path().join("checkpoint.bin").exists());
    cfg.lr = 1e30;
    cfg.decay = 0.0;
    let err = train_classifier(&mut Cnn::new(TINY_CNN, 1), train, test, &cfg, None).unwrap_err();
    assert!(matches!(err, TrainError::NonFinite { .. }), "{err}");
    assert!(!dir.path().join("checkpoint.bin").exists());
    assert!(!figure.exists());
    assert!(kept.iter().all(|f| f.exists()));
    let summary = std::fs::read_to_string(&summary_path).unwrap();
    assert!(!summary.contains("curves.png"), "{summary}");
    let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1, "{csv}");
    cfg.resume = true;
    cfg.lr = 0.1;
    let err = train_classifier(&mut Cnn::new(TINY_CNN, 1), train, test, &cfg, None).unwrap_err();
    assert!(err.to_string().contains("no checkpoint.bin"), "{err}");
}

/// The temporary files of a killed run's atomic writes are cleared by the
/// next run in the folder: those whose process is gone and that nobody
/// wrote for two minutes (a fresh one may be another PID namespace's).
#[cfg(target_os = "linux")]
#[test]
fn a_killed_runs_temporary_files_are_cleared() {
    let (imgs, labs) = synthetic(64, 1);
    let (train, test) = (split(&imgs, &labs), split(&imgs, &labs));
    let dir = tempfile::tempdir().unwrap();
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let leftover = |name: &str, old: bool| {
        let path = dir.path().join(name);
        std::fs::write(&path, b"half a file").unwrap();
        if old {
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(an_hour_ago).unwrap();
        }
        path
    };
    // Linux pids stay below 2^22: 999999999 never runs; pid 1 always does.
    let gone = [
        leftover("summary.json.tmp-999999999", true),
        leftover("curves.png.tmp-999999999", true),
    ];
    let kept = [
        leftover("metrics.csv.tmp-999999998", false),
        leftover("notes.txt.tmp-1", true),
    ];
    let cfg = config(dir.path(), 1);
    train_classifier(&mut Mlp::new(&[64, 8, CLASSES], 1), train, test, &cfg, None).unwrap();
    assert!(gone.iter().all(|p| !p.exists()));
    assert!(kept.iter().all(|p| p.exists()));
}

#[test]
fn bad_settings_are_reported_before_training() {
    let (imgs, labs) = synthetic(64, 1);
    let (train, test) = (split(&imgs, &labs), split(&imgs, &labs));
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let expect_config = |cfg: &TrainConfig, needle: &str| {
        let mut model = Mlp::new(&[64, 8, CLASSES], 1);
        match train_classifier(&mut model, train, test, cfg, None) {
            Err(TrainError::Config(msg)) => assert!(msg.contains(needle), "{msg}"),
            other => panic!("expected a settings error about {needle}, got {other:?}"),
        }
        assert!(!run_dir.exists(), "run folder created before validation");
    };
    let base = config(&run_dir, 1);
    let mut c = base.clone();
    c.batch_size = 0;
    expect_config(&c, "batch size");
    let mut c = base.clone();
    c.lr = -0.1;
    expect_config(&c, "learning rate");
    let mut c = base.clone();
    c.train_count = Some(65);
    expect_config(&c, "larger than the 64 available");
    let mut c = base.clone();
    c.batch_size = 65;
    expect_config(&c, "no full batch");
    let mut c = base.clone();
    c.optimizer = Optimizer::Momentum { gamma: 1.5 };
    expect_config(&c, "momentum");
    // A decay whose term alone makes the weights grow: lr x decay >= 2, or
    // 2 (1 + gamma) with momentum; just below the bound trains.
    let mut c = base.clone();
    c.lr = 0.05;
    c.decay = 40.0;
    expect_config(&c, "0.05 x 40 = 2 must be below 2:");
    c.optimizer = Optimizer::Momentum { gamma: 0.5 };
    c.decay = 60.0;
    expect_config(&c, "must be below 3");
    // A product past f32 is shown from f64, not as inf.
    let mut huge = base.clone();
    (huge.lr, huge.decay) = (1e30, 1e30);
    expect_config(&huge, "e60 must be below 2");
    c.decay = 59.0;
    let mut model = Mlp::new(&[64, 8, CLASSES], 1);
    train_classifier(&mut model, train, test, &c, None).unwrap();
    std::fs::remove_dir_all(&run_dir).unwrap();
    let mut model = Cnn::new(CnnShape::STUDY, 1); // 28x28 model, 8x8 data
    assert!(matches!(
        train_classifier(&mut model, train, test, &base, None),
        Err(TrainError::Config(m)) if m.contains("pixels")
    ));
    let mut stack = DaeStack::new(&[64, 8], 1);
    let dae = DaeConfig {
        scheme: DaeScheme::ImageSpace,
        layer: 2,
        keep_prob: 0.9,
        sparsity: None,
    };
    assert!(matches!(
        pretrain_dae(&mut stack, &dae, train, test, &base, None),
        Err(TrainError::Config(m)) if m.contains("layer 2")
    ));

    // An output folder that cannot be created (a file is in the way).
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let c = config(&file.join("run"), 1);
    let mut model = Mlp::new(&[64, 8, CLASSES], 1);
    let err = train_classifier(&mut model, train, test, &c, None).unwrap_err();
    assert!(matches!(err, TrainError::Io { .. }), "{err}");
}

/// `checkpoint` (bytes of `Checkpoint::to_bytes`) with its JSON header and
/// its data edited, and its SHA-256 made valid again: what a buggy writer or
/// a crafted file could hold.
fn resealed(checkpoint: &[u8], edit: impl FnOnce(&mut serde_json::Value, &mut Vec<u8>)) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let body = &checkpoint[..checkpoint.len() - 32];
    let header_len = u32::from_le_bytes(body[12..16].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&body[16..16 + header_len]).unwrap();
    let mut data = body[16 + header_len..].to_vec();
    edit(&mut header, &mut data);
    let header = serde_json::to_vec(&header).unwrap();
    let mut out = body[..12].to_vec();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

#[test]
fn bad_checkpoints_are_refused() {
    let (imgs, labs) = synthetic(64, 1);
    let (train, test) = (split(&imgs, &labs), split(&imgs, &labs));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1);
    let mut mlp = Mlp::new(&[64, 8, CLASSES], 1);
    train_classifier(&mut mlp, train, test, &cfg, None).unwrap();
    let path = dir.path().join("checkpoint.bin");
    let good = std::fs::read(&path).unwrap();
    cfg.resume = true;
    cfg.epochs = 2;

    let refused = |bytes: &[u8], cfg: &TrainConfig, needle: &str| {
        std::fs::write(&path, bytes).unwrap();
        let mut m = Mlp::new(&[64, 8, CLASSES], 1);
        match train_classifier(&mut m, train, test, cfg, None) {
            Err(e @ TrainError::Checkpoint { .. }) => {
                assert!(e.to_string().contains(needle), "{e}")
            }
            other => panic!("expected refusal ({needle}), got {other:?}"),
        }
    };
    refused(&good[..good.len() - 7], &cfg, "truncated");
    refused(&good[..40], &cfg, "truncated");
    let mut other_version = good.clone();
    other_version[8] = 99;
    refused(&other_version, &cfg, "version 99");
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n - 40] ^= 1;
    refused(&flipped, &cfg, "corrupt");
    refused(b"not a checkpoint at all", &cfg, "not a vcortex checkpoint");
    // Another architecture, another model kind, another optimizer.
    std::fs::write(&path, &good).unwrap();
    let mut wider = Mlp::new(&[64, 9, CLASSES], 1);
    let err = train_classifier(&mut wider, train, test, &cfg, None).unwrap_err();
    assert!(err.to_string().contains("architecture"), "{err}");
    let mut cnn = Cnn::new(TINY_CNN, 1);
    let err = train_classifier(&mut cnn, train, test, &cfg, None).unwrap_err();
    assert!(err.to_string().contains("model 'mlp'"), "{err}");
    // The same resume of the same model, with one thing changed: the error.
    let resume_error = |train: Split<'_>, test: Split<'_>, c: &TrainConfig| {
        let mut model = Mlp::new(&[64, 8, CLASSES], 1);
        train_classifier(&mut model, train, test, c, None)
            .unwrap_err()
            .to_string()
    };
    let mut c = cfg.clone();
    c.optimizer = Optimizer::Momentum { gamma: 0.1 };
    let err = resume_error(train, test, &c);
    assert!(err.contains("optimizer"), "{err}");
    let mut c = cfg.clone();
    c.batch_size = 8;
    let err = resume_error(train, test, &c);
    assert!(err.contains("batch size 16"), "{err}");
    let mut c = cfg.clone();
    c.seed = 8;
    let err = resume_error(train, test, &c);
    assert!(err.contains("seed"), "{err}");
    // Every other setting of the run, and its data, must match too.
    let mut c = cfg.clone();
    c.lr *= 2.0;
    let err = resume_error(train, test, &c);
    assert!(err.contains("lr = 0.1, this run has lr = 0.2"), "{err}");
    let mut c = cfg.clone();
    c.decay = 0.5;
    let err = resume_error(train, test, &c);
    assert!(
        err.contains("decay = 0.0001, this run has decay = 0.5"),
        "{err}"
    );
    let (other_imgs, other_labs) = synthetic(64, 2);
    let err = resume_error(train, split(&other_imgs, &other_labs), &cfg);
    assert!(err.contains("other data"), "{err}");
    // One training pixel changed, off the sampled fingerprint's bytes (every
    // 509th, and 100 is not one): the every-byte fingerprint sees it.
    let mut edited = imgs.clone();
    edited[100] = edited[100].wrapping_add(1);
    let err = resume_error(split(&edited, &labs), test, &cfg);
    assert!(err.contains("other data"), "{err}");
    // A checkpoint from before the every-byte fingerprints (only the sampled
    // ones recorded) still resumes on the same data.
    let older = resealed(&good, |header, _| {
        let settings = header["settings"].as_object_mut().unwrap();
        assert!(settings.remove("data_bytes").is_some());
        assert!(settings.remove("dataset_bytes").is_some());
    });
    std::fs::write(&path, &older).unwrap();
    let mut m = Mlp::new(&[64, 8, CLASSES], 1);
    train_classifier(&mut m, train, test, &cfg, None).unwrap();
    // Files with a valid checksum whose content does not hold together.
    let lengths_wrap = resealed(&good, |header, _| {
        header["params_len"] = serde_json::json!(1u64 << 62);
        header["optimizer_state_len"] = serde_json::json!(0);
    });
    refused(
        &lengths_wrap,
        &cfg,
        "the header announces more than fits in memory",
    );
    let no_metrics = resealed(&good, |header, _| header["metrics"] = serde_json::json!([]));
    refused(
        &no_metrics,
        &cfg,
        "holds the metrics of 0 epochs but says 1 were completed",
    );
    let nan = resealed(&good, |_, data| {
        data[..4].copy_from_slice(&f32::NAN.to_le_bytes())
    });
    refused(&nan, &cfg, "non-finite values in");
    // The good one still resumes.
    std::fs::write(&path, &good).unwrap();
    let r = train_classifier(&mut Mlp::new(&[64, 8, CLASSES], 1), train, test, &cfg, None).unwrap();
    assert_eq!(r.resumed_epochs, 1);
    assert_eq!(r.metrics.len(), 2);
}

#[test]
fn run_folder_files() {
    let (imgs, labs) = synthetic(64, 1);
    let (train, test) = (split(&imgs, &labs), split(&imgs, &labs));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("summary.json"),
        r#"{"reference": "kept", "name": "overwritten"}"#,
    )
    .unwrap();
    let mut cfg = config(dir.path(), 2);
    cfg.name = "a1".into();
    cfg.extra_summary
        .insert("command".into(), "vcortex run a1".into());
    let mut model = Mlp::new(&[64, 8, CLASSES], 1);
    train_classifier(&mut model, train, test, &cfg, None).unwrap();
    let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "epoch,train_cost,test_cost,test_accuracy,seconds");
    assert_eq!(lines.len(), 3);
    assert!(lines[2].starts_with("2,"));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    for key in [
        "name",
        "title",
        "model",
        "settings",
        "seed",
        "threads",
        "simd",
        "epochs_completed",
        "final_test_accuracy",
        "best_test_accuracy",
        "best_epoch",
        "first_epoch_reaching_0_97",
        "final_train_cost",
        "wall_seconds",
    ] {
        assert!(s.get(key).is_some(), "summary.json lacks {key}: {s}");
    }
    assert_eq!(s["name"], "a1");
    assert_eq!(s["reference"], "kept");
    assert_eq!(s["command"], "vcortex run a1");
    assert_eq!(s["epochs_completed"], 2);
    assert_eq!(s["model"], "mlp");
    assert_eq!(s["settings"]["batch_size"], 16);
    assert!(dir.path().join("checkpoint.bin").exists());
}

/// Chunking changes rounding only: 1 thread and 3 threads (uneven chunks of
/// a 16-image batch) give the same run to f32 rounding, for the CNN (loss
/// scaled by the full batch, gradients summed over chunks) and for a sparse
/// DAE layer (batch-wide mean activation, per-image noise streams). A
/// mistake in any of these changes the results at the 1e-2 level.
#[test]
fn thread_count_changes_rounding_only() {
    let (imgs, labs) = synthetic(96, 1);
    let (timgs, tlabs) = synthetic(40, 2);
    let (train, test) = (split(&imgs, &labs), split(&timgs, &tlabs));
    let mut params = Vec::new();
    let mut costs = Vec::new();
    for threads in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), 2);
        cfg.threads = threads;
        let mut model = Cnn::new(TINY_CNN, 3);
        let r = train_classifier(&mut model, train, test, &cfg, None).unwrap();
        costs.push(r.metrics[1].train_cost);
        params.push(model.params().to_vec());
    }
    // 12 SGD steps from identical weights; rounding differences stay ~1e-6.
    assert_same_up_to_rounding(&params, &costs);

    let mut params = Vec::new();
    let mut costs = Vec::new();
    for threads in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), 2);
        cfg.threads = threads;
        let mut stack = DaeStack::new(&[64, 20, 12], 4);
        let dae = DaeConfig {
            sparsity: Some(Sparsity::STUDY),
            ..DaeConfig::study(2)
        };
        let r = pretrain_dae(&mut stack, &dae, train, test, &cfg, None).unwrap();
        costs.push(r.metrics[1].train_cost);
        params.push(stack.params().to_vec());
    }
    assert_same_up_to_rounding(&params, &costs);
}

/// Two runs (1 and 3 threads) that differ only in the rounding of their
/// gradient sums: parameters within 1e-4, final costs within 1e-5 relative.
fn assert_same_up_to_rounding(params: &[Vec<f32>], costs: &[f64]) {
    let close = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    assert!(
        close(&params[0], &params[1]) < 1e-4,
        "{}",
        close(&params[0], &params[1])
    );
    assert!((costs[0] - costs[1]).abs() < 1e-5 * costs[0], "{costs:?}");
}

/// A run folder whose lock another process holds is refused before anything
/// in it is written; once the lock is released the run goes ahead.
#[test]
fn a_folder_another_process_trains_into_is_refused() {
    let (imgs, labs) = synthetic(64, 1);
    let (train, test) = (split(&imgs, &labs), split(&imgs, &labs));
    let dir = tempfile::tempdir().unwrap();
    let held = std::fs::File::create(dir.path().join(".lock")).unwrap();
    held.lock().unwrap();
    let cfg = config(dir.path(), 1);
    let mut mlp = Mlp::new(&[64, 8, CLASSES], 1);
    let err = train_classifier(&mut mlp, train, test, &cfg, None).unwrap_err();
    assert!(matches!(err, TrainError::FolderBusy { .. }), "{err}");
    assert!(!dir.path().join("metrics.csv").exists());
    drop(held);
    train_classifier(&mut mlp, train, test, &cfg, None).unwrap();
}

/// A resume asking for fewer epochs than the checkpoint holds is refused
/// (summary.json would otherwise say 1 epoch of a 2-epoch run).
#[test]
fn resuming_with_fewer_epochs_than_done_is_refused() {
    let (imgs, labs) = synthetic(64, 1);
    let (train, test) = (split(&imgs, &labs), split(&imgs, &labs));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 2);
    let mut mlp = Mlp::new(&[64, 8, CLASSES], 1);
    train_classifier(&mut mlp, train, test, &cfg, None).unwrap();
    cfg.resume = true;
    cfg.epochs = 1;
    let err = train_classifier(&mut mlp, train, test, &cfg, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("checkpoint has 2 epochs, more than this run's 1"),
        "{err}"
    );
}

/// Settings go through the checkpoint's JSON and back: values that JSON
/// does not return bit for bit as f64 (an lr of 0.03, a momentum of 0.999)
/// still match themselves, and a checkpoint that does not record a setting
/// (written before it was recorded) is not refused for it.
#[test]
fn settings_survive_the_checkpoint_round_trip() {
    let (imgs, labs) = synthetic(64, 1);
    let (train, test) = (split(&imgs, &labs), split(&imgs, &labs));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1);
    cfg.lr = 0.03;
    cfg.optimizer = Optimizer::Momentum { gamma: 0.999 };
    train_classifier(&mut Mlp::new(&[64, 8, CLASSES], 1), train, test, &cfg, None).unwrap();
    cfg.resume = true;
    cfg.epochs = 2;
    let path = dir.path().join("checkpoint.bin");
    let good = std::fs::read(&path).unwrap();
    let r = train_classifier(&mut Mlp::new(&[64, 8, CLASSES], 1), train, test, &cfg, None);
    assert_eq!(r.unwrap().resumed_epochs, 1);
    let older = resealed(&good, |header, _| {
        let settings = header["settings"].as_object_mut().unwrap();
        settings.remove("dataset");
        settings.remove("start");
    });
    std::fs::write(&path, older).unwrap();
    let r = train_classifier(&mut Mlp::new(&[64, 8, CLASSES], 1), train, test, &cfg, None);
    assert_eq!(r.unwrap().resumed_epochs, 1);
}
