//! The study's experiments (A1-A3, B1-B3 and the subset comparisons) on the
//! library's models and training engine, each writing a run folder with
//! `metrics.csv`, `summary.json` and PNG figures. `study` runs them all.
//!
//! Every setting comes from `docs/STUDY.md` (the seed report plus the choices
//! its starter code made); [`Options`] lets a user override the common ones.

mod cnn;
mod dae;
mod figures;
mod study;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::data::{DataError, Dataset, Split};
use crate::model::CnnShape;
use crate::plot::PlotError;
use crate::report::ReportError;
use crate::train::{Optimizer, TrainConfig, TrainError};

pub use study::{run_all, StageOutcome};

/// Which experiment to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Experiment {
    /// CNN, mini-batch SGD, full data.
    A1,
    /// CNN with momentum 0.1 and 0.9, full data.
    A2,
    /// CNN with RMSProp, full data.
    A3,
    /// CNN: GD vs momentum 0.1 vs 0.9 vs RMSProp on the first 12000/2000 images.
    ASubset,
    /// Stacked denoising autoencoder 784-900-625-400 (and the 169-unit one).
    B1,
    /// Five-layer classifier fine-tuned from B1, and from random init.
    B2,
    /// B1 with KL sparsity and momentum, then fine-tuned.
    B3,
    /// Five-layer networks (pre-trained, sparse, random) vs the CNNs on 12000/2000.
    BSubset,
    /// Everything above, several stages at once (`--jobs`).
    All,
}

impl Experiment {
    /// The stages `vcortex run all` runs, in order.
    pub const STUDY: [Experiment; 8] = [
        Experiment::A1,
        Experiment::A2,
        Experiment::A3,
        Experiment::ASubset,
        Experiment::B1,
        Experiment::B2,
        Experiment::B3,
        Experiment::BSubset,
    ];

    /// A one-line description, for the plan and the report's stage table.
    pub fn title(self) -> &'static str {
        match self {
            Experiment::A1 => "A1: CNN, mini-batch SGD, 60000/10000",
            Experiment::A2 => "A2: CNN, momentum 0.1 and 0.9, 60000/10000",
            Experiment::A3 => "A3: CNN, RMSProp, 60000/10000",
            Experiment::ASubset => "A: GD vs momentum vs RMSProp on 12000/2000",
            Experiment::B1 => "B1: stacked denoising autoencoder 784-900-625-400 (and 784-169)",
            Experiment::B2 => "B2: five-layer classifier, pre-trained vs random init",
            Experiment::B3 => "B3: sparse stacked DAE with momentum, then fine-tuned",
            Experiment::BSubset => "B: CNNs vs five-layer networks on 12000/2000",
            Experiment::All => "the whole study",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Experiment::A1 => "a1",
            Experiment::A2 => "a2",
            Experiment::A3 => "a3",
            Experiment::ASubset => "a-subset",
            Experiment::B1 => "b1",
            Experiment::B2 => "b2",
            Experiment::B3 => "b3",
            Experiment::BSubset => "b-subset",
            Experiment::All => "all",
        }
    }

    /// The stages whose results this one reads, so that `run all` starts it
    /// only after them: b2 and b-subset fine-tune b1's (and b3's) stacks,
    /// and b-subset overlays a-subset's CNN curves. (b3 also draws its layer
    /// 1 beside b1's, a figure that `run all` draws once both have ended
    /// rather than hold b3 back.)
    pub fn reads(self) -> &'static [Experiment] {
        match self {
            Experiment::B2 => &[Experiment::B1],
            Experiment::BSubset => &[Experiment::B1, Experiment::B3, Experiment::ASubset],
            _ => &[],
        }
    }
}

/// How the DAE layers are pre-trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DaeSchemeArg {
    /// The seed's scheme: layer k's reconstruction is decoded down to image
    /// space and compared with the clean image.
    ImageSpace,
    /// The classic scheme: each layer reconstructs its own (clean) input.
    LayerLocal,
}

impl From<DaeSchemeArg> for crate::model::DaeScheme {
    fn from(s: DaeSchemeArg) -> Self {
        match s {
            DaeSchemeArg::ImageSpace => crate::model::DaeScheme::ImageSpace,
            DaeSchemeArg::LayerLocal => crate::model::DaeScheme::LayerLocal,
        }
    }
}

