//! Running stages, several at once on shares of the threads, each after the
//! stages it reads, with a plan first, a summary table at the end,
//! `study.json` and the rebuilt report.

use std::sync::mpsc;
use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::data::Dataset;
use crate::kernels::SIMD_LEVEL;

use super::{
    epochs, machine_description, run_stage, stage_sizes, write_json, ExpError, Experiment, Options,
    QUICK_TEST, QUICK_TRAIN,
};

/// The most stages `run all` trains at once when `--jobs` is not given. The
/// dense models stop gaining at about 4 threads (the README's 16-core
/// table: their epochs stay at 1.3-1.9 s from 4 to 16 threads), while
/// stages side by side on shares of the threads finish sooner together: on
/// 2 cores, b1 and b3 on one thread each took 34.1 s against 38.7 s one
/// after the other on two threads (a1 and a3: 1.12-1.19x faster).
pub const MAX_AUTO_JOBS: usize = 4;

/// Stages at once for `threads` threads when `--jobs` is not given: each
/// stage gets `ceil(threads / MAX_AUTO_JOBS)` threads (2 threads: two
/// stages of 1; 16: four of 4), and as many stages run as fit.
pub fn auto_jobs(threads: usize) -> usize {
    let per_stage = threads.div_ceil(MAX_AUTO_JOBS).max(1);
    (threads / per_stage).max(1)
}

/// How `run all` shares the threads: `jobs` stages at once, each on
/// `per_stage` threads (the thread count its numbers depend on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lanes {
    pub jobs: usize,
    pub per_stage: usize,
}

impl Lanes {
    /// `threads` resolved (never 0); `jobs` as given (0: [`auto_jobs`]).
    pub fn new(threads: usize, jobs: usize) -> Result<Lanes, ExpError> {
        let jobs = if jobs == 0 { auto_jobs(threads) } else { jobs };
        if jobs > threads {
            return Err(ExpError::Config(format!(
                "--jobs {jobs} with {threads} threads: every stage needs a thread of its own \
                 (raise --threads or lower --jobs)"
            )));
        }
        Ok(Lanes {
            jobs,
            per_stage: threads / jobs,
        })
    }
}

/// The thread count `opts` asks for, 0 resolved to the global pool's.
pub(crate) fn total_threads(opts: &Options) -> usize {
    if opts.threads == 0 {
        rayon::current_num_threads()
    } else {
        opts.threads
    }
}

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

/// The first of `pending` (in start order) whose stages that it reads, of
/// those in `stages`, are all `done`.
fn next_ready(pending: &[Experiment], done: &[Experiment], stages: &[Experiment]) -> Option<usize> {
    pending.iter().position(|s| {
        s.reads()
            .iter()
            .all(|r| !stages.contains(r) || done.contains(r))
    })
}

/// `stages` in the order they start. One at a time: as given (the study's
/// order puts every stage after those it reads). Several: the longest chain
/// first (a stage's estimate plus the longest chain of the stages that read
/// it), so that the DAE stacks, which b2 and b-subset wait for, start at
/// once; ties keep the given order.
fn start_order(
    stages: &[Experiment],
    estimate: &dyn Fn(Experiment) -> f64,
    jobs: usize,
) -> Vec<Experiment> {
    fn chain(s: Experiment, stages: &[Experiment], estimate: &dyn Fn(Experiment) -> f64) -> f64 {
        let after = stages
            .iter()
            .filter(|t| t.reads().contains(&s))
            .map(|&t| chain(t, stages, estimate))
            .fold(0.0, f64::max);
        estimate(s) + after
    }
    if jobs <= 1 {
        return stages.to_vec();
    }
    // Each stage's chain once, not once per comparison.
    let mut keyed: Vec<(f64, Experiment)> = stages
        .iter()
        .map(|&s| (chain(s, stages, estimate), s))
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed.into_iter().map(|(_, s)| s).collect()
}

