//! The epoch loop shared by classifiers and DAE layers, and the two tasks.

use std::ops::{ControlFlow, Range};
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use rayon::ThreadPool;
use serde_json::{json, Map, Value};

use super::checkpoint::Checkpoint;
use super::fused::{self, Block};
use super::progress::EpochProgress;
use super::report;
use super::{DaeConfig, EpochMetrics, Optimizer, TrainConfig, TrainError};
use crate::bench::profile::{timed, Phase, FUSED_UPDATE};
use crate::data::resident::ResidentSplit;
use crate::data::Split;
use crate::kernels::noise::{mask_noise, mask_noise_rows};
use crate::kernels::optim::{momentum_update, rmsprop_update, sgd_update};
use crate::kernels::rng::Rng;
use crate::kernels::simd::prefetch;
use crate::kernels::team::Team;
use crate::model::{Classifier, DaeScheme, DaeStack, DaeWorkspace};
use crate::nn::{u8_to_unit, Factors, ParamLayout, TensorGrad};

/// Full minibatches per epoch: the last partial batch is dropped
/// (60000 / 128 -> 468, 12000 / 128 -> 93).
pub fn batches_per_epoch(images: usize, batch_size: usize) -> usize {
    images.checked_div(batch_size).unwrap_or(0)
}

/// A hook called after every epoch (after the files are written) with the
/// epoch's metrics and the model, e.g. to draw figures; `Break` stops the run.
pub type Observer<'o, M> = &'o mut dyn FnMut(&EpochMetrics, &M) -> ControlFlow<()>;

/// What a finished (or stopped) run returns.
#[derive(Clone, Debug, PartialEq)]
pub struct RunReport {
    /// Every epoch's metrics, including those restored from a checkpoint.
    pub metrics: Vec<EpochMetrics>,
    /// Epochs restored from the checkpoint (0 for a fresh run).
    pub resumed_epochs: usize,
    /// The observer asked to stop before `epochs`.
    pub stopped_early: bool,
}

/// Rows of chunk `c` when `rows` are split into `chunks` contiguous parts.
fn chunk_bounds(rows: usize, chunks: usize, c: usize) -> Range<usize> {
    (c * rows / chunks)..((c + 1) * rows / chunks)
}

/// Elements per task of the parallel reduction and update (a multiple of
/// every SIMD width, so blocking does not move any element between a
/// kernel's vector body and its scalar tail).
const REDUCE_BLOCK: usize = 16 * 1024;

/// grad[i] <- sum over chunks, in chunk order, of grad_of(chunk)[i]; then the
/// optimizer step on `params` with that gradient. One parallel pass over
/// fixed blocks: every element is summed in the same order and updated by an
/// elementwise rule whatever thread handles its block, so the result depends
/// only on the chunk count.
#[allow(clippy::too_many_arguments)]
fn reduce_and_step<T: Sync>(
    team: &Team,
    chunks: &[T],
    grad_of: impl Fn(&T) -> &[f32] + Sync,
    grad: &mut [f32],
    params: &mut [f32],
    opt: &mut OptimizerState,
    lr: f32,
    decay: f32,
) {
    let sum_block = |i: usize, block: &mut [f32]| {
        let base = i * REDUCE_BLOCK;
        let span = base..base + block.len();
        block.copy_from_slice(&grad_of(&chunks[0])[span.clone()]);
        for ch in &chunks[1..] {
            for (o, &g) in block.iter_mut().zip(&grad_of(ch)[span.clone()]) {
                *o += g;
            }
        }
    };
    let optimizer = opt.optimizer;
    let state = &mut opt.buf;
    let step_block = |i: usize, g: &mut [f32], p: &mut [f32], s: &mut [f32]| {
        sum_block(i, g);
        match optimizer {
            Optimizer::Sgd => sgd_update(p, g, lr, decay),
            Optimizer::Momentum { gamma } => momentum_update(p, s, g, lr, decay, gamma),
            Optimizer::RmsProp { rho, eps } => rmsprop_update(p, s, g, lr, decay, rho, eps),
        }
    };
    // Blocks first..: each block's state slice, or none for SGD (no state).
    let run_group = |first: usize, g: &mut [f32], p: &mut [f32], s: &mut [f32]| {
        for (j, (gb, pb)) in g
            .chunks_mut(REDUCE_BLOCK)
            .zip(p.chunks_mut(REDUCE_BLOCK))
            .enumerate()
        {
            let sb = if s.is_empty() {
                &mut [][..]
            } else {
                &mut s[j * REDUCE_BLOCK..j * REDUCE_BLOCK + gb.len()]
            };
            step_block(first + j, gb, pb, sb);
        }
    };
    if grad.len() <= SEQUENTIAL_STEP_MAX {
        // Starting the team costs more than the pass itself (the CNN has
        // 28k parameters); the blocks and their order are the same, so the
        // result is bit-identical to the parallel pass.
        return run_group(0, grad, params, state);
    }
    // At most STACK_PARTS groups of whole blocks, each run in order by one
    // thread: no allocation, and every block as in the sequential pass.
    let blocks = grad.len().div_ceil(REDUCE_BLOCK);
    let group = REDUCE_BLOCK * blocks.div_ceil(fused::STACK_PARTS);
    let groups = grad
        .chunks_mut(group)
        .zip(params.chunks_mut(group))
        .enumerate();
    if !state.is_empty() {
        let parts = groups.zip(state.chunks_mut(group));
        fused::for_each_part(team, parts, |((i, (g, p)), s)| {
            run_group(*i * group / REDUCE_BLOCK, g, p, s)
        });
    } else {
        fused::for_each_part(team, groups, |(i, (g, p))| {
            run_group(*i * group / REDUCE_BLOCK, g, p, &mut [])
        });
    }
}

/// The fused update ([`fused::run`]) of `params` with the optimizer's state,
/// on the calling thread for small models (as [`reduce_and_step`]; the
/// blocks and their order are the same, so is the result).
fn fused_step<T: Sync, F>(
    team: &Team,
    step: &fused::Step<'_, T, F>,
    blocks: &[Block],
    params: &mut [f32],
    opt: &mut OptimizerState,
    grad: &mut [f32],
) where
    F: Fn(&T, usize, usize) -> Factors<'_> + Sync,
{
    let state = &mut opt.buf;
    let team = (params.len() > SEQUENTIAL_STEP_MAX).then_some(team);
    fused::run(step, blocks, params, state, grad, team);
}

/// Parameter counts up to which the reduction and update run on the calling
/// thread (a few blocks: tens of microseconds of work).
const SEQUENTIAL_STEP_MAX: usize = 4 * REDUCE_BLOCK;

struct OptimizerState {
    optimizer: Optimizer,
    /// Velocity (momentum) or mean square (RMSProp); empty for SGD.
    buf: Vec<f32>,
}

impl OptimizerState {
    fn new(optimizer: Optimizer, n: usize) -> Self {
        let len = if optimizer == Optimizer::Sgd { 0 } else { n };
        OptimizerState {
            optimizer,
            buf: vec![0.0; len],
        }
    }
}