/// User settings shared by every experiment; `None` keeps the study's value.
#[derive(Clone, Debug)]
pub struct Options {
    pub data_dir: PathBuf,
    /// Root of the run folders (`runs/`).
    pub out_dir: PathBuf,
    pub seed: u64,
    /// Chunks per minibatch = rayon threads (0 = all cores). With `jobs`
    /// stages at once, each stage gets `threads / jobs` of them.
    pub threads: usize,
    /// Stages of `run all` trained at once, each on `threads / jobs`
    /// threads (0: automatic, `ceil(threads / 4)` threads per stage).
    pub jobs: usize,
    /// A reduced version of each experiment (few epochs on small subsets).
    pub quick: bool,
    /// Continue stages from their checkpoints (completed stages are kept).
    pub resume: bool,
    pub progress: bool,
    pub epochs: Option<usize>,
    pub train_size: Option<usize>,
    pub test_size: Option<usize>,
    pub lr: Option<f32>,
    pub momentum: Option<f32>,
    pub decay: Option<f32>,
    pub batch_size: Option<usize>,
    /// How b1's and b3's stacks pre-train (`None`: the study's image-space
    /// scheme).
    pub scheme: Option<DaeSchemeArg>,
    /// The command line, recorded in each summary.json.
    pub command: String,
}

impl Options {
    /// The study's settings with output under `out_dir`.
    pub fn new(data_dir: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> Self {
        Options {
            data_dir: data_dir.into(),
            out_dir: out_dir.into(),
            seed: 1,
            threads: 0,
            jobs: 0,
            quick: false,
            resume: false,
            progress: true,
            epochs: None,
            train_size: None,
            test_size: None,
            lr: None,
            momentum: None,
            decay: None,
            batch_size: None,
            scheme: None,
            command: String::new(),
        }
    }

    /// Checks ranges before any work starts.
    pub fn validate(&self) -> Result<(), ExpError> {
        let bad = |msg: String| Err(ExpError::Config(msg));
        if let Some(0) = self.epochs {
            return bad("--epochs must be at least 1".into());
        }
        if let Some(0) = self.batch_size {
            return bad("--batch-size must be at least 1".into());
        }
        if let Some(0) = self.train_size {
            return bad("--train-size must be at least 1".into());
        }
        if let Some(0) = self.test_size {
            return bad("--test-size must be at least 1".into());
        }
        if let Some(lr) = self.lr {
            if !(lr.is_finite() && lr > 0.0) {
                return bad(format!("--lr must be a positive number, got {lr}"));
            }
        }
        if let Some(m) = self.momentum {
            if !(m.is_finite() && (0.0..1.0).contains(&m)) {
                return bad(format!("--momentum must be in [0, 1), got {m}"));
            }
        }
        if let Some(d) = self.decay {
            if !(d.is_finite() && d >= 0.0) {
                return bad(format!("--decay must be >= 0, got {d}"));
            }
        }
        Ok(())
    }
}

/// Why an experiment failed.
#[derive(Debug)]
pub enum ExpError {
    Config(String),
    Data(DataError),
    Train(TrainError),
    Plot(PlotError),
    Report(ReportError),
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A stage needs the output of an earlier one.
    Missing {
        what: String,
        path: PathBuf,
        hint: String,
    },
    /// A stage's error in a study that trains several at once.
    Stage {
        stage: Experiment,
        source: Box<ExpError>,
    },
    /// A stage's thread could not be started.
    Spawn {
        stage: Experiment,
        source: std::io::Error,
    },
}

impl fmt::Display for ExpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpError::Config(m) => write!(f, "invalid settings: {m}"),
            ExpError::Data(e) => write!(f, "{e}"),
            ExpError::Train(e) => write!(f, "{e}"),
            ExpError::Plot(e) => write!(f, "{e}"),
            ExpError::Report(e) => write!(f, "{e}"),
            ExpError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ExpError::Missing { what, path, hint } => {
                write!(f, "{what} not found at {} ({hint})", path.display())
            }
            ExpError::Stage { stage, source } => write!(f, "stage {}: {source}", stage.name()),
            ExpError::Spawn { stage, source } => {
                write!(
                    f,
                    "stage {}: cannot start its thread: {source}",
                    stage.name()
                )
            }
        }
    }
}

