//! The bench machinery on a tiny subset: every row and profile line is there
//! with positive, finite times, the FLOP formulas match the issue's limits,
//! and the CLI prints the table and writes the JSON. No timing assertions.

use std::path::{Path, PathBuf};
use std::process::Command;

use vcortex::bench::{
    cnn_macs, dae_train_macs, mlp_train_macs, profile, render, run, BenchOptions, Work,
};
use vcortex::data::Dataset;
use vcortex::model::CnnShape;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

#[test]
fn useful_work_matches_the_issue_limits() {
    // The issue's limits are these counts over 468 x 128 images at 523 GFLOP/s.
    assert_eq!(cnn_macs(&CnnShape::STUDY), (775_000, 1_839_000));
    assert_eq!(mlp_train_macs(&[784, 900, 625, 400, 10]), 3_860_700);
    assert_eq!(dae_train_macs(&[784, 900, 625, 400], 1), 5 * 784 * 900);
    // Layer 2: up and down through both layers, back through decoder 1.
    let (m1, m2) = (784 * 900, 900 * 625);
    assert_eq!(
        dae_train_macs(&[784, 900, 625, 400], 2),
        2 * (m1 + m2) + m1 + 3 * m2
    );
    let limit = |macs: u64| 2.0 * macs as f64 * 59904.0 / 523e9;
    assert!((limit(1_839_000) - 0.42).abs() < 0.01);
    assert!((limit(3_860_700) - 0.89).abs() < 0.01);
    assert!((limit(5 * 784 * 900) - 0.81).abs() < 0.01);
}

#[test]
fn every_row_and_profile_line_is_filled() {
    let dataset = Dataset::load(&data_dir()).expect("shipped MNIST loads");
    let opts = BenchOptions {
        threads: 2,
        epochs: 2,
        train_size: Some(256),
        test_size: Some(200),
        ..BenchOptions::default()
    };
    let report = run(dataset.train(), dataset.test(), &opts).expect("bench runs");
    assert!(
        !profile::enabled(),
        "the bench switches the hooks off again"
    );
    assert_eq!(report.threads, 2);
    assert!(report.peak_gflops > 0.0);
    let works: Vec<Work> = report.rows.iter().map(|r| r.work).collect();
    assert_eq!(works, Work::ALL.to_vec());
    for row in &report.rows {
        let name = row.work.name();
        assert_eq!(row.runs.len(), 2, "{name}");
        assert!(row.runs.iter().all(|&s| s > 0.0 && s.is_finite()), "{name}");
        assert!(row.seconds > 0.0 && row.gflops > 0.0 && row.peak_fraction > 0.0);
        let expect_images = if row.work == Work::CnnInfer { 200 } else { 256 };
        assert_eq!(row.images, expect_images, "{name}");
        // The target's share of the issue machine's peak counts the full
        // data (59904 training / 10000 test images) whatever the subset:
        // e.g. the CNN's 2 x 1_839_000 MACs x 59904 in 0.8 s of 523 GFLOP/s.
        let want_fraction = match row.work {
            Work::CnnSgd => 2.0 * 1_839_000.0 * 59904.0 / 0.80 / 523e9,
            Work::CnnRmsprop => 2.0 * 1_839_000.0 * 59904.0 / 0.85 / 523e9,
            Work::Dae1 => 2.0 * (5.0 * 784.0 * 900.0) * 59904.0 / 1.00 / 523e9,
            Work::Mlp => 2.0 * 3_860_700.0 * 59904.0 / 1.10 / 523e9,
            Work::CnnInfer => 2.0 * 775_000.0 * 10000.0 / 0.06 / 523e9,
            Work::Dae2 | Work::Dae3 => unreachable!("not in the default list"),
        };
        let fraction = row
            .target_peak_fraction
            .expect("the issue's items have targets");
        assert!(
            (fraction - want_fraction).abs() < 1e-9,
            "{name}: {fraction} vs {want_fraction}"
        );
        assert!(row.pytorch_s.is_some() && row.target_s.is_some(), "{name}");
        let layers: Vec<&str> = row.profile.iter().map(|p| p.layer.as_str()).collect();
        let want: &[&str] = match row.work {
            Work::CnnSgd | Work::CnnRmsprop => &[
                "input", "conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "loss", "update",
            ],
            Work::Mlp => &["input", "fc1", "fc2", "fc3", "fc4", "loss", "dW+update"],
            Work::Dae1 => &[
                "input",
                "noise",
                "dae1.enc",
                "dae1.dec",
                "loss",
                "dW+update",
            ],
            // Inference runs each conv fused with its pooling (one line each).
            Work::CnnInfer => &["conv1", "conv2", "fc1", "fc2", "loss"],
            Work::Dae2 | Work::Dae3 => unreachable!("not in the default list"),
        };
        for w in want {
            let p = row.profile.iter().find(|p| p.layer == *w);
            let p = p.unwrap_or_else(|| panic!("{name}: no profile line {w} in {layers:?}"));
            assert!(p.forward_s + p.backward_s > 0.0, "{name} {w}");
        }
        assert_eq!(layers.last(), Some(&"other"));
        for p in &row.profile {
            assert!(p.forward_s >= 0.0 && p.backward_s >= 0.0 && p.share >= 0.0);
        }
        // The derived columns follow from the timings and the FLOP counts.
        let mut sorted = row.runs.clone();
        sorted.sort_by(f64::total_cmp);
        let median = (sorted[0] + sorted[1]) / 2.0;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        // Two runs (checked above): the median is their mean.
        assert!(
            close(row.seconds, median),
            "{name}: seconds {} vs runs {:?}",
            row.seconds,
            row.runs
        );
        let macs = match row.work {
            Work::CnnSgd | Work::CnnRmsprop => cnn_macs(&CnnShape::STUDY).1,
            Work::CnnInfer => cnn_macs(&CnnShape::STUDY).0,
            Work::Mlp => mlp_train_macs(&[784, 900, 625, 400, 10]),
            Work::Dae1 => dae_train_macs(&[784, 900, 625, 400], 1),
            Work::Dae2 | Work::Dae3 => unreachable!("not in the default list"),
        };
        assert!(
            close(row.gflop, 2.0 * macs as f64 * row.images as f64 / 1e9),
            "{name}"
        );
        assert!(close(row.gflops, row.gflop / row.seconds), "{name}");
        assert!(
            close(row.images_per_s, row.images as f64 / row.seconds),
            "{name}"
        );
        assert!(
            close(row.peak_fraction, row.gflops / report.peak_gflops),
            "{name}"
        );
        let shares: f64 = row.profile.iter().map(|p| p.share).sum();
        assert!(
            (shares - 1.0).abs() < 1e-6,
            "{name}: shares sum to {shares}"
        );
        if row.work != Work::CnnInfer {
            for w in ["conv1", "fc1", "dae1.enc"] {
                if let Some(p) = row.profile.iter().find(|p| p.layer == w) {
                    assert!(p.backward_s > 0.0, "{name} {w} backward");
                }
            }
        }
    }
    let text = render(&report);
    for w in Work::ALL {
        assert!(text.contains(w.name()), "{text}");
    }
    // A disturbed all-threads peak is flagged rather than divided by
    // silently; a sound one is not.
    let mut report = report;
    report.threads = 2;
    report.peak_gflops = 1.9 * report.peak_gflops_per_thread;
    assert!(!render(&report).contains("warning"), "{}", render(&report));
    report.peak_gflops = 1.05 * report.peak_gflops_per_thread;
    assert!(render(&report).contains("warning: the peak on 2 threads measured only 1.05x"));
}

