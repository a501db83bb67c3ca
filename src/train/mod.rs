//! The training engine: minibatch loops for the classifiers
//! ([`train_classifier`]) and for one layer of a denoising-autoencoder stack
//! ([`pretrain_dae`]), with optimizers, per-epoch evaluation, progress,
//! metrics files, atomic checkpoints and exact resume.
//!
//! # Schedule and determinism
//! Each epoch visits the training images in the order of a Fisher-Yates
//! shuffle drawn from `Rng::stream(seed, epoch)`, in minibatches of
//! `batch_size`; the last partial batch is dropped (468 batches for 60000
//! images, 93 for 12000). Each minibatch is split into `threads` contiguous
//! chunks; each chunk runs its whole forward and backward pass on one rayon
//! thread with its own workspace. The MLP and the DAE layers keep each
//! layer's deltas per chunk and compute the batch's weight gradients in one
//! parallel phase, fixed blocks of output units at a time, summing over the
//! chunks in chunk order and applying the optimizer to each block while it is
//! in cache (see `fused.rs`); the CNN writes a gradient per chunk and the
//! chunk gradients are summed in chunk order. The same seed and thread count therefore give
//! bit-identical runs; a different thread count changes the rounding only.
//! Denoising masks come from one generator per image,
//! `Rng::stream(key(seed, epoch, batch), row in batch)`, so they do not depend
//! on the thread count at all.
//!
//! # Run folder
//! `metrics.csv` (one line appended per epoch; header
//! `epoch,train_cost,test_cost,test_accuracy,seconds` for classifiers and
//! `layer,epoch,train_cost,test_cost,seconds` for a DAE layer),
//! `summary.json` (rewritten each epoch; keys not written by the engine are
//! kept, so the experiment layer may add its own) and `checkpoint.bin`. Give
//! each DAE layer its own folder (e.g. `run/layer1`, `run/layer2`).
//!
//! Costs: `train_cost` is the mean over the epoch's batches of the batch's
//! mean loss (cross-entropy per image; for a DAE, the cross-entropy summed
//! over pixels averaged over the batch, plus the KL penalty when sparsity is
//! on), computed during training. `test_cost` is the same loss on the test
//! set after the epoch (for a DAE: clean images through layers 1..k and back,
//! without noise or penalty; in the layer-local scheme, the clean h_{k-1}
//! through layer k and back one level).

//! # Example
//! ```no_run
//! use std::ops::ControlFlow;
//! use vcortex::data::Split;
//! use vcortex::model::{Cnn, DaeStack, Mlp};
//! use vcortex::train::{pretrain_dae, train_classifier, DaeConfig, Optimizer, TrainConfig};
//!
//! # fn demo(train: Split, test: Split) -> Result<(), vcortex::train::TrainError> {
//! // A2 on the 12000/2000 subset.
//! let mut cfg = TrainConfig::new("a2", "runs/a2");
//! cfg.epochs = 100;
//! cfg.lr = 0.05;
//! cfg.decay = 1e-4;
//! cfg.optimizer = Optimizer::Momentum { gamma: 0.1 };
//! cfg.train_count = Some(12000);
//! cfg.test_count = Some(2000);
//! cfg.progress = true;
//! let mut cnn = Cnn::study(cfg.seed);
//! let mut figures = |m: &vcortex::train::EpochMetrics, model: &Cnn| {
//!     let _maps = model.features(&[0.0; 2 * 784]); // conv1, pool1, conv2, pool2
//!     let _ = m.test_accuracy;
//!     ControlFlow::Continue(())
//! };
//! let report = train_classifier(&mut cnn, train, test, &cfg, Some(&mut figures))?;
//! println!("{:?}", report.metrics.last());
//!
//! // B1/B2: three DAE layers, each in its own folder, then fine-tuning.
//! let mut stack = DaeStack::study(cfg.seed);
//! let mut dae_cfg = TrainConfig::new("b1", "runs/b1");
//! dae_cfg.epochs = 25;
//! dae_cfg.lr = 0.1;
//! for layer in 1..=3 {
//!     dae_cfg.out_dir = format!("runs/b1/layer{layer}").into();
//!     pretrain_dae(&mut stack, &DaeConfig::study(layer), train, test, &dae_cfg, None)?;
//! }
//! let mut mlp = Mlp::from_dae_stack(&stack, 10, cfg.seed);
//! dae_cfg.out_dir = "runs/b2".into();
//! train_classifier(&mut mlp, train, test, &dae_cfg, None)?;
//! # Ok(())
//! # }
//! ```

mod checkpoint;
mod engine;
mod fused;
mod progress;
mod report;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use checkpoint::{Checkpoint, CHECKPOINT_VERSION};
pub use engine::{
    batches_per_epoch, compute_pool_builder, pretrain_dae, train_classifier, Observer, RunReport,
};
pub(crate) use engine::{
    classifier_chunks, data_fingerprint, evaluate_classifier, folder_busy, lock_folder,
};

pub use crate::model::DaeScheme;
use crate::nn::Sparsity;

/// Optimizers, all with L2 decay inside the update on every parameter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Optimizer {
    /// p <- p - lr (g + decay p)
    Sgd,
    /// v <- gamma v - lr (g + decay p); p <- p + v
    Momentum { gamma: f32 },
    /// r <- rho r + (1 - rho) g^2; p <- p - lr (g / sqrt(r + eps) + decay p)
    RmsProp { rho: f32, eps: f32 },
}