/// A trainable thing the epoch loop drives.
trait Task {
    fn model_kind(&self) -> String;
    fn layout(&self) -> &ParamLayout;
    fn params(&self) -> &[f32];
    fn params_mut(&mut self) -> &mut [f32];
    /// The range of `params` this run updates.
    fn trainable(&self) -> Range<usize>;
    /// The layer named when the loss is non-finite but the parameters are not.
    fn loss_layer(&self) -> String;
    /// The first layer whose output in the last batch was non-finite.
    fn diverged_layer(&self) -> Option<String>;
    /// Runs forward and backward on the batch `images` (each chunk keeps its
    /// gradient, or its deltas for the fused update) and returns the batch's
    /// mean cost.
    fn batch(&mut self, team: &Team, images: &[u32], epoch: usize, batch: usize) -> f64;
    /// Applies the optimizer to the trainable parameters with the last
    /// batch's gradient: summed from the chunk gradients into `grad`, or
    /// computed block by block by the fused update (`grad` as scratch).
    fn step(
        &mut self,
        team: &Team,
        grad: &mut [f32],
        opt: &mut OptimizerState,
        lr: f32,
        decay: f32,
    );
    /// The profile's name for [`Task::step`]: "update" (chunk-gradient
    /// reduction + optimizer) or "dW+update" (the fused phase, which also
    /// computes the weight gradients).
    fn update_label(&self) -> &'static str;
    /// (test cost, test accuracy).
    fn evaluate(&mut self, pool: &ThreadPool) -> (Option<f64>, Option<f64>);
    /// Images in the (subset) test split.
    fn test_count(&self) -> usize;
    /// The `layer` column of metrics.csv, for DAE layers.
    fn csv_layer(&self) -> Option<usize>;
    fn settings(&self) -> Map<String, Value>;
}

fn config_error<T>(msg: String) -> Result<T, TrainError> {
    Err(TrainError::Config(msg))
}

/// Checks the settings that do not depend on the model; returns the subsets.
fn validate_common<'a>(
    cfg: &TrainConfig,
    train: Split<'a>,
    test: Split<'a>,
    input_len: usize,
) -> Result<(Split<'a>, Split<'a>), TrainError> {
    if cfg.timing_only && cfg.resume {
        return config_error("a timing-only run cannot resume from a checkpoint".into());
    }
    if cfg.epochs == 0 {
        return config_error("epochs must be at least 1".into());
    }
    if cfg.batch_size == 0 {
        return config_error("batch size must be at least 1".into());
    }
    if !cfg.lr.is_finite() || cfg.lr <= 0.0 {
        return config_error(format!(
            "learning rate must be a positive number, got {}",
            cfg.lr
        ));
    }
    if !cfg.decay.is_finite() || cfg.decay < 0.0 {
        return config_error(format!(
            "weight decay must be zero or positive, got {}",
            cfg.decay
        ));
    }
    match cfg.optimizer {
        Optimizer::Sgd => {}
        Optimizer::Momentum { gamma } => {
            if !(0.0..1.0).contains(&gamma) {
                return config_error(format!("momentum must be in [0, 1), got {gamma}"));
            }
        }
        Optimizer::RmsProp { rho, eps } => {
            if !(0.0..1.0).contains(&rho) {
                return config_error(format!("RMSProp rho must be in [0, 1), got {rho}"));
            }
            if !eps.is_finite() || eps <= 0.0 {
                return config_error(format!("RMSProp epsilon must be positive, got {eps}"));
            }
        }
    }
    // The decay term alone maps a weight p to (1 - lr decay) p each step
    // (with momentum, p' = (1 + gamma - lr decay) p - gamma p_prev, stable
    // for lr decay < 2 (1 + gamma)): at or past the bound the weights grow
    // without limit whatever the gradients do, and the run only wastes time
    // before it overflows.
    let decay_bound = match cfg.optimizer {
        Optimizer::Momentum { gamma } => 2.0 * (1.0 + f64::from(gamma)),
        Optimizer::Sgd | Optimizer::RmsProp { .. } => 2.0,
    };
    let lr_decay = f64::from(cfg.lr) * f64::from(cfg.decay);
    if lr_decay >= decay_bound {
        return config_error(format!(
            "learning rate x weight decay = {} x {} = {} must be below {}: the decay term \
             alone would make the weights grow without bound",
            compact(cfg.lr),
            compact(cfg.decay),
            // The product in f32, as the flags are (0.05 x 40 = 2, not
            // 2.0000000298), unless only f64 holds it.
            match cfg.lr * cfg.decay {
                p if p.is_finite() => compact(p),
                _ => compact(lr_decay),
            },
            decay_bound as f32
        ));
    }
    for (what, s) in [("training", &train), ("test", &test)] {
        if s.images.len() < s.count * s.image_len() || s.labels.len() < s.count {
            return config_error(format!(
                "{what} split holds fewer bytes than its count says"
            ));
        }
    }
    let subset = |what: &str, want: Option<usize>, split: Split<'a>| {
        let n = want.unwrap_or(split.count);
        if n > split.count {
            return config_error(format!(
                "{what} subset of {n} images is larger than the {} available",
                split.count
            ));
        }
        Ok(split.take(n))
    };
    let train = subset("training", cfg.train_count, train)?;
    let test = subset("test", cfg.test_count, test)?;
    if cfg.batch_size > train.count {
        return config_error(format!(
            "batch size {} is larger than the {} training images: no full batch to train on",
            cfg.batch_size, train.count
        ));
    }
    for (what, s) in [("training", &train), ("test", &test)] {
        if s.count > 0 && s.image_len() != input_len {
            return config_error(format!(
                "{what} images have {}x{} = {} pixels, the model takes {input_len}",
                s.rows,
                s.cols,
                s.image_len()
            ));
        }
    }
    Ok((train, test))
}

