//! `vcortex bench`: one timed epoch (or several, median) of each model the
//! study trains, CNN inference over the test set, and a per-layer profile.
//!
//! Each training item runs the real engine ([`crate::train`]) in its
//! timing-only mode: no test evaluation, no checkpoint or metrics files, so
//! an epoch's seconds are the training loop alone. Useful work is counted in
//! multiply-adds of the forward and backward passes (formulas below, per
//! model); GFLOP = 2 x MACs. The fraction of peak is against
//! `kernels::peak::measure_fma_peak_gflops()` run on every thread at once,
//! summed (measured before and after the work, the higher of the two).

pub mod profile;

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::data::Split;
use crate::experiments::{machine_description, ExpError};
use crate::kernels::peak::{measure_fma_peak_all_threads_gflops, measure_fma_peak_gflops};
use crate::kernels::SIMD_LEVEL;
use crate::model::{Cnn, CnnShape, DaeStack, Mlp};
use crate::train::{
    batches_per_epoch, classifier_chunks, evaluate_classifier, pretrain_dae, train_classifier,
    DaeConfig, Optimizer, RunReport, TrainConfig,
};
use profile::{Phase, Span};

/// A benchmarked piece of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Work {
    /// One epoch of the CNN with SGD (A1: lr 0.05, decay 1e-4).
    CnnSgd,
    /// One epoch of the CNN with RMSProp (A3: lr 0.001, rho 0.9, eps 1e-6, decay 1e-4).
    CnnRmsprop,
    /// One epoch of DAE layer 1, 784-900, image-space scheme, keep 0.9 (B1).
    Dae1,
    /// One epoch of DAE layer 2 (900-625) of the 784-900-625-400 stack, B1's
    /// second stage: noisy images up through layers 1-2 and back down to
    /// image space, layer 2's weights trained (the issue sets no target).
    /// Not in the default list.
    Dae2,
    /// One epoch of DAE layer 3 (625-400), likewise through layers 1-3.
    /// Not in the default list.
    Dae3,
    /// One epoch of the 784-900-625-400-10 sigmoid classifier, SGD lr 0.1 (B2).
    Mlp,
    /// CNN forward pass (loss and accuracy) over the test images.
    CnnInfer,
}

impl Work {
    pub const ALL: [Work; 5] = [
        Work::CnnSgd,
        Work::CnnRmsprop,
        Work::Dae1,
        Work::Mlp,
        Work::CnnInfer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Work::CnnSgd => "cnn-sgd",
            Work::CnnRmsprop => "cnn-rmsprop",
            Work::Dae1 => "dae1",
            Work::Dae2 => "dae2",
            Work::Dae3 => "dae3",
            Work::Mlp => "mlp",
            Work::CnnInfer => "cnn-infer",
        }
    }

    /// Images of one epoch (or inference pass) on the full data set, as the
    /// issue's figures count them.
    fn full_images(self, batch_size: usize) -> usize {
        match self {
            Work::CnnInfer => 10_000,
            _ => batches_per_epoch(60_000, batch_size) * batch_size,
        }
    }

    /// The issue's figures for the full data set on the 2-core machine:
    /// (PyTorch 2.15 seconds, target seconds); None for the items the issue
    /// does not list.
    pub fn reference_seconds(self) -> Option<(f64, f64)> {
        match self {
            Work::CnnSgd => Some((2.37, 0.80)),
            Work::CnnRmsprop => Some((2.94, 0.85)),
            Work::Dae1 => Some((3.17, 1.00)),
            Work::Mlp => Some((3.13, 1.10)),
            Work::CnnInfer => Some((0.19, 0.06)),
            Work::Dae2 | Work::Dae3 => None,
        }
    }

    /// The stack layer a DAE item trains.
    fn dae_layer(self) -> Option<usize> {
        match self {
            Work::Dae1 => Some(1),
            Work::Dae2 => Some(2),
            Work::Dae3 => Some(3),
            _ => None,
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Threads (= chunks per minibatch); 0 means one per core.
    pub threads: usize,
    /// Timed epochs per training item (and passes over the test set for
    /// inference); the table shows the median.
    pub epochs: usize,
    /// Use the first n training images (default: all).
    pub train_size: Option<usize>,
    /// Use the first n test images for inference (default: all).
    pub test_size: Option<usize>,
    pub batch_size: usize,
    pub seed: u64,
    /// Items to run, in this order.
    pub only: Vec<Work>,
    /// Record the per-layer profile.
    pub profile: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            threads: 0,
            epochs: 1,
            train_size: None,
            test_size: None,
            batch_size: 128,
            seed: 1,
            only: Work::ALL.to_vec(),
            profile: true,
        }
    }
}