impl Optimizer {
    /// Short name stored in checkpoints.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Momentum { .. } => "momentum",
            Optimizer::RmsProp { .. } => "rmsprop",
        }
    }
}

/// Settings of one training run.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Run name (summary.json `name`).
    pub name: String,
    /// Human title (summary.json `title`).
    pub title: String,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub decay: f32,
    pub optimizer: Optimizer,
    pub seed: u64,
    /// Rayon threads = chunks per minibatch; 0 means all available cores.
    pub threads: usize,
    /// Run folder for metrics.csv, summary.json and checkpoint.bin.
    pub out_dir: PathBuf,
    /// Continue from `out_dir/checkpoint.bin`.
    pub resume: bool,
    /// Use only the first n training / test images (file order).
    pub train_count: Option<usize>,
    pub test_count: Option<usize>,
    /// Show progress on stderr (a bar on a terminal, else one line per epoch).
    pub progress: bool,
    /// Extra keys merged into summary.json.
    pub extra_summary: serde_json::Map<String, serde_json::Value>,
    /// Benchmark mode: no test evaluation, no files (`out_dir` is not
    /// touched), no resume; `EpochMetrics::seconds` is the training loop
    /// alone (shuffle, batches, updates).
    pub timing_only: bool,
}

impl TrainConfig {
    /// Plain SGD, batch 128, lr 0.05, no decay, one epoch, seed 0, all cores,
    /// no progress output.
    pub fn new(name: &str, out_dir: impl Into<PathBuf>) -> Self {
        TrainConfig {
            name: name.to_string(),
            title: name.to_string(),
            epochs: 1,
            batch_size: 128,
            lr: 0.05,
            decay: 0.0,
            optimizer: Optimizer::Sgd,
            seed: 0,
            threads: 0,
            out_dir: out_dir.into(),
            resume: false,
            train_count: None,
            test_count: None,
            progress: false,
            extra_summary: serde_json::Map::new(),
            timing_only: false,
        }
    }
}

/// How a DAE layer is trained.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DaeConfig {
    /// Layer to train, from 1.
    pub layer: usize,
    /// The study's image-space scheme or the layer-local one.
    pub scheme: DaeScheme,
    /// Probability that a pixel survives the masking noise (the study: 0.9).
    pub keep_prob: f32,
    /// KL sparsity penalty on the trained layer's mean activation.
    pub sparsity: Option<Sparsity>,
}

impl DaeConfig {
    /// The study's B1 setting for `layer`: image space, keep 0.9, no sparsity.
    pub fn study(layer: usize) -> Self {
        DaeConfig {
            layer,
            scheme: DaeScheme::ImageSpace,
            keep_prob: 0.9,
            sparsity: None,
        }
    }
}

/// Metrics of one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// From 1.
    pub epoch: usize,
    pub train_cost: f64,
    pub test_cost: Option<f64>,
    /// Classifiers only.
    pub test_accuracy: Option<f64>,
    /// Wall time of the epoch including evaluation.
    pub seconds: f64,
}

/// The last epoch's test accuracy (classifiers), if any.
pub fn final_accuracy(metrics: &[EpochMetrics]) -> Option<f64> {
    metrics.last().and_then(|m| m.test_accuracy)
}

/// The first epoch whose test accuracy reaches `threshold`, if any.
pub fn first_epoch_reaching(metrics: &[EpochMetrics], threshold: f64) -> Option<usize> {
    metrics
        .iter()
        .find(|m| m.test_accuracy.is_some_and(|a| a >= threshold))
        .map(|m| m.epoch)
}

/// Why a run could not start or stopped.
#[derive(Debug)]
pub enum TrainError {
    /// A setting out of range or inconsistent with the data (reported before
    /// any training).
    Config(String),
    /// A file or folder could not be read or written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A checkpoint was refused.
    Checkpoint { path: PathBuf, reason: String },
    /// Another process holds the folder's lock (a run folder, or a whole
    /// `vcortex run`'s output folder).
    FolderBusy { dir: PathBuf },
    /// The training loss became NaN or infinite.
    NonFinite {
        epoch: usize,
        batch: usize,
        layer: String,
    },
    /// The training loss stayed finite, but the test cost after an epoch
    /// did not (the parameters have grown until some test image overflows).
    NonFiniteTest { epoch: usize, train_cost: f64 },
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Config(msg) => write!(f, "invalid settings: {msg}"),
            TrainError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            TrainError::Checkpoint { path, reason } => {
                write!(f, "refusing checkpoint {}: {reason}", path.display())
            }
            TrainError::FolderBusy { dir } => write!(
                f,
                "{}: another vcortex run is working in this folder (it holds {}); wait for it \
                 to end, or choose another --out",
                dir.display(),
                dir.join(engine::LOCK_FILE).display()
            ),
            TrainError::NonFinite {
                epoch,
                batch,
                layer,
            } => write!(
                f,
                "training diverged: the loss became NaN or infinite in epoch {epoch} (batch \
                 {batch}), first at layer {layer}; try a smaller learning rate"
            ),
            TrainError::NonFiniteTest { epoch, train_cost } => write!(
                f,
                "training diverged: the test cost became NaN or infinite after epoch {epoch} \
                 (training cost {train_cost:.4e}); try a smaller learning rate or decay"
            ),
        }
    }
}

impl std::error::Error for TrainError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrainError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