/// The wall time of training `order` on `jobs` lanes by the rule
/// [`train_stages`] follows, each stage taking its estimate.
fn simulated_total(
    order: &[Experiment],
    stages: &[Experiment],
    estimate: &dyn Fn(Experiment) -> f64,
    jobs: usize,
) -> f64 {
    let mut pending = order.to_vec();
    let mut done = Vec::new();
    let mut running: Vec<(f64, Experiment)> = Vec::new();
    let mut now = 0.0;
    loop {
        while running.len() < jobs {
            let Some(i) = next_ready(&pending, &done, stages) else {
                break;
            };
            let stage = pending.remove(i);
            running.push((now + estimate(stage), stage));
        }
        let Some(first) = (0..running.len()).min_by(|&a, &b| running[a].0.total_cmp(&running[b].0))
        else {
            break;
        };
        let (end, stage) = running.swap_remove(first);
        now = end;
        done.push(stage);
    }
    now
}

/// Stack of a stage's thread: the main thread's usual 8 MiB, which the
/// stages were written against.
const STAGE_STACK_BYTES: usize = 8 << 20;

/// "; waiting for ..." when `running` stages are still training.
fn waiting_note(running: usize) -> String {
    match running {
        0 => String::new(),
        n => {
            format!("; waiting for the {n} stage(s) still running (they finish and stay resumable)")
        }
    }
}

/// What trains one stage (on the thread that calls it).
type StageRunner<'a> = dyn Fn(Experiment) -> Result<Vec<Map<String, Value>>, ExpError> + Sync + 'a;

/// Runs `train` for each of `order`, up to `jobs` at once on threads of
/// their own, starting a stage once the stages it reads (of `stages`) have
/// finished. `finished` runs on the calling thread as each stage ends.
/// After a failure no stage starts; those running finish (their runs stay
/// resumable) and the first error is returned, the stage named. A stage
/// that panics is reported the same way, and its panic resumed once the
/// others have ended.
fn train_stages(
    order: &[Experiment],
    stages: &[Experiment],
    jobs: usize,
    announce: bool,
    train: &StageRunner,
    finished: &mut dyn FnMut(StageOutcome) -> Result<(), ExpError>,
) -> Result<(), ExpError> {
    let (tx, rx) = mpsc::channel();
    let mut pending = order.to_vec();
    let mut done = Vec::new();
    let mut running = 0usize;
    let mut error: Option<ExpError> = None;
    let mut panic = None;
    // With several stages at once, an error names its stage.
    let named = |stage, e| match jobs {
        1 => e,
        _ => ExpError::Stage {
            stage,
            source: Box::new(e),
        },
    };
    std::thread::scope(|scope| loop {
        while error.is_none() && panic.is_none() && running < jobs {
            let Some(i) = next_ready(&pending, &done, stages) else {
                break;
            };
            let stage = pending.remove(i);
            if announce {
                if jobs > 1 {
                    crate::note!("== stage {} starts ==", stage.name());
                } else {
                    crate::note!("== stage {} ==", stage.name());
                }
            }
            let tx = tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("stage {}", stage.name()))
                .stack_size(STAGE_STACK_BYTES)
                .spawn_scoped(scope, move || {
                    let t = Instant::now();
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train(stage)));
                    // The receiver lives until every stage has reported.
                    let _ = tx.send((stage, t.elapsed().as_secs_f64(), result));
                });
            match spawned {
                Ok(_) => running += 1,
                Err(source) => error = Some(ExpError::Spawn { stage, source }),
            }
        }
        if running == 0 {
            break;
        }
        let Ok((stage, seconds, result)) = rx.recv() else {
            break;
        };
        running -= 1;
        done.push(stage);
        let failure = match result {
            Ok(Ok(runs)) => {
                if announce && jobs > 1 {
                    crate::note!(
                        "== stage {} done in {} ==",
                        stage.name(),
                        format_duration(seconds)
                    );
                }
                let outcome = StageOutcome {
                    stage,
                    wall_seconds: seconds,
                    runs,
                };
                finished(outcome).err()
            }
            Ok(Err(e)) => Some(e),
            Err(payload) => {
                panic.get_or_insert(payload);
                crate::note!(
                    "stage {} panicked (above){}",
                    stage.name(),
                    waiting_note(running)
                );
                None
            }
        };
        // The first error is returned; the note says what else happened.
        let what = match failure {
            Some(e) => {
                let text = e.to_string();
                let first = error.is_none() && panic.is_none();
                if first {
                    error = Some(named(stage, e));
                }
                (running > 0 || !first).then_some(text)
            }
            None => None,
        };
        if let Some(what) = what {
            crate::note!(
                "stage {} failed: {what}{}",
                stage.name(),
                waiting_note(running)
            );
        }
    });
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
    error.map_or(Ok(()), Err)
}