/// One line of a per-layer profile, in seconds per epoch (per pass for
/// inference). Layer times are summed over chunks and divided by the thread
/// count (the average thread's time); pool-wide steps are wall time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProfileRow {
    pub layer: String,
    pub forward_s: f64,
    pub backward_s: f64,
    /// forward + backward as a fraction of the epoch.
    pub share: f64,
}

/// One benchmarked item.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchRow {
    pub work: Work,
    /// Images per timed epoch (full batches only) or per inference pass.
    pub images: usize,
    /// Median over the timed epochs or passes.
    pub seconds: f64,
    /// Every timed epoch or pass.
    pub runs: Vec<f64>,
    pub images_per_s: f64,
    /// Useful GFLOP per epoch or pass (2 x multiply-adds).
    pub gflop: f64,
    pub gflops: f64,
    /// gflops / the measured FMA peak of all threads.
    pub peak_fraction: f64,
    /// The issue's PyTorch 2.15 seconds on the full data (2 threads); None
    /// (JSON null) for items the issue does not list.
    pub pytorch_s: Option<f64>,
    /// The issue's target seconds on the full data (2 threads), or None.
    pub target_s: Option<f64>,
    /// The fraction of the issue machine's FMA peak
    /// ([`ISSUE_PEAK_GFLOPS`]) that the target asks for: the
    /// machine-independent form of the target, to compare with
    /// `peak_fraction` on a machine with a different peak. None without a
    /// target.
    pub target_peak_fraction: Option<f64>,
    pub profile: Vec<ProfileRow>,
}

/// The whole bench.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    pub simd: &'static str,
    pub threads: usize,
    pub machine: String,
    /// The FMA peak of one thread running alone.
    pub peak_gflops_per_thread: f64,
    /// The FMA peak of all `threads` running at once (what % peak divides by).
    pub peak_gflops: f64,
    pub batch_size: usize,
    pub train_images: usize,
    pub test_images: usize,
    pub epochs: usize,
    pub rows: Vec<BenchRow>,
}

/// Multiply-adds per image of the CNN: (forward, forward + backward).
///
/// conv MACs = c_out * out_h * out_w * c_in * k * k. Forward: conv1, conv2,
/// fc1 and fc2 once each. Backward: conv1's filter gradient only (no input
/// gradient is needed), conv2's filter and input gradients, and the dense
/// layers' weight and input gradients (twice their forward each). Study
/// network: 775,000 forward, 1,839,000 in all (3.678 MFLOP per image,
/// 220 GFLOP per 59904-image epoch).
pub fn cnn_macs(s: &CnnShape) -> (u64, u64) {
    let (h1, w1) = (s.in_h + 1 - s.k1, s.in_w + 1 - s.k1);
    let conv1 = s.c1 * h1 * w1 * s.k1 * s.k1;
    let (h2, w2) = (h1 / 2 + 1 - s.k2, w1 / 2 + 1 - s.k2);
    let conv2 = s.c2 * h2 * w2 * s.c1 * s.k2 * s.k2;
    let fc1 = s.c2 * (h2 / 2) * (w2 / 2) * s.hidden;
    let fc2 = s.hidden * s.classes;
    let fwd = conv1 + conv2 + fc1 + fc2;
    let bwd = conv1 + 2 * (conv2 + fc1 + fc2);
    (fwd as u64, (fwd + bwd) as u64)
}

/// Multiply-adds per image of one training step of the MLP `sizes`:
/// forward sum(n_in n_out); backward the weight gradient of every layer plus
/// the input gradient of every layer but the first. 784-900-625-400-10:
/// 3,860,700 (7.72 MFLOP per image).
pub fn mlp_train_macs(sizes: &[usize]) -> u64 {
    let m: Vec<u64> = sizes.windows(2).map(|w| (w[0] * w[1]) as u64).collect();
    let all: u64 = m.iter().sum();
    2 * all + all - m.first().copied().unwrap_or(0)
}

