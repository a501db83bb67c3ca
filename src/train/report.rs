//! metrics.csv and summary.json of a run folder.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::{EpochMetrics, TrainError};

fn opt(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn csv_line(layer: Option<usize>, m: &EpochMetrics) -> String {
    match layer {
        Some(l) => format!(
            "{l},{},{},{},{:.3}\n",
            m.epoch,
            m.train_cost,
            opt(m.test_cost),
            m.seconds
        ),
        None => format!(
            "{},{},{},{},{:.3}\n",
            m.epoch,
            m.train_cost,
            opt(m.test_cost),
            opt(m.test_accuracy),
            m.seconds
        ),
    }
}

/// Rewrites metrics.csv with a header and `metrics`, atomically (at the
/// start and after every epoch: a few hundred short lines at most), so a
/// full disk or a kill never leaves half a line for a reader to trip on.
pub fn write_csv(
    dir: &Path,
    layer: Option<usize>,
    metrics: &[EpochMetrics],
) -> Result<(), TrainError> {
    let path = dir.join("metrics.csv");
    let mut text = String::from(match layer {
        Some(_) => "layer,epoch,train_cost,test_cost,seconds\n",
        None => "epoch,train_cost,test_cost,test_accuracy,seconds\n",
    });
    for m in metrics {
        text.push_str(&csv_line(layer, m));
    }
    crate::jsonfile::write_text_atomic(&path, &text).map_err(|(path, e)| TrainError::io(&path, e))
}

/// The engine's summary keys for `metrics`.
pub fn summary_fields(metrics: &[EpochMetrics]) -> Map<String, Value> {
    let last = metrics.last();
    let best = metrics
        .iter()
        .filter_map(|m| m.test_accuracy.map(|a| (a, m.epoch)))
        .fold(None, |best: Option<(f64, usize)>, (a, e)| match best {
            Some((b, _)) if b >= a => best,
            _ => Some((a, e)),
        });
    let first_097 = super::first_epoch_reaching(metrics, 0.97);
    let mut s = Map::new();
    s.insert("epochs_completed".into(), json!(metrics.len()));
    s.insert(
        "final_test_accuracy".into(),
        json!(last.and_then(|m| m.test_accuracy)),
    );
    s.insert("best_test_accuracy".into(), json!(best.map(|b| b.0)));
    s.insert("best_epoch".into(), json!(best.map(|b| b.1)));
    s.insert("first_epoch_reaching_0_97".into(), json!(first_097));
    s.insert("final_train_cost".into(), json!(last.map(|m| m.train_cost)));
    s.insert(
        "final_test_cost".into(),
        json!(last.and_then(|m| m.test_cost)),
    );
    s.insert(
        "wall_seconds".into(),
        // A fold from +0: an empty f64 sum is -0.0, which would print so.
        json!(metrics.iter().fold(0.0, |total, m| total + m.seconds)),
    );
    s
}

/// Rewrites summary.json: the existing file's keys are kept unless `fields`
/// sets them.
pub fn write_summary(dir: &Path, fields: Map<String, Value>) -> Result<(), TrainError> {
    crate::jsonfile::merge_object(&dir.join("summary.json"), fields)
        .map(|_| ())
        .map_err(|(path, e)| TrainError::io(&path, e))
}