/// `x` as written by hand: plain where that is short, else in exponent form
/// (1e30, not thirty-one digits).
fn compact<T: Copy + Into<f64> + std::fmt::Display + std::fmt::LowerExp>(x: T) -> String {
    let wide: f64 = x.into();
    if wide != 0.0 && !(1e-4..1e6).contains(&wide.abs()) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

/// Creates the run folder, takes its lock and proves it writable (nothing
/// for a timing-only run, which writes no files). The returned file holds
/// the lock (an advisory lock on [`LOCK_FILE`], released when it is dropped
/// or the process ends): a second process training into the same folder is
/// refused instead of interleaving its epochs with this one's.
fn prepare_dir(cfg: &TrainConfig) -> Result<Option<std::fs::File>, TrainError> {
    if cfg.timing_only {
        return Ok(None);
    }
    let dir = &cfg.out_dir;
    if dir.exists() && !dir.is_dir() {
        let e = std::io::Error::other("exists and is not a directory");
        return Err(TrainError::io(dir, e));
    }
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let lock = lock_folder(dir)?;
    // What a killed run's atomic writes left (summary, metrics, figures).
    crate::jsonfile::remove_stale_temp_files(dir, None);
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok").map_err(|e| TrainError::io(&probe, e))?;
    std::fs::remove_file(&probe).map_err(|e| TrainError::io(&probe, e))?;
    Ok(Some(lock))
}

/// Removes what an earlier run left in `dir` that this one, starting over,
/// would otherwise sit beside: its checkpoint (which a later `--resume`
/// would continue though this run replaced it) and the figures its
/// summary.json lists (drawn after training; plain `.png` names in the
/// folder only, so nothing else of a caller's folder is touched), with that
/// list. metrics.csv and the engine's summary keys are rewritten at the
/// start. So a run that fails early leaves no mix of two runs behind.
fn remove_earlier_run(dir: &Path, checkpoint: &Path) -> Result<(), TrainError> {
    if checkpoint.is_file() {
        std::fs::remove_file(checkpoint).map_err(|e| TrainError::io(checkpoint, e))?;
    }
    let summary_path = dir.join("summary.json");
    let mut summary = crate::jsonfile::read_object(&summary_path);
    let Some(figures) = summary.remove("figures") else {
        return Ok(());
    };
    for (name, _) in crate::report::listed_figures(&figures).unwrap_or_default() {
        let plain = Path::new(&name).file_name() == Some(std::ffi::OsStr::new(&name));
        let path = dir.join(&name);
        if plain && name.ends_with(".png") && path.is_file() {
            std::fs::remove_file(&path).map_err(|e| TrainError::io(&path, e))?;
        }
    }
    crate::jsonfile::write_atomic(&summary_path, &summary)
        .map_err(|(path, e)| TrainError::io(&path, e))
}

/// The advisory lock file of a run folder or an output folder.
pub(crate) const LOCK_FILE: &str = ".lock";

/// Whether another process holds `dir/.lock` now (a file that is missing or
/// cannot be read counts as free). Takes nothing: the probe's lock, if any,
/// is released on return.
pub(crate) fn folder_busy(dir: &Path) -> bool {
    std::fs::File::open(dir.join(LOCK_FILE))
        .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
}

/// Takes an advisory lock on `dir/`[`LOCK_FILE`] (created if missing), held until
/// the returned file is dropped or the process ends. Another process holding
/// it is [`TrainError::FolderBusy`]; a file system without locks (some
/// network mounts) gets a note and no lock.
pub(crate) fn lock_folder(dir: &Path) -> Result<std::fs::File, TrainError> {
    let lock_path = dir.join(LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| TrainError::io(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(TrainError::FolderBusy {
                dir: dir.to_path_buf(),
            })
        }
        // A file system without locks (some network mounts): work unlocked.
        Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            crate::note!(
                "note: {} cannot be locked on this file system; nothing stops a second \
                 vcortex process from working in {} meanwhile",
                lock_path.display(),
                dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(TrainError::io(&lock_path, e)),
    }
    Ok(lock)
}

fn resolve_threads(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// A builder for a compute pool of `threads` workers (0 = rayon's default)
/// whose workers flush subnormals to zero; see
/// [`crate::kernels::flush_subnormals_on_this_thread`] for why. Every pool
/// that runs kernels is built from it (training, the bench, the CLI's global
/// pool).
pub fn compute_pool_builder(threads: usize) -> rayon::ThreadPoolBuilder {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .start_handler(|_| {
            crate::kernels::flush_subnormals_on_this_thread();
        })
}

/// The training pool. The calling thread flushes subnormals too, for the
/// work that runs outside the pool.
fn build_pool(threads: usize) -> Result<ThreadPool, TrainError> {
    crate::kernels::flush_subnormals_on_this_thread();
    compute_pool_builder(threads)
        .build()
        .map_err(|e| TrainError::Config(format!("cannot start {threads} threads: {e}")))
}

/// The settings summary.json records for a run.
fn run_settings<T: Task>(cfg: &TrainConfig, train_count: usize, task: &T) -> Map<String, Value> {
    let mut settings = Map::new();
    settings.insert("epochs".into(), json!(cfg.epochs));
    settings.insert("batch_size".into(), json!(cfg.batch_size));
    settings.insert("lr".into(), json!(cfg.lr));
    settings.insert("decay".into(), json!(cfg.decay));
    settings.insert("optimizer".into(), json!(cfg.optimizer));
    settings.insert("train_count".into(), json!(train_count));
    settings.insert("test_count".into(), json!(task.test_count()));
    settings.extend(task.settings());
    settings
}

/// The first setting in which a checkpoint's run and this one differ, as an
/// error message. Only the settings the checkpoint records are compared: one
/// written before a setting was recorded is not refused for lacking it.
/// [`START_KEY`] and [`THREADS_KEY`] are not compared here (a changed start
/// or thread count is not an error).
fn settings_mismatch(saved: &Map<String, Value>, now: &Map<String, Value>) -> Option<String> {
    // The named settings first, the data fingerprints last: a changed
    // --test-size changes both, and the setting says more.
    let named = saved
        .keys()
        .filter(|k| !is_data_setting(k) && !NOT_COMPARED.contains(&k.as_str()));
    let data = saved.keys().filter(|k| is_data_setting(k));
    for key in named.chain(data) {
        let (was, is) = (&saved[key], now.get(key));
        if !is.is_some_and(|is| same_setting(was, is)) {
            let show = |v: Option<&Value>| v.map_or_else(|| "nothing".into(), show_setting);
            return Some(if is_data_setting(key) {
                "checkpoint was trained on other data (its images or labels differ from \
                 this run's)"
                    .into()
            } else {
                format!(
                    "checkpoint was trained with {key} = {}, this run has {key} = {}",
                    show(Some(was)),
                    show(is)
                )
            });
        }
    }
    None
}

/// Setting equality through a checkpoint's JSON: numbers compare as the f32
/// the settings hold (serde_json reads some floats back one ulp of f64 off,
/// e.g. an lr of 0.03), objects field by field, anything else exactly.
fn same_setting(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_u64(), y.as_u64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64().map(|v| v as f32) == y.as_f64().map(|v| v as f32),
        },
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_setting(v, w)))
        }
        _ => a == b,
    }
}

/// The checkpoint setting that fingerprints the parameters a run started
/// from (before any resume): a run built on another one's result (a DAE
/// layer on the layers below, a fine-tune on a stack) whose base has been
/// trained again since its checkpoint starts over instead of resuming on the
/// old base.
const START_KEY: &str = "start";

/// The checkpoint setting that records the thread count its epochs ran on:
/// a resume on another count continues (a run may move to another machine)
/// with a note, since from there its sums round differently.
const THREADS_KEY: &str = "threads";

/// The checkpoint settings a resume does not refuse for differing.
const NOT_COMPARED: [&str; 2] = [START_KEY, THREADS_KEY];

/// 64-bit FNV-1a, the checkpoints' fingerprints: cheap, and enough to tell
/// one dataset or parameter set from another (not a defence against forgery).
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
    /// One unit (a byte, or all the bits of an f32): xor, then multiply.
    fn eat(&mut self, unit: u64) {
        self.0 = (self.0 ^ unit).wrapping_mul(0x0000_0100_0000_01b3);
    }
    fn eat_bytes(&mut self, bytes: impl IntoIterator<Item = u8>) {
        bytes.into_iter().for_each(|b| self.eat(b.into()));
    }
    /// `bytes` as little-endian 64-bit words, then the tail byte by byte.
    fn eat_words(&mut self, bytes: &[u8]) {
        let words = bytes.chunks_exact(8);
        let tail = words.remainder();
        for w in words {
            self.eat(u64::from_le_bytes(w.try_into().expect("8-byte chunk")));
        }
        self.eat_bytes(tail.iter().copied());
    }
    fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// [`Fnv1a`] over the bits of `params`, one f32 at a time.