/// Multiply-adds per image of one image-space training step of DAE layer
/// `layer` (m_j = n_{j-1} n_j): encoders 1..k and decoders k..1 forward
/// (2 sum m_j), the input gradients back through decoders 1..k-1 (sum m_j,
/// j < k), and layer k's decoder weight and input gradients and encoder
/// weight gradient (3 m_k). Layer 1 of the study: 5 x 705,600.
pub fn dae_train_macs(sizes: &[usize], layer: usize) -> u64 {
    let m: Vec<u64> = sizes.windows(2).map(|w| (w[0] * w[1]) as u64).collect();
    let up_down: u64 = 2 * m[..layer].iter().sum::<u64>();
    up_down + m[..layer - 1].iter().sum::<u64>() + 3 * m[layer - 1]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Per-epoch profile rows from the spans of `passes` epochs on `threads`
/// threads, with a final "other" row for what no hook saw (synchronisation,
/// idle threads, shuffling).
fn profile_rows(spans: &[Span], passes: usize, threads: usize, epoch_s: f64) -> Vec<ProfileRow> {
    let mut rows: Vec<ProfileRow> = Vec::new();
    for s in spans {
        let per_pass = s.seconds / passes as f64;
        let secs = match s.phase {
            Phase::Forward | Phase::Backward => per_pass / threads as f64,
            Phase::Pool => per_pass,
        };
        let row = match rows.iter_mut().position(|r| r.layer == s.layer) {
            Some(i) => &mut rows[i],
            None => {
                rows.push(ProfileRow {
                    layer: s.layer.to_string(),
                    forward_s: 0.0,
                    backward_s: 0.0,
                    share: 0.0,
                });
                rows.last_mut().unwrap()
            }
        };
        match s.phase {
            Phase::Forward | Phase::Pool => row.forward_s += secs,
            Phase::Backward => row.backward_s += secs,
        }
    }
    let seen: f64 = rows.iter().map(|r| r.forward_s + r.backward_s).sum();
    rows.push(ProfileRow {
        layer: "other".into(),
        forward_s: (epoch_s - seen).max(0.0),
        backward_s: 0.0,
        share: 0.0,
    });
    for r in &mut rows {
        r.share = if epoch_s > 0.0 {
            (r.forward_s + r.backward_s) / epoch_s
        } else {
            0.0
        };
    }
    rows
}

fn train_config(work: Work, opts: &BenchOptions, threads: usize, train_n: usize) -> TrainConfig {
    let mut cfg = TrainConfig::new(work.name(), std::env::temp_dir());
    cfg.timing_only = true;
    cfg.epochs = opts.epochs;
    cfg.batch_size = opts.batch_size;
    cfg.seed = opts.seed;
    cfg.threads = threads;
    cfg.train_count = Some(train_n);
    cfg.test_count = Some(0);
    match work {
        Work::CnnSgd => {
            cfg.lr = 0.05;
            cfg.decay = 1e-4;
        }
        Work::CnnRmsprop => {
            cfg.lr = 0.001;
            cfg.decay = 1e-4;
            cfg.optimizer = Optimizer::RmsProp {
                rho: 0.9,
                eps: 1e-6,
            };
        }
        Work::Dae1 | Work::Dae2 | Work::Dae3 | Work::Mlp | Work::CnnInfer => cfg.lr = 0.1,
    }
    cfg
}

/// Runs `f` with the profile hooks on (if asked), returning its result and
/// the recorded spans.
fn profiled<R>(on: bool, f: impl FnOnce() -> R) -> (R, Vec<Span>) {
    profile::reset();
    profile::set_enabled(on);
    let r = f();
    profile::set_enabled(false);
    (r, profile::take())
}

/// Trains one item; returns (seconds of each epoch, spans, useful MACs per image).
fn train_work(
    work: Work,
    train: Split,
    test: Split,
    opts: &BenchOptions,
    threads: usize,
    train_n: usize,
) -> Result<(Vec<f64>, Vec<Span>, u64), ExpError> {
    let cfg = train_config(work, opts, threads, train_n);
    let seed = opts.seed;
    let (report, spans): (Result<RunReport, _>, _) = match work {
        Work::CnnSgd | Work::CnnRmsprop => profiled(opts.profile, || {
            train_classifier(&mut Cnn::study(seed), train, test, &cfg, None)
        }),
        Work::Mlp => profiled(opts.profile, || {
            let mut mlp = Mlp::new(&[784, 900, 625, 400, 10], seed);
            train_classifier(&mut mlp, train, test, &cfg, None)
        }),
        Work::Dae1 | Work::Dae2 | Work::Dae3 => profiled(opts.profile, || {
            let layer = work.dae_layer().expect("a DAE item");
            let mut stack = DaeStack::study(seed);
            pretrain_dae(
                &mut stack,
                &DaeConfig::study(layer),
                train,
                test,
                &cfg,
                None,
            )
        }),
        Work::CnnInfer => unreachable!("inference is not a training item"),
    };
    let report = report.map_err(ExpError::Train)?;
    let macs = match work {
        Work::CnnSgd | Work::CnnRmsprop => cnn_macs(&CnnShape::STUDY).1,
        Work::Mlp => mlp_train_macs(&[784, 900, 625, 400, 10]),
        Work::Dae1 | Work::Dae2 | Work::Dae3 => {
            let layer = work.dae_layer().expect("a DAE item");
            dae_train_macs(DaeStack::study(seed).sizes(), layer)
        }
        Work::CnnInfer => 0,
    };
    let secs = report.metrics.iter().map(|m| m.seconds).collect();
    Ok((secs, spans, macs))
}

/// Times `opts.epochs` passes of the CNN over the test images with the
/// engine's evaluation (workspaces allocated before the clock starts).
fn infer_work(
    test: Split,
    opts: &BenchOptions,
    threads: usize,
) -> Result<(Vec<f64>, Vec<Span>, u64), ExpError> {
    if let Some(&bad) = test.labels[..test.count].iter().find(|&&l| l >= 10) {
        return Err(ExpError::Config(format!(
            "test label {bad} is out of range for 10 classes"
        )));
    }
    let pool = crate::train::compute_pool_builder(threads)
        .build()
        .map_err(|e| ExpError::Config(format!("cannot start {threads} threads: {e}")))?;
    let cnn = Cnn::study(opts.seed);
    // A batch never holds more than the test set: a larger --batch-size
    // would only allocate workspace rows that no image fills.
    let max_rows = opts.batch_size.min(test.count).div_ceil(threads);
    let mut chunks = classifier_chunks(&cnn, threads, max_rows);
    let (secs, spans) = profiled(opts.profile, || {
        (0..opts.epochs)
            .map(|_| {
                let start = Instant::now();
                let r = evaluate_classifier(&cnn, &test, &pool, &mut chunks, max_rows);
                std::hint::black_box(r);
                start.elapsed().as_secs_f64()
            })
            .collect::<Vec<f64>>()
    });
    Ok((secs, spans, cnn_macs(&CnnShape::STUDY).0))
}

/// The most timed epochs (or passes) per item: each one's time is kept, and a
/// median of more says nothing new (an inference pass over a handful of
/// test images takes microseconds, so an unbounded count fills memory).
pub const MAX_EPOCHS: usize = 10_000;

/// Runs every item of `opts.only` on `train` / `test` (full splits; the
/// options take their first images).
///
/// The profile hooks are process-wide: runs in one process take turns, and
/// training elsewhere in the process meanwhile would add to the profile.
pub fn run(train: Split, test: Split, opts: &BenchOptions) -> Result<BenchReport, ExpError> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if opts.epochs == 0 {
        return Err(ExpError::Config("--epochs must be at least 1".into()));
    }
    if opts.epochs > MAX_EPOCHS {
        return Err(ExpError::Config(format!(
            "--epochs {}: at most {MAX_EPOCHS} timed epochs per item",
            opts.epochs
        )));
    }
    if opts.batch_size == 0 {
        return Err(ExpError::Config("--batch-size must be at least 1".into()));
    }
    let pick = |what: &str, want: Option<usize>, have: usize| match want {
        Some(n) if n > have => Err(ExpError::Config(format!(
            "{what} size {n} is larger than the {have} images available"
        ))),
        Some(n) => Ok(n),
        None => Ok(have),
    };
    let train_n = pick("training", opts.train_size, train.count)?;
    let test_n = pick("test", opts.test_size, test.count)?;
    if opts.only.contains(&Work::CnnInfer) {
        if test_n == 0 {
            return Err(ExpError::Config(
                "inference needs at least one test image".into(),
            ));
        }
        let (h, w) = (CnnShape::STUDY.in_h, CnnShape::STUDY.in_w);
        if (test.rows, test.cols) != (h, w) {
            return Err(ExpError::Config(format!(
                "test images are {}x{}, the CNN takes {h}x{w}",
                test.rows, test.cols
            )));
        }
    }
    let threads = if opts.threads > 0 {
        opts.threads
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    };
    let peak_per_thread = measure_fma_peak_gflops();
    let peak_before = fma_peak_all_threads(threads)?;
    let test = test.take(test_n);
    let mut rows = Vec::new();
    for &work in &opts.only {
        let (runs, spans, macs, images) = if work == Work::CnnInfer {
            let (r, s, m) = infer_work(test, opts, threads)?;
            (r, s, m, test_n)
        } else {
            let (r, s, m) = train_work(work, train, test, opts, threads, train_n)?;
            let images = batches_per_epoch(train_n, opts.batch_size) * opts.batch_size;
            (r, s, m, images)
        };
        let seconds = median(&runs);
        let mean = runs.iter().sum::<f64>() / runs.len() as f64;
        let gflop = 2.0 * macs as f64 * images as f64 / 1e9;
        let gflops = gflop / seconds;
        let reference = work.reference_seconds();
        let full_gflop = 2.0 * macs as f64 * work.full_images(opts.batch_size) as f64 / 1e9;
        rows.push(BenchRow {
            work,
            images,
            seconds,
            images_per_s: images as f64 / seconds,
            gflop,
            gflops,
            // Set below, once the peak is final.
            peak_fraction: 0.0,
            pytorch_s: reference.map(|r| r.0),
            target_s: reference.map(|r| r.1),
            target_peak_fraction: reference.map(|r| full_gflop / r.1 / ISSUE_PEAK_GFLOPS),
            profile: profile_rows(&spans, runs.len(), threads, mean),
            runs,
        });
    }
    // Measured again after the work and the higher figure kept: on a busy
    // host one measurement can catch a slow spell and put the work above
    // 100% of it (seen once: 165.8%).
    let peak_per_thread = peak_per_thread.max(measure_fma_peak_gflops());
    let peak = peak_before.max(fma_peak_all_threads(threads)?);
    for row in &mut rows {
        row.peak_fraction = row.gflops / peak;
    }
    Ok(BenchReport {
        simd: SIMD_LEVEL,
        threads,
        machine: machine_description(),
        peak_gflops_per_thread: peak_per_thread,
        peak_gflops: peak,
        batch_size: opts.batch_size,
        train_images: train_n,
        test_images: test_n,
        epochs: opts.epochs,
        rows,
    })
}