impl std::error::Error for ExpError {}

impl From<DataError> for ExpError {
    fn from(e: DataError) -> Self {
        ExpError::Data(e)
    }
}
/// A failed atomic write (`jsonfile::write_atomic`): the path asked for.
impl From<(PathBuf, std::io::Error)> for ExpError {
    fn from((path, source): (PathBuf, std::io::Error)) -> Self {
        ExpError::Io { path, source }
    }
}
impl From<TrainError> for ExpError {
    fn from(e: TrainError) -> Self {
        ExpError::Train(e)
    }
}
impl From<PlotError> for ExpError {
    fn from(e: PlotError) -> Self {
        ExpError::Plot(e)
    }
}
impl From<ReportError> for ExpError {
    fn from(e: ReportError) -> Self {
        ExpError::Report(e)
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExpError + '_ {
    move |source| ExpError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The data an experiment trains and tests on: the first `train`/`test`
/// images in file order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes {
    pub train: usize,
    pub test: usize,
}

/// Runs one experiment (or all of them) and rebuilds the report.
pub fn run(exp: Experiment, opts: &Options) -> Result<Vec<StageOutcome>, ExpError> {
    opts.validate()?;
    // --momentum sets the one run with a free momentum value: b3's
    // pre-training. a2 and a-subset compare the study's 0.1 and 0.9.
    if let Some(m) = opts.momentum {
        match exp {
            Experiment::B3 => {}
            Experiment::All => crate::note!(
                "note: --momentum {m} applies to b3's pre-training; a2 and a-subset keep the \
                 study's 0.1 and 0.9, which they compare"
            ),
            other => {
                return Err(ExpError::Config(format!(
                    "--momentum sets the momentum of b3's pre-training; {} has no run it \
                     applies to (a2 and a-subset compare the study's 0.1 and 0.9)",
                    other.name()
                )))
            }
        }
    }
    // --scheme sets how the stacks of b1 and b3 pre-train: refused, like
    // --momentum, where no run would use it rather than ignored.
    if opts.scheme.is_some() && !matches!(exp, Experiment::B1 | Experiment::B3 | Experiment::All) {
        return Err(ExpError::Config(format!(
            "--scheme sets how b1's and b3's stacks pre-train; {} has no run it applies to",
            exp.name()
        )));
    }
    if exp == Experiment::All {
        // A --jobs the threads cannot hold stops here, before the data loads.
        study::Lanes::new(study::total_threads(opts), opts.jobs)?;
    }
    if opts.jobs > 1 && exp != Experiment::All {
        return Err(ExpError::Config(format!(
            "--jobs {} trains several stages at once; {} is one stage, whose runs train one \
             after the other (--jobs applies to `run all`)",
            opts.jobs,
            exp.name()
        )));
    }
    let dataset = Dataset::load(&opts.data_dir)?;
    check_image_shape(&dataset)?;
    if opts.out_dir.exists() && !opts.out_dir.is_dir() {
        return Err(ExpError::Config(format!(
            "--out {}: exists and is not a directory",
            opts.out_dir.display()
        )));
    }
    std::fs::create_dir_all(&opts.out_dir).map_err(io_err(&opts.out_dir))?;
    // One command at a time in an output folder: stages read each other's
    // stacks, merge summaries and draw figures after their runs' own locks
    // are gone.
    let _out_lock = crate::train::lock_folder(&opts.out_dir)?;
    // What a killed study's atomic writes left (study.json, the report).
    crate::jsonfile::remove_stale_temp_files(&opts.out_dir, None);
    let stages: Vec<Experiment> = if exp == Experiment::All {
        Experiment::STUDY.to_vec()
    } else {
        vec![exp]
    };
    run_all(&stages, &dataset, opts, exp == Experiment::All)
}

/// Every model of the study takes the CNN's 28 x 28 images (the DAE stack
/// its 784 pixels): other sizes are refused before any stage starts, naming
/// the file.
pub fn check_image_shape(data: &Dataset) -> Result<(), ExpError> {
    let (h, w) = (CnnShape::STUDY.in_h, CnnShape::STUDY.in_w);
    let [train_images, _, test_images, _] = data.files();
    for (split, file) in [(data.train(), train_images), (data.test(), test_images)] {
        if split.count > 0 && (split.rows, split.cols) != (h, w) {
            return Err(ExpError::Config(format!(
                "{}: images are {}x{}, the study's models take {h}x{w}",
                file.path().display(),
                split.rows,
                split.cols
            )));
        }
    }
    Ok(())
}

/// Trains one stage, `exp`. `b3_compares_now`: b3 draws its layer 1 beside b1's when
/// b1's stack exists (false in a study that may train b1 beside b3: it
/// calls [`dae::compare_b3_with_b1`] once both have ended).
pub(crate) fn run_stage(
    exp: Experiment,
    data: &Dataset,
    opts: &Options,
    b3_compares_now: bool,
) -> Result<Vec<Map<String, Value>>, ExpError> {
    match exp {
        Experiment::A1 => cnn::a1(data, opts),
        Experiment::A2 => cnn::a2(data, opts),
        Experiment::A3 => cnn::a3(data, opts),
        Experiment::ASubset => cnn::a_subset(data, opts),
        Experiment::B1 => dae::b1(data, opts),
        Experiment::B2 => dae::b2(data, opts),
        Experiment::B3 => dae::b3(data, opts, b3_compares_now),
        Experiment::BSubset => dae::b_subset(data, opts),
        Experiment::All => unreachable!("`all` is expanded into stages"),
    }
}

/// Sizes for a stage: the study's, reduced by `--quick`, overridden by flags,
/// checked against the data.
pub(crate) fn sizes(
    data: &Dataset,
    opts: &Options,
    study_train: Option<usize>,
    study_test: Option<usize>,
) -> Result<Sizes, ExpError> {
    let (train_all, test_all) = (data.train().count, data.test().count);
    let mut train = study_train.unwrap_or(train_all);
    let mut test = study_test.unwrap_or(test_all);
    if opts.quick {
        train = train.min(QUICK_TRAIN);
        test = test.min(QUICK_TEST);
    }
    train = opts.train_size.unwrap_or(train);
    test = opts.test_size.unwrap_or(test);
    // Name the flag only when it was given: otherwise the size is the
    // stage's own (the subsets' first 12000 / 2000 images).
    let too_many = |what: &str, n: usize, have: usize, flag: Option<usize>, flag_name: &str| {
        let dir = opts.data_dir.display();
        ExpError::Config(match flag {
            Some(_) => format!("{flag_name} {n} is larger than the {have} {what} images in {dir}"),
            None => {
                format!("this stage uses the first {n} {what} images, but {dir} holds only {have}")
            }
        })
    };
    if train > train_all {
        return Err(too_many(
            "training",
            train,
            train_all,
            opts.train_size,
            "--train-size",
        ));
    }
    if test > test_all {
        return Err(too_many(
            "test",
            test,
            test_all,
            opts.test_size,
            "--test-size",
        ));
    }
    Ok(Sizes { train, test })
}

/// The subset stages' images (a-subset, b-subset): the first 12000 training
/// and 2000 test images, as the report's comparison runs.
const SUBSET_TRAIN: usize = 12000;
const SUBSET_TEST: usize = 2000;

/// The images `stage` trains and tests on, or the error it would stop with
/// (a subset larger than the data, a size flag past it): checked for every
/// stage before a study starts, so that none fails after others trained.
pub(crate) fn stage_sizes(
    stage: Experiment,
    data: &Dataset,
    opts: &Options,
) -> Result<Sizes, ExpError> {
    match stage {
        Experiment::ASubset | Experiment::BSubset => {
            sizes(data, opts, Some(SUBSET_TRAIN), Some(SUBSET_TEST))
        }
        _ => sizes(data, opts, None, None),
    }
}

/// `--quick`: training and test images per stage.
pub(crate) const QUICK_TRAIN: usize = 3000;
pub(crate) const QUICK_TEST: usize = 1000;

/// Epochs for a stage: the study's, or `--quick`'s, or `--epochs`.
pub(crate) fn epochs(opts: &Options, study: usize, quick: usize) -> usize {
    opts.epochs
        .unwrap_or(if opts.quick { quick.min(study) } else { study })
}

/// A training config for one run folder with the common overrides applied.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_config(
    opts: &Options,
    name: &str,
    title: &str,
    out_dir: PathBuf,
    epochs: usize,
    lr: f32,
    decay: f32,
    optimizer: Optimizer,
    sizes: Sizes,
) -> TrainConfig {
    let mut cfg = TrainConfig::new(name, out_dir.clone());
    cfg.title = title.to_string();
    cfg.epochs = epochs;
    cfg.batch_size = opts.batch_size.unwrap_or(128);
    cfg.lr = opts.lr.unwrap_or(lr);
    cfg.decay = opts.decay.unwrap_or(decay);
    cfg.optimizer = match (optimizer, opts.momentum) {
        (Optimizer::Momentum { .. }, Some(gamma)) => Optimizer::Momentum { gamma },
        (o, _) => o,
    };
    cfg.seed = opts.seed;
    cfg.threads = opts.threads;
    // Whatever is there: the engine refuses a checkpoint.bin that is not a
    // regular file rather than starting over beside it.
    cfg.resume = opts.resume && out_dir.join("checkpoint.bin").exists();
    cfg.train_count = Some(sizes.train);
    cfg.test_count = Some(sizes.test);
    cfg.progress = opts.progress;
    let mut extra = Map::new();
    extra.insert("command".into(), json!(opts.command));
    extra.insert("data".into(), json!(opts.data_dir.display().to_string()));
    extra.insert("machine".into(), json!(machine_description()));
    extra.insert(
        "settings".into(),
        json!({
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "learning_rate": cfg.lr,
            "decay": cfg.decay,
            "optimizer": optimizer_text(&cfg.optimizer),
            "train_images": sizes.train,
            "test_images": sizes.test,
            "seed": cfg.seed,
        }),
    );
    cfg.extra_summary = extra;
    cfg
}

