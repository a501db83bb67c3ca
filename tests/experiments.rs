//! End-to-end runs of every experiment on small subsets of the shipped MNIST:
//! the run folders, CSV and JSON files and figures exist and parse, the
//! classifiers learn well above chance, and the autoencoders' costs fall.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vcortex::experiments::{run, Experiment, Options};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

fn options(out: &Path, train: usize, epochs: usize) -> Options {
    let mut o = Options::new(data_dir(), out);
    o.train_size = Some(train);
    o.test_size = Some(500);
    o.epochs = Some(epochs);
    o.progress = false;
    o.threads = 2;
    o.seed = 7;
    o
}

/// Rows of a metrics.csv as (header, rows of numbers; empty cells are NaN).
fn read_csv(dir: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).expect("metrics.csv exists");
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| {
            let cells: Vec<f64> = l
                .split(',')
                .map(|c| {
                    if c.is_empty() {
                        f64::NAN
                    } else {
                        c.parse().expect("numeric cell")
                    }
                })
                .collect();
            assert_eq!(cells.len(), header.len(), "ragged CSV line {l:?}");
            cells
        })
        .collect();
    (header, rows)
}

fn summary(dir: &Path) -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json exists");
    match serde_json::from_str(&text).expect("summary.json parses") {
        Value::Object(m) => m,
        _ => panic!("summary.json is not an object"),
    }
}

/// Every figure listed in summary.json exists and is a PNG.
fn check_figures(dir: &Path) {
    let s = summary(dir);
    let figs = s
        .get("figures")
        .and_then(Value::as_array)
        .expect("figures listed");
    assert!(!figs.is_empty());
    for f in figs {
        let file = f.get("file").and_then(Value::as_str).unwrap();
        let bytes = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{file} is a PNG");
    }
}

fn final_accuracy(dir: &Path) -> f64 {
    let (header, rows) = read_csv(dir);
    let col = header.iter().position(|h| h == "test_accuracy").unwrap();
    rows.last().unwrap()[col]
}

#[test]
fn a1_to_a3_learn_and_write_their_files() {
    let out = tempfile::tempdir().unwrap();
    let opts = options(out.path(), 3000, 2);
    for exp in [Experiment::A1, Experiment::A2, Experiment::A3] {
        run(exp, &opts).unwrap();
    }
    for run_dir in ["a1", "a2-momentum-0.1", "a2-momentum-0.9", "a3"] {
        let dir = out.path().join(run_dir);
        let (header, rows) = read_csv(&dir);
        assert_eq!(
            header,
            [
                "epoch",
                "train_cost",
                "test_cost",
                "test_accuracy",
                "seconds"
            ]
        );
        assert_eq!(rows.len(), 2, "{run_dir}: one row per epoch");
        let acc = final_accuracy(&dir);
        // Chance is 0.1; two epochs on 3000 images reach well over 0.3.
        assert!(acc > 0.3, "{run_dir}: accuracy {acc}");
        check_figures(&dir);
        let s = summary(&dir);
        assert_eq!(s["epochs_completed"], 2);
        assert!(s.contains_key("reference") && s.contains_key("settings"));
    }
    assert!(out.path().join("report.html").is_file());
    assert!(out.path().join("report.md").is_file());
}

#[test]
fn b1_to_b3_pretrain_finetune_and_costs_fall() {
    let out = tempfile::tempdir().unwrap();
    let opts = options(out.path(), 1024, 2);
    for exp in [Experiment::B1, Experiment::B2, Experiment::B3] {
        run(exp, &opts).unwrap();
    }
    for stack in ["b1", "b3"] {
        for layer in 1..=3 {
            let dir = out.path().join(stack).join(format!("layer{layer}"));
            let (header, rows) = read_csv(&dir);
            let col = header.iter().position(|h| h == "train_cost").unwrap();
            assert_eq!(rows.len(), 2);
            assert!(
                rows[1][col] < rows[0][col],
                "{stack} layer {layer}: reconstruction cost did not fall: {} -> {}",
                rows[0][col],
                rows[1][col]
            );
        }
        check_figures(&out.path().join(stack));
    }
    check_figures(&out.path().join("b1-undercomplete"));
    // Pre-trained networks start far above chance (0.1) even after two short
    // epochs; the randomly initialised deep sigmoid net is slow to start, as
    // the study shows, so it only has to produce a valid accuracy.
    for dir in ["b2/pretrained", "b3/finetune"] {
        let acc = final_accuracy(&out.path().join(dir));
        assert!(acc > 0.25, "{dir}: accuracy {acc}");
    }
    let random = final_accuracy(&out.path().join("b2/random"));
    assert!((0.0..=1.0).contains(&random));
    check_figures(&out.path().join("b2"));
}