/// The FMA peak with `threads` threads running at once
/// ([`measure_fma_peak_all_threads_gflops`]), on a pool of its own: the
/// global pool may have another size (tests call [`run`]).
fn fma_peak_all_threads(threads: usize) -> Result<f64, ExpError> {
    let pool = crate::train::compute_pool_builder(threads)
        .build()
        .map_err(|e| ExpError::Config(format!("cannot start {threads} threads: {e}")))?;
    Ok(pool.install(measure_fma_peak_all_threads_gflops))
}

/// The FMA peak of the machine the issue's targets were set on (2 cores of
/// AMD Zen 5 with AVX-512, 263 GFLOP/s each).
pub const ISSUE_PEAK_GFLOPS: f64 = 523.0;

/// Below this fraction of linear scaling the all-threads FMA peak is flagged
/// as disturbed (this project's 2-core host measured 1.00-1.04 per thread in
/// four bench runs; one disturbed audit run, about 0.5).
const PEAK_SCALING_WARN: f64 = 0.8;

/// The tables `vcortex bench` prints.
pub fn render(r: &BenchReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "vcortex bench: simd {}, {} threads, {}\nFMA peak {:.1} GFLOP/s on one thread, {:.1} GFLOP/s on {} at once\n",
        r.simd, r.threads, r.machine, r.peak_gflops_per_thread, r.peak_gflops, r.threads
    ));
    // Each thread should add about one thread's peak; much less means the
    // measurement shared the cores with something else, and every % peak
    // below is then too high.
    let scaling = r.peak_gflops / r.peak_gflops_per_thread.max(f64::MIN_POSITIVE);
    if r.threads >= 2 && scaling < PEAK_SCALING_WARN * r.threads as f64 {
        out.push_str(&format!(
            "warning: the peak on {} threads measured only {scaling:.2}x one thread's: the cores \
             were busy with other work, so the % peak column reads high\n",
            r.threads
        ));
    }
    out.push_str(&format!(
        "batch {}, {} training images, {} test images, median of {} epoch(s)/pass(es)\n\n",
        r.batch_size, r.train_images, r.test_images, r.epochs
    ));
    out.push_str(&format!(
        "{:<12} {:>9} {:>10} {:>8} {:>8} {:>7} {:>9} {:>8} {:>8}\n",
        "work", "seconds", "images/s", "GFLOP", "GFLOP/s", "% peak", "PyTorch", "target", "t.%peak"
    ));
    for row in &r.rows {
        // Items the issue does not list show "-" in its columns.
        let or_dash = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_string(), f);
        out.push_str(&format!(
            "{:<12} {:>9.3} {:>10.0} {:>8.2} {:>8.1} {:>6.1}% {:>9} {:>8} {:>8}\n",
            row.work.name(),
            row.seconds,
            row.images_per_s,
            row.gflop,
            row.gflops,
            100.0 * row.peak_fraction,
            or_dash(row.pytorch_s, &|v| format!("{v:.2}s")),
            or_dash(row.target_s, &|v| format!("{v:.2}s")),
            or_dash(row.target_peak_fraction, &|v| format!("{:.1}%", 100.0 * v)),
        ));
    }
    out.push_str(&format!(
        "(PyTorch and target: the issue's figures for the full data on 2 threads; t.%peak: the share \
         of that machine's {ISSUE_PEAK_GFLOPS:.0} GFLOP/s FMA peak the target asks for, to compare \
         with % peak here)\n"
    ));
    for row in r.rows.iter().filter(|row| row.profile.len() > 1) {
        out.push_str(&format!(
            "\nprofile of {} (seconds per epoch, average thread; {})\n",
            row.work.name(),
            if row.profile.iter().any(|p| p.layer == profile::FUSED_UPDATE) {
                "dW+update = weight gradients + optimizer, wall; backward = deltas only"
            } else {
                "update = reduction of chunk gradients + optimizer, wall"
            }
        ));
        out.push_str(&format!(
            "{:<10} {:>9} {:>9} {:>7}\n",
            "layer", "forward", "backward", "share"
        ));
        for p in &row.profile {
            out.push_str(&format!(
                "{:<10} {:>9.4} {:>9.4} {:>6.1}%\n",
                p.layer,
                p.forward_s,
                p.backward_s,
                100.0 * p.share
            ));
        }
    }
    out
}

/// Writes the report as pretty JSON, atomically.
pub fn write_json(r: &BenchReport, path: &Path) -> Result<(), ExpError> {
    Ok(crate::jsonfile::write_atomic(path, r)?)
}

/// Proves, before the bench runs, that [`write_json`] will be able to write
/// `path`: not a directory, and a file can be created beside it (a probe of
/// its own name: an earlier report at `path` stays until the new one
/// replaces it).
pub fn check_json_target(path: &Path) -> Result<(), ExpError> {
    if path.is_dir() {
        return Err(ExpError::Config(format!(
            "--json {}: is a directory",
            path.display()
        )));
    }
    let crate::jsonfile::WriteTarget::Replace(target) = crate::jsonfile::write_target(path) else {
        // Written through at the end (standard output, a device or a pipe);
        // opening a pipe now would wait for its reader.
        return Ok(());
    };
    let probe = crate::jsonfile::with_suffix(&target, &format!(".probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            ExpError::Config(format!(
                "--json {}: cannot write there ({}: {e})",
                path.display(),
                probe.display()
            ))
        })
}