pub(crate) fn optimizer_text(o: &Optimizer) -> String {
    match o {
        Optimizer::Sgd => "SGD".into(),
        Optimizer::Momentum { gamma } => format!("momentum {gamma}"),
        Optimizer::RmsProp { rho, eps } => format!("RMSProp rho {rho} eps {eps}"),
    }
}

/// The processor model and core count, for summaries and the report.
pub fn machine_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{model}, {cores} cores")
}

/// Pixels of `n` images starting at `first`, scaled to [0, 1].
pub(crate) fn images_f32(split: Split, first: usize, n: usize) -> Vec<f32> {
    (first..first + n)
        .flat_map(|i| split.image(i).iter().map(|&p| p as f32 / 255.0))
        .collect()
}

/// Merges `extra` into `dir/summary.json` (written atomically).
pub(crate) fn merge_summary(
    dir: &Path,
    extra: Map<String, Value>,
) -> Result<Map<String, Value>, ExpError> {
    // A stage's folder (figures, its summary) is no run folder: its killed
    // writes' leftovers go here.
    crate::jsonfile::remove_stale_temp_files(dir, None);
    Ok(crate::jsonfile::merge_object(
        &dir.join("summary.json"),
        extra,
    )?)
}

/// Writes JSON atomically (see [`crate::jsonfile::write_atomic`]).
pub(crate) fn write_json(path: &Path, value: &Value) -> Result<(), ExpError> {
    Ok(crate::jsonfile::write_atomic(path, value)?)
}

/// A figure entry for summary.json.
pub(crate) fn figure(file: &str, caption: &str) -> Value {
    json!({ "file": file, "caption": caption })
}

/// The seed report's figures for a run, as summary.json's `reference`.
pub(crate) fn reference(pairs: &[(&str, &str)]) -> Value {
    let mut m = Map::new();
    m.insert("label".into(), json!("seed report"));
    for (k, v) in pairs {
        m.insert((*k).into(), json!(v));
    }
    Value::Object(m)
}

/// The identifying keys of a folder that groups a stage's runs (a comparison,
/// a stack), to which the caller adds figures, results and the reference.
pub(crate) fn group_summary(
    opts: &Options,
    name: &str,
    title: &str,
    model: &str,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    m.insert("title".into(), json!(title));
    m.insert("model".into(), json!(model));
    m.insert("command".into(), json!(opts.command));
    m
}