fn params_fingerprint(params: &[f32]) -> String {
    let mut h = Fnv1a::new();
    params.iter().for_each(|p| h.eat(p.to_bits().into()));
    h.hex()
}

/// A setting as a person would write it: f32 values (stored as f64 in the
/// JSON) in their shortest f32 form, objects as `{key: value, ...}`.
fn show_setting(v: &Value) -> String {
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if f64::from(x as f32) == x {
                (x as f32).to_string()
            } else {
                x.to_string()
            }
        }
        Value::String(s) => s.clone(),
        Value::Object(m) => {
            let fields: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}: {}", show_setting(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        other => other.to_string(),
    }
}

/// Fingerprints of the data a run trains and tests on, as a checkpoint
/// keeps them (under `data`/`dataset` and `data_bytes`/`dataset_bytes`).
#[derive(Clone, Debug)]
pub(crate) struct DataPrint {
    /// FNV-1a over the shapes, every label and every 509th image byte: what
    /// checkpoints before `every_byte` recorded, kept so that they are still
    /// compared.
    pub sampled: String,
    /// The same over every image byte (eight at a time): FNV's step is a
    /// bijection of the running hash for a fixed input word, so any one
    /// changed byte always changes it. Both fingerprints of all of MNIST
    /// (55 MB) take about 15 ms (measured, 3 runs).
    pub every_byte: String,
}

impl DataPrint {
    /// Its fingerprints, in the order of [`USED_KEYS`] and [`DATASET_KEYS`].
    fn prints(&self) -> [&String; 2] {
        [&self.sampled, &self.every_byte]
    }

    /// Whether checkpoint `settings` recorded another whole dataset than the
    /// one this is the fingerprint of. A key the checkpoint lacks (one from
    /// before that fingerprint was kept) is not compared.
    pub(crate) fn differs_from_dataset_in(&self, settings: &Map<String, Value>) -> bool {
        DATASET_KEYS
            .into_iter()
            .zip(self.prints())
            .any(|(key, now)| {
                settings
                    .get(key)
                    .is_some_and(|was| was.as_str() != Some(now))
            })
    }
}

/// The [`DataPrint`] of `train` and `test`.
pub(crate) fn data_fingerprint(train: &Split, test: &Split) -> DataPrint {
    let (mut sampled, mut every_byte) = (Fnv1a::new(), Fnv1a::new());
    for s in [train, test] {
        let shape = [s.count, s.rows, s.cols].map(|x| x as u64);
        // Clipped slices: the splits may not be validated yet (that names the
        // problem; a panic here would not).
        let labels = s.labels.get(..s.count).unwrap_or(s.labels);
        let pixels = s.count.saturating_mul(s.image_len());
        let pixels = s.images.get(..pixels).unwrap_or(s.images);
        for h in [&mut sampled, &mut every_byte] {
            h.eat_bytes(shape.iter().flat_map(|x| x.to_le_bytes()));
            h.eat_bytes(labels.iter().copied());
        }
        sampled.eat_bytes(pixels.iter().step_by(509).copied());
        every_byte.eat_words(pixels);
    }
    DataPrint {
        sampled: sampled.hex(),
        every_byte: every_byte.hex(),
    }
}

/// [`data_fingerprint`]s a checkpoint keeps: a resume on other data is
/// refused, and a stage that builds on another's checkpoint (b2 on b1's
/// stack) can tell whether it came from the same dataset.
struct DataFingerprints {
    /// Of the subsets the run trains and tests on.
    used: DataPrint,
    /// Of the whole dataset they were taken from.
    dataset: DataPrint,
}

impl DataFingerprints {
    /// `dataset`: the full splits' fingerprint, taken before they were cut
    /// to `train` and `test`, whose counts it had (`dataset_counts`). The
    /// subsets are prefixes, so when neither was cut they are the same data
    /// and its fingerprint is not taken twice.
    fn new(
        dataset: DataPrint,
        dataset_counts: (usize, usize),
        train: &Split,
        test: &Split,
    ) -> Self {
        let used = if (train.count, test.count) == dataset_counts {
            dataset.clone()
        } else {
            data_fingerprint(train, test)
        };
        DataFingerprints { used, dataset }
    }

    /// The checkpoint settings that hold them.
    fn settings(&self) -> impl Iterator<Item = (&'static str, &String)> {
        let used = USED_KEYS.into_iter().zip(self.used.prints());
        used.chain(DATASET_KEYS.into_iter().zip(self.dataset.prints()))
    }
}

/// The checkpoint settings of the subsets' [`DataPrint`], in the order of
/// [`DataPrint::prints`].
const USED_KEYS: [&str; 2] = ["data", "data_bytes"];

/// The same for the whole dataset's.
const DATASET_KEYS: [&str; 2] = ["dataset", "dataset_bytes"];

/// Whether a checkpoint setting is one of the data fingerprints.
fn is_data_setting(key: &str) -> bool {
    USED_KEYS.contains(&key) || DATASET_KEYS.contains(&key)
}