/// The stack's upper layers, asked for by name (not in the default list):
/// each runs the whole image-space pass through the layers below (their
/// profile lines), counts that work, and has no issue figures (null in the
/// JSON, "-" in the table).
#[test]
fn upper_dae_layers_run_through_the_layers_below() {
    let dataset = Dataset::load(&data_dir()).expect("shipped MNIST loads");
    assert!(!Work::ALL.contains(&Work::Dae2) && !Work::ALL.contains(&Work::Dae3));
    let opts = BenchOptions {
        threads: 2,
        train_size: Some(256),
        test_size: Some(64),
        only: vec![Work::Dae2, Work::Dae3],
        ..BenchOptions::default()
    };
    let report = run(dataset.train(), dataset.test(), &opts).expect("bench runs");
    for (row, layer) in report.rows.iter().zip([2usize, 3]) {
        let name = row.work.name();
        assert_eq!(name, format!("dae{layer}"));
        assert!(row.seconds > 0.0 && row.gflops > 0.0, "{name}");
        let macs = dae_train_macs(&[784, 900, 625, 400], layer);
        assert!(
            (row.gflop - 2.0 * macs as f64 * 256.0 / 1e9).abs() < 1e-9,
            "{name}"
        );
        assert_eq!(
            (row.pytorch_s, row.target_s, row.target_peak_fraction),
            (None, None, None)
        );
        for k in 1..=layer {
            for part in ["enc", "dec"] {
                let line = format!("dae{k}.{part}");
                let p = row.profile.iter().find(|p| p.layer == line);
                let p = p.unwrap_or_else(|| panic!("{name}: no profile line {line}"));
                assert!(p.forward_s > 0.0, "{name} {line}");
            }
        }
        let update = row.profile.iter().find(|p| p.layer == "dW+update");
        assert!(update.is_some_and(|p| p.forward_s > 0.0), "{name}");
    }
    let text = render(&report);
    let dae2 = text
        .lines()
        .find(|l| l.starts_with("dae2 "))
        .expect("a dae2 row");
    assert!(dae2.trim_end().ends_with('-'), "{dae2}");
}

#[test]
fn bad_sizes_are_typed_errors() {
    let dataset = Dataset::load(&data_dir()).expect("shipped MNIST loads");
    let opts = BenchOptions {
        train_size: Some(70_000),
        ..BenchOptions::default()
    };
    let err = run(dataset.train(), dataset.test(), &opts).unwrap_err();
    assert!(err.to_string().contains("70000"), "{err}");
    let opts = BenchOptions {
        train_size: Some(100),
        only: vec![Work::CnnSgd],
        ..BenchOptions::default()
    };
    let err = run(dataset.train(), dataset.test(), &opts).unwrap_err();
    assert!(err.to_string().contains("batch size"), "{err}");
    // Every epoch's time is kept: an unbounded count would fill memory.
    for (epochs, needle) in [(0, "at least 1"), (1_000_000_000, "at most 10000")] {
        let opts = BenchOptions {
            epochs,
            only: vec![Work::CnnInfer],
            ..BenchOptions::default()
        };
        let err = run(dataset.train(), dataset.test(), &opts).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[test]
fn cli_prints_the_table_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_vcortex"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "--threads",
            "1",
            "bench",
            "--train-size",
            "128",
            "--test-size",
            "64",
        ])
        .args(["--only", "cnn-sgd,cnn-infer", "--json"])
        .arg(&json)
        .output()
        .expect("runs the binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 threads") && stdout.contains("cnn-infer"),
        "{stdout}"
    );
    assert!(stdout.contains("profile of cnn-sgd"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["work"], "cnn-sgd");
    assert!(rows[1]["seconds"].as_f64().unwrap() > 0.0);
}