#[test]
fn b2_without_b1_says_what_to_run_first() {
    let out = tempfile::tempdir().unwrap();
    let err = run(Experiment::B2, &options(out.path(), 256, 1)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("vcortex run b1"), "{msg}");
}

#[test]
fn out_of_range_settings_are_refused_before_training() {
    let out = tempfile::tempdir().unwrap();
    let mut o = options(out.path(), 70000, 1);
    let msg = run(Experiment::A1, &o).unwrap_err().to_string();
    assert!(msg.contains("--train-size 70000"), "{msg}");
    o.train_size = Some(100);
    o.lr = Some(-1.0);
    let msg = run(Experiment::A1, &o).unwrap_err().to_string();
    assert!(msg.contains("--lr"), "{msg}");
    assert!(!out.path().join("a1").exists());
}

/// An output folder another command works in is refused as a whole, before
/// any stage starts: its stages read each other's stacks and rebuild one
/// report. Once that command ends, the stage runs.
#[test]
fn an_output_folder_another_command_works_in_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let held = std::fs::File::create(out.path().join(".lock")).unwrap();
    held.lock().unwrap();
    let o = options(out.path(), 128, 1);
    let msg = run(Experiment::A1, &o).unwrap_err().to_string();
    assert!(msg.contains("another vcortex run"), "{msg}");
    assert!(msg.contains(&out.path().display().to_string()), "{msg}");
    assert!(!out.path().join("a1").exists());
    drop(held);
    run(Experiment::A1, &o).unwrap();
    assert!(out.path().join("a1/metrics.csv").is_file());
}

/// A damaged summary.json of another run under the same folder leaves the
/// report unbuilt (a warning), not the finished run failed.
#[test]
fn a_damaged_neighbour_does_not_fail_a_finished_run() {
    let out = tempfile::tempdir().unwrap();
    let other = out.path().join("older");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("summary.json"), b"{ not json").unwrap();
    let outcomes = run(Experiment::A1, &options(out.path(), 256, 1)).unwrap();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(read_csv(&out.path().join("a1")).1.len(), 1);
}

/// Raising --epochs on a resumed stacked DAE and its fine-tuning gives what a
/// fresh run with those epochs gives: layer 1 resumes exactly, and the runs
/// built on it (the layers above, the fine-tuned classifier), whose
/// checkpoints sit on the old layer 1, train again instead of resuming (and
/// restoring the old layer 1 with them).
#[test]
fn raising_epochs_on_a_resumed_stack_equals_a_fresh_run() {
    let resumed = tempfile::tempdir().unwrap();
    let fresh = tempfile::tempdir().unwrap();
    for stage in [Experiment::B1, Experiment::B2] {
        run(stage, &options(resumed.path(), 256, 1)).unwrap();
    }
    let mut o = options(resumed.path(), 256, 2);
    o.resume = true;
    for stage in [Experiment::B1, Experiment::B2] {
        run(stage, &o).unwrap();
        run(stage, &options(fresh.path(), 256, 2)).unwrap();
    }
    // The fine-tuned classifier too: its checkpoint sits on the old stack,
    // so it starts over on the new one.
    let folders = [
        "b1/layer1",
        "b1/layer2",
        "b1/layer3",
        "b2/pretrained",
        "b2/random",
    ];
    for folder in folders {
        let rows = |root: &Path| {
            let (_, rows) = read_csv(&root.join(folder));
            // Every column but the wall-clock seconds, bit for bit.
            rows.iter()
                .map(|r| r[..r.len() - 1].iter().map(|v| v.to_bits()).collect())
                .collect::<Vec<Vec<u64>>>()
        };
        assert_eq!(rows(resumed.path()), rows(fresh.path()), "{folder}");
    }
}

/// A small IDX dataset of `n` training and `n / 4` test images of 28x28
/// (pixels and labels from `salt`) in `dir`.
fn write_dataset(dir: &Path, n: u32, salt: u32) {
    let idx = |dims: &[u32], payload: Vec<u8>| {
        let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
        for d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend(payload);
        bytes
    };
    let value =
        |i: u32| ((i.wrapping_mul(2_654_435_761) >> 24) as u8).wrapping_add(37 * salt as u8);
    for (prefix, count) in [("train", n), ("t10k", n / 4)] {
        let pixels = (0..count * 784).map(value).collect();
        let labels = (0..count).map(|i| value(i) % 10).collect();
        let images = idx(&[count, 28, 28], pixels);
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        let labels = idx(&[count], labels);
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
}

/// b2 fine-tunes b1's stack only when b1 ran on the same dataset.
#[test]
fn b2_refuses_a_stack_pretrained_on_other_data() {
    let out = tempfile::tempdir().unwrap();
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_dataset(first.path(), 256, 1);
    write_dataset(second.path(), 256, 2);
    let opts = |data: &Path| {
        let mut o = Options::new(data, out.path());
        o.epochs = Some(1);
        o.batch_size = Some(32);
        o.progress = false;
        o
    };
    run(Experiment::B1, &opts(first.path())).unwrap();
    let msg = run(Experiment::B2, &opts(second.path()))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("was trained on another dataset"), "{msg}");
    run(Experiment::B2, &opts(first.path())).unwrap();
}