/// The epoch loop: resume, shuffle, batches, updates, evaluation, files.
fn run<T: Task + Send>(
    task: &mut T,
    cfg: &TrainConfig,
    threads: usize,
    train_count: usize,
    data: &DataFingerprints,
    pool: &ThreadPool,
    on_epoch: &mut dyn FnMut(&EpochMetrics, &T) -> ControlFlow<()>,
) -> Result<RunReport, TrainError> {
    let dir = cfg.out_dir.as_path();
    let ck_path = dir.join("checkpoint.bin");
    let range = task.trainable();
    let mut opt = OptimizerState::new(cfg.optimizer, range.len());
    let signature = task.layout().signature();
    let settings = run_settings(cfg, train_count, task);
    let mut resume_settings = settings.clone();
    resume_settings.remove("epochs");
    for (key, print) in data.settings() {
        resume_settings.insert(key.into(), json!(print));
    }
    let start = json!(params_fingerprint(task.params()));
    resume_settings.insert(START_KEY.into(), start.clone());
    resume_settings.insert(THREADS_KEY.into(), json!(threads));
    let mut metrics: Vec<EpochMetrics> = Vec::new();
    if cfg.resume {
        if !ck_path.exists() {
            return config_error(format!(
                "cannot resume: no checkpoint.bin in {}",
                dir.display()
            ));
        }
        let ck = Checkpoint::load(&ck_path)?;
        ck.check_compatible(
            &ck_path,
            &task.model_kind(),
            &signature,
            cfg.optimizer.name(),
            task.params().len(),
            opt.buf.len(),
        )?;
        let mismatch = if ck.epochs_completed > cfg.epochs {
            Some(format!(
                "checkpoint has {} epochs, more than this run's {}: raise --epochs, or start \
                 over without --resume",
                ck.epochs_completed, cfg.epochs
            ))
        } else if ck.seed != cfg.seed {
            Some(format!(
                "checkpoint has seed {}, this run seed {}",
                ck.seed, cfg.seed
            ))
        } else if (ck.batch_size, ck.train_count) != (cfg.batch_size, train_count) {
            Some(format!(
                "checkpoint was trained with batch size {} on {} images, this run uses {} on {}",
                ck.batch_size, ck.train_count, cfg.batch_size, train_count
            ))
        } else if let Some(reason) = settings_mismatch(&ck.settings, &resume_settings) {
            Some(reason)
        } else if let Some(t) = task.layout().first_non_finite(&ck.params) {
            Some(format!("checkpoint holds non-finite values in {t}"))
        } else if ck.optimizer_state.iter().any(|v| !v.is_finite()) {
            Some("checkpoint holds non-finite optimizer state".into())
        } else {
            None
        };
        if let Some(reason) = mismatch {
            return Err(TrainError::Checkpoint {
                path: ck_path,
                reason,
            });
        }
        let start_changed = ck
            .settings
            .get(START_KEY)
            .is_some_and(|was| !same_setting(was, &start));
        if start_changed {
            crate::note!(
                "note: {} starts over: what it starts from (the run it builds on) was trained \
                 again since its checkpoint",
                dir.display()
            );
        } else {
            task.params_mut().copy_from_slice(&ck.params);
            opt.buf = ck.optimizer_state;
            metrics = ck.metrics;
            if let Some(was) = ck.settings.get(THREADS_KEY).and_then(Value::as_u64) {
                if was != threads as u64 {
                    crate::note!(
                        "note: {} trained its first {} epoch(s) on {was} thread(s) and \
                         continues on {threads}: from here its gradient sums round differently \
                         than on {was} all along (`--threads {was}`, with `--jobs 1` for `run \
                         all`, keeps them exact)",
                        dir.display(),
                        metrics.len()
                    );
                }
            }
        }
    }
    let resumed_epochs = metrics.len();
    let layer = task.csv_layer();
    let files = !cfg.timing_only;
    if files {
        if !cfg.resume && ck_path.exists() {
            crate::note!(
                "note: {} holds an earlier run, which this one replaces",
                dir.display()
            );
        }
        if metrics.is_empty() {
            remove_earlier_run(dir, &ck_path)?;
        }
        report::write_csv(dir, layer, &metrics)?;
    }
    let summary = |metrics: &[EpochMetrics], task: &T| {
        let mut s = Map::new();
        s.insert("name".into(), json!(cfg.name));
        s.insert("title".into(), json!(cfg.title));
        s.insert("model".into(), json!(task.model_kind()));
        s.insert("settings".into(), Value::Object(settings.clone()));
        s.insert("seed".into(), json!(cfg.seed));
        s.insert("threads".into(), json!(threads));
        s.insert("simd".into(), json!(crate::kernels::SIMD_LEVEL));
        s.extend(report::summary_fields(metrics));
        s.extend(cfg.extra_summary.clone());
        report::write_summary(dir, s)
    };
    if files {
        summary(&metrics, task)?;
    }

    let batches = batches_per_epoch(train_count, cfg.batch_size);
    // The batch loop's fork-join phases run on a team whose workers stay
    // awake between phases (see `kernels::team`); this thread, which
    // `build_pool` set to flush subnormals as the workers do, is one of them.
    let team = Team::new(threads)
        .map_err(|e| TrainError::Config(format!("cannot start {threads} threads: {e}")))?;
    let mut order: Vec<u32> = Vec::with_capacity(train_count);
    let mut grad = vec![0.0f32; range.len()];
    let mut stopped_early = false;
    // Name the first parameter tensor that is not finite; if all are, the
    // first layer whose output overflowed; else the loss itself.
    let non_finite = |task: &T, epoch: usize, batch: usize| TrainError::NonFinite {
        epoch,
        batch,
        layer: task
            .layout()
            .first_non_finite(task.params())
            .map(|t| format!("{t} (parameters)"))
            .or_else(|| task.diverged_layer().map(|l| format!("{l} (output)")))
            .unwrap_or_else(|| task.loss_layer()),
    };
    for epoch in resumed_epochs + 1..=cfg.epochs {
        let start = Instant::now();
        order.clear();
        order.extend(0..train_count as u32);
        Rng::stream(cfg.seed, epoch as u64).shuffle(&mut order);
        let progress = EpochProgress::new(cfg.progress, &cfg.name, epoch, cfg.epochs, batches);
        let cost_sum = (|| {
            let mut cost_sum = 0.0f64;
            for b in 0..batches {
                let images = &order[b * cfg.batch_size..(b + 1) * cfg.batch_size];
                let cost = task.batch(&team, images, epoch, b);
                if !cost.is_finite() {
                    return Err(b + 1);
                }
                timed(task.update_label(), Phase::Pool, || {
                    task.step(&team, &mut grad, &mut opt, cfg.lr, cfg.decay)
                });
                cost_sum += cost;
                progress.batch(b + 1, cost_sum / (b + 1) as f64);
            }
            Ok(cost_sum)
        })();
        let cost_sum = match cost_sum {
            Ok(c) => c,
            Err(b) => return Err(non_finite(task, epoch, b)),
        };
        if task.layout().first_non_finite(task.params()).is_some() {
            return Err(non_finite(task, epoch, batches));
        }
        if !files {
            metrics.push(EpochMetrics {
                epoch,
                train_cost: cost_sum / batches as f64,
                test_cost: None,
                test_accuracy: None,
                seconds: start.elapsed().as_secs_f64(),
            });
            continue;
        }
        let (test_cost, test_accuracy) = task.evaluate(pool);
        check_test_cost(epoch, cost_sum / batches as f64, test_cost)?;
        let m = EpochMetrics {
            epoch,
            train_cost: cost_sum / batches as f64,
            test_cost,
            test_accuracy,
            seconds: start.elapsed().as_secs_f64(),
        };
        metrics.push(m.clone());
        Checkpoint {
            model: task.model_kind(),
            signature: signature.clone(),
            optimizer: cfg.optimizer.name().to_string(),
            epochs_completed: epoch,
            seed: cfg.seed,
            batch_size: cfg.batch_size,
            train_count,
            settings: resume_settings.clone(),
            metrics: metrics.clone(),
            params: task.params().to_vec(),
            optimizer_state: opt.buf.clone(),
        }
        .save(&ck_path)?;
        report::write_csv(dir, layer, &metrics)?;
        summary(&metrics, task)?;
        progress.finish(&m);
        if on_epoch(&m, task).is_break() {
            stopped_early = epoch < cfg.epochs;
            break;
        }
    }
    Ok(RunReport {
        metrics,
        resumed_epochs,
        stopped_early,
    })
}

