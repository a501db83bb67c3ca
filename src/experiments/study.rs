//! Running stages in order, with a plan first, a summary table at the end,
//! `study.json` and the rebuilt report.

use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::data::Dataset;
use crate::kernels::SIMD_LEVEL;

use super::{
    epochs, machine_description, run_stage, stage_sizes, write_json, ExpError, Experiment, Options,
    QUICK_TEST, QUICK_TRAIN,
};

/// What one stage produced.
#[derive(Clone, Debug)]
pub struct StageOutcome {
    pub stage: Experiment,
    pub wall_seconds: f64,
    /// The summaries of the runs it trained.
    pub runs: Vec<Map<String, Value>>,
}

/// Training images seen by `stage` (epochs x images, as (CNN, MLP, DAE
/// layer-equivalents)) for the plan's estimate: `train` images a run and
/// the epochs the stage will train (the study's, `--quick`'s or
/// `--epochs`).
fn workload(stage: Experiment, opts: &Options, train: usize) -> (f64, f64, f64) {
    use super::{cnn, dae};
    let n = train as f64;
    let cnn_e = epochs(opts, cnn::EPOCHS, cnn::QUICK_EPOCHS) as f64 * n;
    let dae_e = epochs(opts, dae::PRETRAIN_EPOCHS, dae::QUICK_PRETRAIN_EPOCHS) as f64 * n;
    let mlp_e = epochs(opts, dae::FINETUNE_EPOCHS, dae::QUICK_FINETUNE_EPOCHS) as f64 * n;
    // A deeper DAE layer also runs the layers below and decodes back through
    // them: about 1, 1.8 and 2.2 times layer 1's work.
    let stack = 1.0 + 1.8 + 2.2;
    match stage {
        Experiment::A1 | Experiment::A3 => (cnn_e, 0.0, 0.0),
        Experiment::A2 => (2.0 * cnn_e, 0.0, 0.0),
        Experiment::ASubset => (4.0 * cnn_e, 0.0, 0.0),
        Experiment::B1 => (0.0, 0.0, dae_e * (stack + 0.25)),
        Experiment::B2 => (0.0, 2.0 * mlp_e, 0.0),
        Experiment::B3 => (0.0, mlp_e, dae_e * stack),
        Experiment::BSubset => (0.0, 3.0 * mlp_e, 0.0),
        Experiment::All => (0.0, 0.0, 0.0),
    }
}

/// Seconds per training image of the CNN, the MLP and DAE layer 1, measured
/// on a short timing-only run of each (no evaluation, no files, as `vcortex
/// bench`): its second of two epochs.
/// Timing the whole call instead also counted starting the thread pool and
/// the resident copy of the images, and the first epoch pays for first-touch
/// allocations (the plan said 2-3 times the real study).
fn measure_speed(data: &Dataset, opts: &Options) -> Result<(f64, f64, f64), ExpError> {
    use crate::model::{Cnn, DaeStack, Mlp};
    use crate::train::{
        pretrain_dae, train_classifier, DaeConfig, EpochMetrics, RunReport, TrainConfig,
    };
    use std::ops::ControlFlow;
    let n = 2560.min(data.train().count);
    if n == 0 {
        // Nothing to time: the stages themselves report the empty split.
        return Ok((0.0, 0.0, 0.0));
    }
    let cfg = |name: &str| {
        // Timing only: nothing is written under the folder.
        let mut c = TrainConfig::new(name, &opts.out_dir);
        c.timing_only = true;
        c.threads = opts.threads;
        c.epochs = 2;
        // The stages' batch size, cut to what the timing subset holds.
        c.batch_size = opts.batch_size.unwrap_or(c.batch_size).min(n);
        c.train_count = Some(n);
        c.test_count = Some(128.min(data.test().count));
        c.seed = opts.seed;
        c
    };
    let per_image = |r: RunReport| r.metrics.last().map_or(0.0, |m| m.seconds) / n as f64;
    type NoObserver<'a, M> = Option<&'a mut dyn FnMut(&EpochMetrics, &M) -> ControlFlow<()>>;
    let cnn = per_image(train_classifier(
        &mut Cnn::study(opts.seed),
        data.train(),
        data.test(),
        &cfg("cnn"),
        NoObserver::<Cnn>::None,
    )?);
    let mlp = per_image(train_classifier(
        &mut Mlp::new(&super::dae::five_layer_sizes(), opts.seed),
        data.train(),
        data.test(),
        &cfg("mlp"),
        NoObserver::<Mlp>::None,
    )?);
    let dae = per_image(pretrain_dae(
        &mut DaeStack::study(opts.seed),
        &DaeConfig::study(1),
        data.train(),
        data.test(),
        &cfg("dae"),
        NoObserver::<DaeStack>::None,
    )?);
    Ok((cnn, mlp, dae))
}

fn format_duration(seconds: f64) -> String {
    if seconds >= 60.0 {
        format!("{}m{:02.0}s", (seconds / 60.0).floor(), seconds % 60.0)
    } else {
        format!("{seconds:.1}s")
    }
}