/// Every file under `root` with the extension `ext`, relative to it, sorted.
fn files_with(root: &Path, ext: &str) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, ext, out);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, ext, &mut out);
    out.sort();
    out
}

/// `run all` with two stages at once on one thread each gives exactly the
/// numbers and figures of the stages one after the other on one thread: a
/// stage's results depend on its own thread count, not on what trains
/// beside it.
#[test]
fn stages_at_once_give_the_numbers_of_stages_in_turn() {
    let (turns, at_once) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut opts = options(turns.path(), 600, 1);
    opts.test_size = Some(200);
    opts.threads = 1;
    opts.jobs = 1;
    let in_turn = run(Experiment::All, &opts).unwrap();
    opts.out_dir = at_once.path().to_path_buf();
    opts.threads = 2;
    opts.jobs = 2;
    let together = run(Experiment::All, &opts).unwrap();
    let stages =
        |o: &[vcortex::experiments::StageOutcome]| o.iter().map(|s| s.stage).collect::<Vec<_>>();
    assert_eq!(stages(&in_turn), Experiment::STUDY);
    assert_eq!(stages(&together), Experiment::STUDY);
    let csvs = files_with(turns.path(), "csv");
    assert_eq!(csvs.len(), 21, "{csvs:?}");
    assert_eq!(csvs, files_with(at_once.path(), "csv"));
    for csv in &csvs {
        let dir = csv.parent().unwrap();
        let (header, a) = read_csv(&turns.path().join(dir));
        let (_, b) = read_csv(&at_once.path().join(dir));
        let seconds = header.iter().position(|h| h == "seconds").unwrap();
        let numbers = |rows: &[Vec<f64>]| -> Vec<Vec<u64>> {
            rows.iter()
                .map(|r| {
                    r.iter()
                        .enumerate()
                        .filter(|&(i, _)| i != seconds)
                        .map(|(_, x)| x.to_bits())
                        .collect()
                })
                .collect()
        };
        assert_eq!(numbers(&a), numbers(&b), "{}", csv.display());
    }
    let pngs = files_with(turns.path(), "png");
    assert_eq!(pngs, files_with(at_once.path(), "png"));
    for png in &pngs {
        let same = std::fs::read(turns.path().join(png)).unwrap()
            == std::fs::read(at_once.path().join(png)).unwrap();
        assert!(same, "{} differs", png.display());
    }
    let study: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(at_once.path().join("study.json")).unwrap())
            .unwrap();
    assert_eq!(
        (study["jobs"].as_u64(), study["threads_per_stage"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(study["stages"][4]["command"], "vcortex --threads 1 run b1");
    assert_eq!(summary(&at_once.path().join("b3/finetune"))["threads"], 1);
}

/// Every stage diverging: the first two (b1 and b3, at once) fail, no other
/// starts, and the study returns the first error, named by its stage (the
/// runner's rules on their own: `study.rs`'s unit tests).
#[test]
fn a_failed_stage_stops_the_study_from_starting_more() {
    let out = tempfile::tempdir().unwrap();
    let mut opts = options(out.path(), 600, 1);
    opts.test_size = Some(200);
    opts.jobs = 2;
    // Diverges in the first batches of every stage (decay 0: the bound on
    // lr x decay does not refuse it first).
    opts.lr = Some(1e30);
    opts.decay = Some(0.0);
    let err = run(Experiment::All, &opts).unwrap_err().to_string();
    assert!(
        (err.starts_with("stage b1: ") || err.starts_with("stage b3: "))
            && err.contains("training diverged"),
        "{err}"
    );
    // b1 and b3 lead the start order; nothing started after them.
    for later in ["a1", "a2-momentum-0.1", "a3", "a-subset", "b2", "b-subset"] {
        assert!(!out.path().join(later).exists(), "{later} started");
    }
    assert!(out.path().join("b1/layer1").is_dir() && out.path().join("b3/layer1").is_dir());
}