/// A test cost that is NaN or infinite after a finite training epoch means
/// the weights have grown until a test image overflows: the run stops there
/// rather than record it (and checkpoint those weights).
fn check_test_cost(
    epoch: usize,
    train_cost: f64,
    test_cost: Option<f64>,
) -> Result<(), TrainError> {
    match test_cost {
        Some(c) if !c.is_finite() => Err(TrainError::NonFiniteTest { epoch, train_cost }),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------- classifiers

pub(crate) struct ClassifierChunk<W> {
    ws: W,
    /// Rows of the last batch in this chunk.
    rows: usize,
    grad: Vec<f32>,
    labels: Vec<u8>,
    loss: f64,
    correct: usize,
}

struct ClassifierTask<'a, 'd, C: Classifier> {
    model: &'a mut C,
    /// The model's tensors and the update's blocks, for models with a fused
    /// update.
    fused: Option<(Vec<TensorGrad>, Vec<Block>)>,
    chunks: Vec<ClassifierChunk<C::Workspace>>,
    max_rows: usize,
    train: Split<'d>,
    test: Split<'d>,
}

/// One chunk per thread, each with a workspace of `max_rows` rows.
pub(crate) fn classifier_chunks<C: Classifier>(
    model: &C,
    threads: usize,
    max_rows: usize,
) -> Vec<ClassifierChunk<C::Workspace>> {
    // Models with a fused update keep no per-chunk gradient.
    let n = match model.fused_tensors() {
        Some(_) => 0,
        None => model.params().len(),
    };
    (0..threads)
        .map(|_| ClassifierChunk {
            ws: model.workspace(max_rows),
            grad: vec![0.0; n],
            labels: vec![0; max_rows],
            rows: 0,
            loss: 0.0,
            correct: 0,
        })
        .collect()
}

/// Forward passes of `model` over all of `split`: chunk `c` takes the c-th
/// contiguous share of the images and runs it in blocks of up to `max_rows`
/// on its own workspace, so the pool synchronises once rather than once per
/// block. Returns (summed loss, number correct); the sum runs in chunk order,
/// so the result depends only on the chunk count.
pub(crate) fn evaluate_classifier<C: Classifier>(
    model: &C,
    split: &Split,
    pool: &ThreadPool,
    chunks: &mut [ClassifierChunk<C::Workspace>],
    max_rows: usize,
) -> (f64, usize)
where
    C::Workspace: Sync,
{
    let count = split.count;
    let n_chunks = chunks.len();
    pool.install(|| {
        chunks.par_iter_mut().enumerate().for_each(|(c, ch)| {
            let share = chunk_bounds(count, n_chunks, c);
            (ch.loss, ch.correct) = (0.0, 0);
            for start in share.clone().step_by(max_rows.max(1)) {
                let end = (start + max_rows).min(share.end);
                let n = end - start;
                fill_classifier_chunk(model, ch, split, start..end);
                let (loss, correct) = model.evaluate(&mut ch.ws, &ch.labels[..n]);
                ch.loss += loss;
                ch.correct += correct;
            }
        })
    });
    chunks
        .iter()
        .fold((0.0, 0), |(l, c), ch| (l + ch.loss, c + ch.correct))
}

/// Fills a chunk's input rows and labels from `images` of `split`.
fn fill_classifier_chunk<C: Classifier>(
    model: &C,
    ch: &mut ClassifierChunk<C::Workspace>,
    split: &Split,
    images: impl Iterator<Item = usize> + Clone,
) {
    let input = model.input_mut(&mut ch.ws);
    let images = images_to_unit(split, images, input);
    for (label, img) in ch.labels.iter_mut().zip(images) {
        *label = split.labels[img];
    }
}

/// Images ahead of the one being converted whose lines are prefetched: the
/// shuffled images sit at random places in a 47 MB array, so each one's
/// first lines otherwise miss all the way to memory.
const PREFETCH_IMAGES_AHEAD: usize = 2;

/// Converts `images` of `split` to [0, 1] floats in consecutive rows of
/// `dst`, prefetching ahead; returns the same iterator for the caller's
/// labels.
fn images_to_unit<I: Iterator<Item = usize> + Clone>(
    split: &Split,
    images: I,
    dst: &mut [f32],
) -> I {
    let len = split.image_len();
    let mut ahead = images.clone();
    for img in ahead.by_ref().take(PREFETCH_IMAGES_AHEAD) {
        prefetch(split.image(img));
    }
    for (i, img) in images.clone().enumerate() {
        if let Some(next) = ahead.next() {
            prefetch(split.image(next));
        }
        u8_to_unit(split.image(img), &mut dst[i * len..(i + 1) * len]);
    }
    images
}

impl<C: Classifier> Task for ClassifierTask<'_, '_, C>
where
    C::Workspace: Sync,
{
    fn model_kind(&self) -> String {
        self.model.kind().to_string()
    }
    fn layout(&self) -> &ParamLayout {
        self.model.layout()
    }
    fn params(&self) -> &[f32] {
        self.model.params()
    }
    fn params_mut(&mut self) -> &mut [f32] {
        self.model.params_mut()
    }
    fn trainable(&self) -> Range<usize> {
        0..self.model.params().len()
    }
    fn loss_layer(&self) -> String {
        let last = self.model.layout().entries().last().map(|e| e.name.clone());
        format!(
            "{} (softmax cross-entropy)",
            last.unwrap_or_default().trim_end_matches(".bias")
        )
    }

    fn diverged_layer(&self) -> Option<String> {
        self.chunks
            .iter()
            .filter_map(|ch| self.model.first_non_finite_layer(&ch.ws, ch.rows))
            .next()
    }

    fn batch(&mut self, team: &Team, images: &[u32], _epoch: usize, _batch: usize) -> f64 {
        let model: &C = self.model;
        let train = &self.train;
        let rows = images.len();
        let chunks = self.chunks.len();
        let scale = 1.0 / rows as f32;
        let fused = self.fused.is_some();
        team.for_each_mut_pinned(&mut self.chunks, |c, ch| {
            let r = chunk_bounds(rows, chunks, c);
            let n = r.len();
            ch.rows = n;
            if n == 0 {
                ch.grad.fill(0.0);
                ch.loss = 0.0;
                return;
            }
            timed("input", Phase::Forward, || {
                fill_classifier_chunk(model, ch, train, images[r].iter().map(|&i| i as usize))
            });
            let labels = &ch.labels[..n];
            ch.loss = if fused {
                model.loss_and_deltas(&mut ch.ws, labels, scale)
            } else {
                model.loss_and_gradient(&mut ch.ws, labels, scale, &mut ch.grad)
            };
        });
        self.chunks.iter().map(|ch| ch.loss).sum::<f64>() / rows as f64
    }

    fn step(
        &mut self,
        team: &Team,
        grad: &mut [f32],
        opt: &mut OptimizerState,
        lr: f32,
        decay: f32,
    ) {
        let params = self.model.params_mut();
        let Some((tensors, blocks)) = &self.fused else {
            return reduce_and_step(
                team,
                &self.chunks,
                |ch| &ch.grad,
                grad,
                params,
                opt,
                lr,
                decay,
            );
        };
        let step = fused::Step::new(
            tensors,
            &self.chunks,
            |ch| ch.rows,
            |ch, tensor, term| C::grad_factors(&ch.ws, tensor, term),
            opt.optimizer,
            lr,
            decay,
        );
        fused_step(team, &step, blocks, params, opt, grad);
    }

    fn update_label(&self) -> &'static str {
        match self.fused {
            Some(_) => FUSED_UPDATE,
            None => "update",
        }
    }

    fn evaluate(&mut self, pool: &ThreadPool) -> (Option<f64>, Option<f64>) {
        let count = self.test.count;
        if count == 0 {
            return (None, None);
        }
        let (loss, correct) = evaluate_classifier(
            self.model,
            &self.test,
            pool,
            &mut self.chunks,
            self.max_rows,
        );
        (
            Some(loss / count as f64),
            Some(correct as f64 / count as f64),
        )
    }

    fn csv_layer(&self) -> Option<usize> {
        None
    }
    fn test_count(&self) -> usize {
        self.test.count
    }
    fn settings(&self) -> Map<String, Value> {
        Map::new()
    }
}

/// Trains a classifier (the CNN or the MLP) with softmax cross-entropy.
///
/// `train` and `test` are the full splits; `cfg.train_count` /
/// `cfg.test_count` take their first images. Every setting is checked, and
/// the run folder created and probed, before any training. After each epoch
/// the test set is evaluated, the checkpoint, metrics.csv and summary.json are
/// written, and `observer` (if any) sees the metrics and the model; returning
/// `ControlFlow::Break(())` stops the run there (it can be resumed later).
pub fn train_classifier<C>(
    model: &mut C,
    train: Split,
    test: Split,
    cfg: &TrainConfig,
    mut observer: Option<Observer<'_, C>>,
) -> Result<RunReport, TrainError>
where
    C: Classifier,
    C::Workspace: Sync,
{
    let dataset = data_fingerprint(&train, &test);
    let dataset_counts = (train.count, test.count);
    let (train, test) = validate_common(cfg, train, test, model.input_len())?;
    let (resident_train, resident_test) = (ResidentSplit::of(&train), ResidentSplit::of(&test));
    let (train, test) = (resident_train.split(train), resident_test.split(test));
    let classes = model.classes();
    for (what, s) in [("training", &train), ("test", &test)] {
        if let Some(&bad) = s.labels[..s.count].iter().find(|&&l| l as usize >= classes) {
            return config_error(format!(
                "{what} label {bad} is out of range for {classes} classes"
            ));
        }
    }
    // Held until the run returns.
    let _folder_lock = prepare_dir(cfg)?;
    let threads = resolve_threads(cfg.threads);
    let pool = build_pool(threads)?;
    let max_rows = cfg.batch_size.div_ceil(threads);
    let chunks = classifier_chunks(model, threads, max_rows);
    let fused = model.fused_tensors().map(|t| {
        let blocks = fused::plan(&t, threads);
        (t, blocks)
    });
    let mut task = ClassifierTask {
        model,
        fused,
        chunks,
        max_rows,
        train,
        test,
    };
    let mut hook = |m: &EpochMetrics, t: &ClassifierTask<C>| match observer.as_mut() {
        Some(f) => f(m, t.model),
        None => ControlFlow::Continue(()),
    };
    let data = DataFingerprints::new(dataset, dataset_counts, &train, &test);
    run(
        &mut task,
        cfg,
        threads,
        train.count,
        &data,
        &pool,
        &mut hook,
    )
}

// ---------------------------------------------------------------- DAE layers

struct DaeChunk {
    ws: DaeWorkspace,
    /// Rows of the last batch in this chunk.
    rows: usize,
    loss: f64,
}

struct DaeTask<'a, 'd> {
    stack: &'a mut DaeStack,
    dae: DaeConfig,
    seed: u64,
    /// The layer's tensors and the fused update's blocks.
    tensors: Vec<TensorGrad>,
    blocks: Vec<Block>,
    chunks: Vec<DaeChunk>,
    max_rows: usize,
    rho_hat: Vec<f32>,
    train: Split<'d>,
    test: Split<'d>,
}

/// The key of batch `batch` of `epoch`: image `i` of the batch is corrupted
/// with `Rng::stream(key, i)`, whatever chunk it falls in.
fn noise_key(seed: u64, epoch: usize, batch: usize) -> u64 {
    const NOISE: u64 = 0x6e6f_6973_6500_0000; // "noise"
    let epoch_key = Rng::stream(seed ^ NOISE, epoch as u64).next_u64();
    Rng::stream(epoch_key, batch as u64).next_u64()
}

fn fill_clean(ws: &mut DaeWorkspace, split: &Split, images: impl Iterator<Item = usize> + Clone) {
    images_to_unit(split, images, &mut ws.clean);
}

impl Task for DaeTask<'_, '_> {
    fn model_kind(&self) -> String {
        match self.dae.scheme {
            DaeScheme::ImageSpace => format!("dae-layer{}", self.dae.layer),
            DaeScheme::LayerLocal => format!("dae-layer{}-local", self.dae.layer),
        }
    }
    fn layout(&self) -> &ParamLayout {
        self.stack.layout()
    }
    fn params(&self) -> &[f32] {
        self.stack.params()
    }
    fn params_mut(&mut self) -> &mut [f32] {
        self.stack.params_mut()
    }
    fn trainable(&self) -> Range<usize> {
        self.stack.layer_range(self.dae.layer)
    }
    fn loss_layer(&self) -> String {
        let what = if self.dae.sparsity.is_some() {
            "reconstruction cross-entropy + KL sparsity penalty"
        } else {
            "reconstruction cross-entropy"
        };
        format!("dae{} ({what})", self.dae.layer)
    }

    fn diverged_layer(&self) -> Option<String> {
        self.chunks
            .iter()
            .filter_map(|ch| {
                self.stack
                    .first_non_finite_layer(self.dae.layer, &ch.ws, ch.rows)
            })
            .next()
    }

    fn batch(&mut self, team: &Team, images: &[u32], epoch: usize, batch: usize) -> f64 {
        self.stack.prepare_batch(self.dae.layer, team);
        let stack: &DaeStack = self.stack;
        let (train, dae) = (&self.train, self.dae);
        let layer = dae.layer;
        let rows = images.len();
        let chunks = self.chunks.len();
        let scale = 1.0 / rows as f32;
        let key = noise_key(self.seed, epoch, batch);
        let len = train.image_len();
        let encode = |c: usize, ch: &mut DaeChunk| {
            let r = chunk_bounds(rows, chunks, c);
            ch.rows = r.len();
            timed("input", Phase::Forward, || {
                fill_clean(
                    &mut ch.ws,
                    train,
                    images[r.clone()].iter().map(|&i| i as usize),
                )
            });
            match dae.scheme {
                DaeScheme::ImageSpace => {
                    timed("noise", Phase::Forward, || {
                        let span = 0..r.len() * len;
                        mask_noise_rows(
                            &ch.ws.clean[span.clone()],
                            &mut ch.ws.noisy[span],
                            len,
                            dae.keep_prob,
                            |i| Rng::stream(key, (r.start + i) as u64),
                        );
                    });
                    stack.encode(layer, &mut ch.ws, r.len(), true);
                }
                DaeScheme::LayerLocal => {
                    stack.encode_local(layer, &mut ch.ws, r.len(), |i, clean, noisy| {
                        let mut rng = Rng::stream(key, (r.start + i) as u64);
                        mask_noise(clean, noisy, dae.keep_prob, &mut rng);
                    });
                }
            }
            r.len()
        };
        let mut penalty = 0.0;
        match dae.sparsity {
            None => team.for_each_mut_pinned(&mut self.chunks, |c, ch| {
                let n = encode(c, ch);
                ch.loss = stack.loss_and_deltas(layer, &mut ch.ws, n, scale, None);
            }),
            Some(sp) => {
                // Phase 1: encode and per-chunk activation sums.
                team.for_each_mut_pinned(&mut self.chunks, |c, ch| {
                    let n = encode(c, ch);
                    stack.hidden_sums(layer, &mut ch.ws, n);
                });
                // The minibatch mean activation, summed in chunk order.
                let units = self.rho_hat.len();
                self.rho_hat.fill(0.0);
                for ch in &self.chunks {
                    for (q, &s) in self.rho_hat.iter_mut().zip(&ch.ws.col_sums()[..units]) {
                        *q += s;
                    }
                }
                for q in &mut self.rho_hat {
                    *q /= rows as f32;
                }
                penalty = sp.cost(&self.rho_hat);
                // Phase 2: decode, loss and backward with the KL term.
                let rho_hat = &self.rho_hat;
                team.for_each_mut_pinned(&mut self.chunks, |c, ch| {
                    let n = chunk_bounds(rows, chunks, c).len();
                    ch.loss = stack.loss_and_deltas(
                        layer,
                        &mut ch.ws,
                        n,
                        scale,
                        Some((sp, rho_hat, rows)),
                    );
                });
            }
        }
        self.chunks.iter().map(|ch| ch.loss).sum::<f64>() / rows as f64 + penalty
    }

    fn step(
        &mut self,
        team: &Team,
        grad: &mut [f32],
        opt: &mut OptimizerState,
        lr: f32,
        decay: f32,
    ) {
        let layer = self.dae.layer;
        let params = self.stack.layer_params_mut(layer);
        let step = fused::Step::new(
            &self.tensors,
            &self.chunks,
            |ch| ch.rows,
            |ch, tensor, term| ch.ws.grad_factors(layer, tensor, term),
            opt.optimizer,
            lr,
            decay,
        );
        fused_step(team, &step, &self.blocks, params, opt, grad);
    }

    fn update_label(&self) -> &'static str {
        FUSED_UPDATE
    }

    fn evaluate(&mut self, pool: &ThreadPool) -> (Option<f64>, Option<f64>) {
        let count = self.test.count;
        if count == 0 {
            return (None, None);
        }
        let stack: &DaeStack = self.stack;
        let test = &self.test;
        let (layer, scheme) = (self.dae.layer, self.dae.scheme);
        let chunks = self.chunks.len();
        let block = chunks * self.max_rows;
        let mut loss = 0.0f64;
        for start in (0..count).step_by(block) {
            let rows = block.min(count - start);
            pool.install(|| {
                self.chunks.par_iter_mut().enumerate().for_each(|(c, ch)| {
                    let r = chunk_bounds(rows, chunks, c);
                    let n = r.len();
                    ch.loss = 0.0;
                    if n > 0 {
                        fill_clean(&mut ch.ws, test, r.map(|i| start + i));
                        ch.loss = match scheme {
                            DaeScheme::ImageSpace => {
                                stack.reconstruction_cost(layer, &mut ch.ws, n)
                            }
                            DaeScheme::LayerLocal => {
                                stack.local_reconstruction_cost(layer, &mut ch.ws, n)
                            }
                        };
                    }
                })
            });
            loss += self.chunks.iter().map(|ch| ch.loss).sum::<f64>();
        }
        (Some(loss / count as f64), None)
    }

    fn csv_layer(&self) -> Option<usize> {
        Some(self.dae.layer)
    }
    fn test_count(&self) -> usize {
        self.test.count
    }
    fn settings(&self) -> Map<String, Value> {
        let mut s = Map::new();
        s.insert("layer".into(), json!(self.dae.layer));
        let scheme = match self.dae.scheme {
            DaeScheme::ImageSpace => "image-space",
            DaeScheme::LayerLocal => "layer-local",
        };
        s.insert("scheme".into(), json!(scheme));
        s.insert("keep_prob".into(), json!(self.dae.keep_prob));
        s.insert(
            "sparsity".into(),
            match self.dae.sparsity {
                Some(sp) => json!({"rho": sp.rho, "beta": sp.beta}),
                None => Value::Null,
            },
        );
        s.insert("sizes".into(), json!(self.stack.sizes()));
        s
    }
}