fn headline(runs: &[Map<String, Value>]) -> String {
    let parts: Vec<String> = runs
        .iter()
        .filter_map(|m| {
            let name = m.get("name").and_then(Value::as_str).unwrap_or("?");
            let acc = m.get("final_test_accuracy").and_then(Value::as_f64)?;
            Some(format!("{name} {acc:.4}"))
        })
        .collect();
    if parts.is_empty() {
        if let Some(Value::Object(results)) = runs.first().and_then(|m| m.get("results")) {
            // A stack's headline: each layer's final training cost.
            return results
                .iter()
                .filter(|(k, _)| k.ends_with("final training cost"))
                .map(|(k, v)| {
                    format!(
                        "{k} {}",
                        v.as_f64()
                            .map(|x| format!("{x:.1}"))
                            .unwrap_or_else(|| v.to_string())
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
        }
        return "-".into();
    }
    parts.join("; ")
}

/// Runs `stages` in order; with `plan`, prints the plan and an estimate first.
pub fn run_all(
    stages: &[Experiment],
    data: &Dataset,
    opts: &Options,
    plan: bool,
) -> Result<Vec<StageOutcome>, ExpError> {
    let threads = if opts.threads == 0 {
        rayon::current_num_threads()
    } else {
        opts.threads
    };
    // Every stage's images first: a subset larger than the data stops the
    // study here rather than after the stages before it have trained.
    let used = stages
        .iter()
        .map(|&s| {
            stage_sizes(s, data, opts).map_err(|e| match e {
                ExpError::Config(m) => ExpError::Config(format!("stage {}: {m}", s.name())),
                e => e,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if plan {
        crate::note!(
            "vcortex study: {} stages, SIMD {SIMD_LEVEL}, {threads} threads, output in {}",
            stages.len(),
            opts.out_dir.display()
        );
        if opts.quick {
            crate::note!(
                "--quick: at most {QUICK_TRAIN}/{QUICK_TEST} images and a few epochs per run \
                 (the images each stage uses are listed; its title names the study's settings)"
            );
        }
        crate::note!("measuring speed for the estimate...");
        let (cnn, mlp, dae) = measure_speed(data, opts)?;
        let mut total = 0.0;
        for (&s, used) in stages.iter().zip(&used) {
            let (c, m, d) = workload(s, opts, used.train);
            let est = c * cnn + m * mlp + d * dae;
            total += est;
            crate::note!(
                "  {:<10} ~{:>7}  {:>11}  {}",
                s.name(),
                format_duration(est),
                format!("{}/{}", used.train, used.test),
                s.title()
            );
        }
        crate::note!(
            "  estimated total ~{} (excluding figures and test evaluation)",
            format_duration(total)
        );
    }
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for &stage in stages {
        if plan {
            crate::note!("== stage {} ==", stage.name());
        }
        let t = Instant::now();
        let runs = run_stage(stage, data, opts)?;
        outcomes.push(StageOutcome {
            stage,
            wall_seconds: t.elapsed().as_secs_f64(),
            runs,
        });
        if plan {
            write_study(opts, &outcomes, threads, started.elapsed().as_secs_f64())?;
        }
    }
    let total = started.elapsed().as_secs_f64();
    if plan {
        write_study(opts, &outcomes, threads, total)?;
    }
    // The runs are complete and on disk whatever happens here: a report that
    // cannot be rebuilt (say, a damaged summary.json of another run under
    // the same folder) is a warning, not a failed run.
    let paths = crate::report::build(&opts.out_dir)
        .map_err(|e| {
            crate::note!(
                "warning: the report under {} was not rebuilt: {e}; the run folders are \
                 complete (`vcortex report --out {}` rebuilds it once that is fixed)",
                opts.out_dir.display(),
                opts.out_dir.display()
            )
        })
        .ok();
    crate::note!();
    crate::note!("{:<10} {:>9}  result", "stage", "wall");
    for o in &outcomes {
        crate::note!(
            "{:<10} {:>9}  {}",
            o.stage.name(),
            format_duration(o.wall_seconds),
            headline(&o.runs)
        );
    }
    crate::note!("{:<10} {:>9}", "total", format_duration(total));
    if let Some(paths) = paths {
        crate::note!(
            "report: {} and {}",
            paths.html.display(),
            paths.markdown.display()
        );
    }
    Ok(outcomes)
}

/// The command that reruns one stage with the study's flags: the recorded
/// `vcortex run all ...` line with the stage in place of `all`.
fn stage_command(opts: &Options, stage: Experiment) -> String {
    match opts.command.split_once(" run all") {
        Some((program, flags)) => format!("{program} run {}{flags}", stage.name()),
        None => format!("vcortex run {}", stage.name()),
    }
}

fn write_study(
    opts: &Options,
    outcomes: &[StageOutcome],
    threads: usize,
    total: f64,
) -> Result<(), ExpError> {
    let stages: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            json!({
                "name": o.stage.name(),
                "title": o.stage.title(),
                "wall_seconds": o.wall_seconds,
                "command": stage_command(opts, o.stage),
            })
        })
        .collect();
    let study = json!({
        "title": "vcortex: the study end to end",
        "stages": stages,
        "machine": machine_description(),
        "simd": SIMD_LEVEL,
        "threads": threads,
        "seed": opts.seed,
        "quick": opts.quick,
        "total_seconds": total,
        "command": opts.command,
    });
    write_json(&opts.out_dir.join("study.json"), &study)
}