/// Runs `stages`, `opts.jobs` at a time (see [`Lanes`]); with `plan`, prints
/// the plan and an estimate first.
pub fn run_all(
    stages: &[Experiment],
    data: &Dataset,
    opts: &Options,
    plan: bool,
) -> Result<Vec<StageOutcome>, ExpError> {
    let threads = total_threads(opts);
    let lanes = if stages.len() > 1 {
        Lanes::new(threads, opts.jobs)?
    } else {
        Lanes {
            jobs: 1,
            per_stage: threads,
        }
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
    let estimate_with = |speed: (f64, f64, f64)| {
        let used = &used;
        move |s: Experiment| {
            let i = stages.iter().position(|&t| t == s).expect("a listed stage");
            let (c, m, d) = workload(s, opts, used[i].train);
            c * speed.0 + m * speed.1 + d * speed.2
        }
    };
    // What each stage trains with: the study's settings on its share of the
    // threads (also what the plan's speed is timed with).
    let mut stage_opts = opts.clone();
    stage_opts.threads = lanes.per_stage;
    let mut order = start_order(stages, &estimate_with((1.0, 1.0, 1.0)), lanes.jobs);
    if plan {
        crate::note!(
            "vcortex study: {} stages, SIMD {SIMD_LEVEL}, {threads} threads, output in {}",
            stages.len(),
            opts.out_dir.display()
        );
        // Never more stages at once than there are.
        let at_once = lanes.jobs.min(stages.len());
        if lanes.jobs > 1 {
            crate::note!(
                "up to {at_once} stages at once, {} thread(s) each (--jobs {}{}; a stage's \
                 numbers depend on its own thread count: `vcortex --threads {} run STAGE` gives \
                 them again)",
                lanes.per_stage,
                lanes.jobs,
                if opts.jobs == 0 { ", the default" } else { "" },
                lanes.per_stage
            );
        }
        let busy = at_once * lanes.per_stage;
        if busy < threads {
            crate::note!(
                "note: {} of the {threads} threads stay idle (at most {at_once} stages at once x \
                 {} thread(s))",
                threads - busy,
                lanes.per_stage
            );
        }
        if opts.quick {
            crate::note!(
                "--quick: at most {QUICK_TRAIN}/{QUICK_TEST} images and a few epochs per run \
                 (the images each stage uses are listed; its title names the study's settings)"
            );
        }
        crate::note!("measuring speed for the estimate...");
        let estimate = estimate_with(measure_speed(data, &stage_opts)?);
        order = start_order(stages, &estimate, lanes.jobs);
        for (&s, used) in stages.iter().zip(&used) {
            crate::note!(
                "  {:<10} ~{:>7}  {:>11}  {}",
                s.name(),
                format_duration(estimate(s)),
                format!("{}/{}", used.train, used.test),
                s.title()
            );
        }
        let total = simulated_total(&order, stages, &estimate, lanes.jobs);
        crate::note!(
            "  estimated total ~{} (excluding figures and test evaluation)",
            format_duration(total)
        );
    }
    let started = Instant::now();
    let mut outcomes: Vec<StageOutcome> = Vec::new();
    // b3 draws its layer 1 beside b1's; where b1 may train beside it, that
    // waits until both have ended, so that it never sees a b1 half done.
    let b3_after_b1 = stages.contains(&Experiment::B1) && stages.contains(&Experiment::B3);
    let train = |stage| run_stage(stage, data, &stage_opts, !b3_after_b1);
    let mut record = |outcome: StageOutcome| {
        let stage = outcome.stage;
        outcomes.push(outcome);
        // The summary lists stages in the study's order, whichever ended first.
        outcomes.sort_by_key(|o| stages.iter().position(|&s| s == o.stage));
        let ended = |s| outcomes.iter().any(|o| o.stage == s);
        if b3_after_b1
            && matches!(stage, Experiment::B1 | Experiment::B3)
            && ended(Experiment::B1)
            && ended(Experiment::B3)
        {
            super::dae::compare_b3_with_b1(data, opts)?;
        }
        if plan {
            write_study(
                opts,
                &outcomes,
                threads,
                lanes,
                started.elapsed().as_secs_f64(),
            )?;
        }
        Ok(())
    };
    let train_all = |record: &mut dyn FnMut(StageOutcome) -> Result<(), ExpError>| {
        train_stages(&order, stages, lanes.jobs, plan, &train, record)
    };
    if lanes.jobs > 1 {
        crate::console::with_shared_bars(|| train_all(&mut record))?;
    } else {
        train_all(&mut record)?;
    }
    let total = started.elapsed().as_secs_f64();
    if plan {
        write_study(opts, &outcomes, threads, lanes, total)?;
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
fn stage_command(opts: &Options, stage: Experiment, lanes: Lanes) -> String {
    use crate::cli::{command_items, shell_words};
    let words = shell_words(&opts.command);
    let items = command_items(&words);
    // The experiment is the second bare word after the program (the first
    // is `run`); flags may come before it (`run --seed 3 all`).
    let experiment = items
        .iter()
        .filter(|item| item.flag.is_none() && item.start > 0)
        .nth(1)
        .map(|item| item.start)
        .filter(|&i| words[i] == "all");
    let Some(experiment) = experiment else {
        return match lanes.jobs {
            1 => format!("vcortex run {}", stage.name()),
            _ => format!("vcortex --threads {} run {}", lanes.per_stage, stage.name()),
        };
    };
    // `--jobs` means nothing to one stage; with several stages at once, the
    // stage's own thread count replaces the study's.
    let dropped = |flag: &str| flag == "jobs" || (lanes.jobs > 1 && flag == "threads");
    let mut out: Vec<String> = Vec::new();
    for item in &items {
        if item.flag.is_some_and(dropped) {
            continue;
        }
        if item.start == experiment {
            out.push(stage.name().to_string());
        } else {
            out.extend(
                words[item.start..item.start + item.len]
                    .iter()
                    .map(|w| w.to_string()),
            );
        }
        if item.start == 0 && lanes.jobs > 1 {
            out.push(format!("--threads {}", lanes.per_stage));
        }
    }
    out.join(" ")
}

fn write_study(
    opts: &Options,
    outcomes: &[StageOutcome],
    threads: usize,
    lanes: Lanes,
    total: f64,
) -> Result<(), ExpError> {
    let stages: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            json!({
                "name": o.stage.name(),
                "title": o.stage.title(),
                "wall_seconds": o.wall_seconds,
                "command": stage_command(opts, o.stage, lanes),
            })
        })
        .collect();
    let study = json!({
        "title": "vcortex: the study end to end",
        "stages": stages,
        "machine": machine_description(),
        "simd": SIMD_LEVEL,
        "threads": threads,
        "jobs": lanes.jobs,
        "threads_per_stage": lanes.per_stage,
        "seed": opts.seed,
        "quick": opts.quick,
        "total_seconds": total,
        "command": opts.command,
    });
    write_json(&opts.out_dir.join("study.json"), &study)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Experiment::*;

    #[test]
    fn automatic_jobs_give_each_stage_a_share_of_up_to_four() {
        let lanes = |t| Lanes::new(t, 0).unwrap();
        assert_eq!(
            lanes(1),
            Lanes {
                jobs: 1,
                per_stage: 1
            }
        );
        assert_eq!(
            lanes(2),
            Lanes {
                jobs: 2,
                per_stage: 1
            }
        );
        assert_eq!(
            lanes(4),
            Lanes {
                jobs: 4,
                per_stage: 1
            }
        );
        assert_eq!(
            lanes(6),
            Lanes {
                jobs: 3,
                per_stage: 2
            }
        );
        assert_eq!(
            lanes(16),
            Lanes {
                jobs: 4,
                per_stage: 4
            }
        );
        // 5 threads: two stages of 2, one thread idle (the plan says so).
        assert_eq!(
            lanes(5),
            Lanes {
                jobs: 2,
                per_stage: 2
            }
        );
        assert_eq!(
            Lanes::new(8, 3).unwrap(),
            Lanes {
                jobs: 3,
                per_stage: 2
            }
        );
        assert_eq!(
            Lanes::new(2, 1).unwrap(),
            Lanes {
                jobs: 1,
                per_stage: 2
            }
        );
        let err = Lanes::new(2, 3).unwrap_err().to_string();
        assert!(err.contains("--jobs 3 with 2 threads"), "{err}");
    }

    /// Seconds per stage, roughly the study's on 2 cores.
    fn study_estimate(s: Experiment) -> f64 {
        match s {
            A1 => 150.0,
            A2 => 290.0,
            A3 => 145.0,
            ASubset => 120.0,
            B1 => 270.0,
            B2 => 140.0,
            B3 => 320.0,
            BSubset => 45.0,
            All => unreachable!(),
        }
    }

    #[test]
    fn stages_start_after_what_they_read_longest_chain_first() {
        let stages = Experiment::STUDY;
        // One at a time: the study's order.
        assert_eq!(start_order(&stages, &study_estimate, 1), stages);
        let order = start_order(&stages, &study_estimate, 2);
        // b1 leads the longest chain (b1 then b2: 410 s), then b3 (b3 then
        // b-subset: 365 s), then a2, the longest stage that nothing reads.
        assert_eq!(&order[..3], &[B1, B3, A2]);
        // Nothing that reads a stage is ready before it is done.
        assert_eq!(next_ready(&[B2, BSubset, A1], &[], &stages), Some(2));
        assert_eq!(next_ready(&[B2, BSubset], &[B1], &stages), Some(0));
        assert_eq!(next_ready(&[BSubset], &[B1, B3], &stages), None);
        assert_eq!(next_ready(&[BSubset], &[B1, B3, ASubset], &stages), Some(0));
        // A stage not in the list is not waited for.
        assert_eq!(next_ready(&[B2], &[], &[B2]), Some(0));
    }

    #[test]
    fn the_estimate_follows_the_schedule() {
        let stages = Experiment::STUDY;
        let sum: f64 = stages.iter().map(|&s| study_estimate(s)).sum();
        let one = simulated_total(
            &start_order(&stages, &study_estimate, 1),
            &stages,
            &study_estimate,
            1,
        );
        assert_eq!(one, sum);
        // Two lanes: at least half the work and the longest chain, and here
        // within a stage of that.
        let order = start_order(&stages, &study_estimate, 2);
        let two = simulated_total(&order, &stages, &study_estimate, 2);
        assert!(two >= sum / 2.0 && two >= 270.0 + 140.0, "{two}");
        assert!(two <= sum / 2.0 + 150.0, "{two} against {}", sum / 2.0);
        // Enough lanes for everything: the longest chain, b1 then b2.
        let eight = simulated_total(&order, &stages, &study_estimate, 8);
        assert_eq!(eight, 270.0 + 140.0);
    }

    /// A stage runner that logs its starts and ends, and how many ran at once.
    struct FakeStages {
        log: std::sync::Mutex<Vec<(bool, Experiment)>>,
        running: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
        /// Set once b3 has failed or unwound (the panic hook's backtrace can
        /// take longer than any fixed sleep), for b1 to end after it.
        b3_over: std::sync::atomic::AtomicBool,
    }

    /// Sets `b3_over` when dropped, so also while a panic unwinds.
    struct Over<'a>(&'a std::sync::atomic::AtomicBool);

    impl Drop for Over<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl FakeStages {
        fn new() -> Self {
            FakeStages {
                log: Default::default(),
                running: Default::default(),
                most: Default::default(),
                b3_over: Default::default(),
            }
        }

        /// Trains `stage` for a few milliseconds; b3 fails or panics as asked.
        fn train(&self, stage: Experiment, b3: &str) -> Result<Vec<Map<String, Value>>, ExpError> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.running.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            self.log.lock().unwrap().push((true, stage));
            std::thread::sleep(std::time::Duration::from_millis(10));
            if b3 == "works" && self.log.lock().unwrap().len() <= 3 {
                // The first three stay until three run at once (or a second
                // passes on a machine too busy to start them), so that
                // `most` shows the limit, not the threads' start-up speed.
                let waited = std::time::Instant::now();
                while self.running.load(SeqCst) < 3 && waited.elapsed().as_secs() < 1 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            if stage == B1 && b3 != "works" {
                // b1 is still running when b3's failure arrives.
                while !self.b3_over.load(SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            self.running.fetch_sub(1, SeqCst);
            if stage == B3 {
                let _over = Over(&self.b3_over);
                match b3 {
                    "fails" => return Err(ExpError::Config("b3 broke".into())),
                    "panics" => panic!("b3 panicked on purpose"),
                    _ => {}
                }
            }
            self.log.lock().unwrap().push((false, stage));
            Ok(Vec::new())
        }
    }

    /// `order` through [`train_stages`] on `jobs` lanes with a [`FakeStages`]
    /// whose b3 does `b3`: what it returned (or its panic), the fake's log
    /// and the stages recorded as ended.
    fn run_fake(
        order: &[Experiment],
        jobs: usize,
        b3: &str,
    ) -> (
        std::thread::Result<Result<(), ExpError>>,
        FakeStages,
        Vec<Experiment>,
    ) {
        let fake = FakeStages::new();
        let mut ended = Vec::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut record = |o: StageOutcome| {
                ended.push(o.stage);
                Ok(())
            };
            let train = |s| fake.train(s, b3);
            train_stages(order, &Experiment::STUDY, jobs, false, &train, &mut record)
        }));
        (result, fake, ended)
    }

    #[test]
    fn stages_train_at_most_jobs_at_once_each_after_what_it_reads() {
        let stages = Experiment::STUDY;
        let order = start_order(&stages, &study_estimate, 3);
        let (result, fake, mut ended) = run_fake(&order, 3, "works");
        result.unwrap().unwrap();
        assert_eq!(fake.most.into_inner(), 3);
        ended.sort_by_key(|s| stages.iter().position(|t| t == s));
        assert_eq!(ended, stages);
        let log = fake.log.into_inner().unwrap();
        let at = |start: bool, s| log.iter().position(|&e| e == (start, s)).unwrap();
        for s in stages {
            for &r in s.reads() {
                assert!(
                    at(false, r) < at(true, s),
                    "{} started before {} ended",
                    s.name(),
                    r.name()
                );
            }
        }
    }

    #[test]
    fn a_failed_stage_lets_the_running_one_finish_and_starts_no_other() {
        let order = [B3, B1, A1, A2, A3, ASubset, B2, BSubset];
        let (result, fake, ended) = run_fake(&order, 2, "fails");
        // b3 fails first; b1, beside it, ends and is recorded; nothing else starts.
        let err = result.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "stage b3: invalid settings: b3 broke");
        assert_eq!(ended, [B1]);
        let mut started: Vec<_> = fake.log.into_inner().unwrap();
        started.retain(|e| e.0);
        started.sort_by_key(|e| order.iter().position(|&s| s == e.1));
        assert_eq!(started, [(true, B3), (true, B1)]);
        // One at a time, the error is the stage's own.
        let (result, _, _) = run_fake(&[B3], 1, "fails");
        let err = result.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "invalid settings: b3 broke");
    }

    #[test]
    fn a_panicking_stage_panics_the_study_once_the_others_end() {
        let (result, _, ended) = run_fake(&[B3, B1, A1], 2, "panics");
        let payload = result.unwrap_err();
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"b3 panicked on purpose")
        );
        assert_eq!(ended, [B1]);
    }

    #[test]
    fn a_stage_command_reruns_it_on_its_own_threads() {
        let mut opts = Options::new("data", "runs");
        let one = Lanes {
            jobs: 1,
            per_stage: 2,
        };
        let two = Lanes {
            jobs: 2,
            per_stage: 1,
        };
        opts.command = "vcortex --threads 2 run all --jobs 2 --out 'my runs' --seed 3".into();
        assert_eq!(
            stage_command(&opts, B1, two),
            "vcortex --threads 1 run b1 --out 'my runs' --seed 3"
        );
        assert_eq!(
            stage_command(&opts, B1, one),
            "vcortex --threads 2 run b1 --out 'my runs' --seed 3"
        );
        opts.command = "vcortex run all --threads=4 --out 'it'\\''s all' --jobs=2".into();
        assert_eq!(
            stage_command(
                &opts,
                A2,
                Lanes {
                    jobs: 2,
                    per_stage: 2
                }
            ),
            "vcortex --threads 2 run a2 --out 'it'\\''s all'"
        );
        opts.command = String::new();
        assert_eq!(stage_command(&opts, A1, one), "vcortex run a1");
        assert_eq!(stage_command(&opts, A1, two), "vcortex --threads 1 run a1");
        assert_eq!(
            crate::cli::shell_words("a  'b c' 'd'\\''e' f"),
            ["a", "'b c'", "'d'\\''e'", "f"]
        );
        // The experiment after flags, and a folder named like a stage.
        opts.command = "vcortex run --seed 3 --out all all --quick".into();
        assert_eq!(
            stage_command(&opts, B3, two),
            "vcortex --threads 1 run --seed 3 --out all b3 --quick"
        );
    }
}