/// Trains layer `dae.layer` of `stack` in `dae.scheme` (see
/// [`crate::model::DaeStack`]), leaving every other layer unchanged. Same
/// files, checks and observer as [`train_classifier`]; the test metric is the
/// reconstruction cost of the clean test images (`test_accuracy` is None).
pub fn pretrain_dae(
    stack: &mut DaeStack,
    dae: &DaeConfig,
    train: Split,
    test: Split,
    cfg: &TrainConfig,
    mut observer: Option<Observer<'_, DaeStack>>,
) -> Result<RunReport, TrainError> {
    let dataset = data_fingerprint(&train, &test);
    let dataset_counts = (train.count, test.count);
    let (train, test) = validate_common(cfg, train, test, stack.sizes()[0])?;
    let (resident_train, resident_test) = (ResidentSplit::of(&train), ResidentSplit::of(&test));
    let (train, test) = (resident_train.split(train), resident_test.split(test));
    if !(1..=stack.layers()).contains(&dae.layer) {
        return config_error(format!(
            "DAE layer {} does not exist: the stack has layers 1..={}",
            dae.layer,
            stack.layers()
        ));
    }
    if !(dae.keep_prob > 0.0 && dae.keep_prob <= 1.0) {
        return config_error(format!(
            "keep probability must be in (0, 1], got {}",
            dae.keep_prob
        ));
    }
    if let Some(sp) = dae.sparsity {
        if !(sp.rho > 0.0 && sp.rho < 1.0 && sp.beta.is_finite() && sp.beta >= 0.0) {
            return config_error(format!(
                "sparsity needs 0 < rho < 1 and beta >= 0, got rho {} beta {}",
                sp.rho, sp.beta
            ));
        }
    }
    // Held until the run returns.
    let _folder_lock = prepare_dir(cfg)?;
    let threads = resolve_threads(cfg.threads);
    let pool = build_pool(threads)?;
    let max_rows = cfg.batch_size.div_ceil(threads);
    let chunks = (0..threads)
        .map(|_| DaeChunk {
            ws: stack.workspace(max_rows),
            rows: 0,
            loss: 0.0,
        })
        .collect();
    let tensors = stack.fused_tensors(dae.layer);
    let blocks = fused::plan(&tensors, threads);
    let units = stack.sizes()[dae.layer];
    let mut task = DaeTask {
        stack,
        dae: *dae,
        seed: cfg.seed,
        tensors,
        blocks,
        chunks,
        max_rows,
        rho_hat: vec![0.0; units],
        train,
        test,
    };
    let mut hook = |m: &EpochMetrics, t: &DaeTask| match observer.as_mut() {
        Some(f) => f(m, t.stack),
        None => ControlFlow::Continue(()),
    };
    let data = DataFingerprints::new(dataset, dataset_counts, &train, &test);
    run(
        &mut task,
        cfg,
        threads,
        train.count,
        &data,
        &pool,
        &mut hook,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_test_cost_stops_the_run() {
        assert!(check_test_cost(3, 2.5, None).is_ok());
        assert!(check_test_cost(3, 2.5, Some(0.7)).is_ok());
        for bad in [f64::NAN, f64::INFINITY] {
            match check_test_cost(3, 2.5, Some(bad)) {
                Err(e @ TrainError::NonFiniteTest { epoch: 3, .. }) => {
                    assert!(e.to_string().contains("after epoch 3"), "{e}");
                    assert!(e.to_string().contains("2.5000e0"), "{e}");
                }
                other => panic!("expected NonFiniteTest, got {other:?}"),
            }
        }
    }
}
