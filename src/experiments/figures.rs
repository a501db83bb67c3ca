//! Turning metrics and parameters into the study's figures (PNG), through
//! [`crate::plot`].

use std::path::Path;

use crate::plot::{
    image_grid, image_rows, line_chart_panels, Colormap, ImageGrid, ImageRows, LineChart,
    Normalise, Series, Tile, TileRow,
};
use crate::train::EpochMetrics;

use super::ExpError;

fn series(
    label: &str,
    metrics: &[EpochMetrics],
    f: impl Fn(&EpochMetrics) -> Option<f64>,
) -> Series {
    Series {
        label: label.to_string(),
        points: metrics
            .iter()
            .filter_map(|m| f(m).map(|y| (m.epoch as f64, y)))
            .collect(),
    }
}

/// One run's learning curves: test accuracy, and training and test cost.
pub fn learning_curves(path: &Path, title: &str, metrics: &[EpochMetrics]) -> Result<(), ExpError> {
    let accuracy = LineChart {
        title: "Test accuracy".into(),
        x_label: "epoch".into(),
        y_label: "accuracy (fraction correct)".into(),
        series: vec![series("test accuracy", metrics, |m| m.test_accuracy)],
        ..Default::default()
    };
    let cost = LineChart {
        title: "Cost".into(),
        x_label: "epoch".into(),
        y_label: "cross-entropy (nats per image)".into(),
        series: vec![
            series("training cost", metrics, |m| Some(m.train_cost)),
            series("test cost", metrics, |m| m.test_cost),
        ],
        log_y: true,
        ..Default::default()
    };
    line_chart_panels(path, Some(title), &[accuracy, cost])?;
    Ok(())
}

/// Several runs overlaid: test accuracy and test cost against epochs.
pub fn compare_runs(
    path: &Path,
    title: &str,
    runs: &[(String, Vec<EpochMetrics>)],
) -> Result<(), ExpError> {
    let accuracy = LineChart {
        title: "Test accuracy".into(),
        x_label: "epoch".into(),
        y_label: "accuracy (fraction correct)".into(),
        series: runs
            .iter()
            .map(|(l, m)| series(l, m, |m| m.test_accuracy))
            .collect(),
        ..Default::default()
    };
    let cost = LineChart {
        title: "Test error (cross-entropy)".into(),
        x_label: "epoch".into(),
        y_label: "cross-entropy (nats per image)".into(),
        series: runs
            .iter()
            .map(|(l, m)| series(l, m, |m| m.test_cost))
            .collect(),
        log_y: true,
        ..Default::default()
    };
    line_chart_panels(path, Some(title), &[accuracy, cost])?;
    Ok(())
}

/// Training cost of each DAE layer against epochs (one panel).
pub fn layer_costs(
    path: &Path,
    title: &str,
    layers: &[(String, Vec<EpochMetrics>)],
) -> Result<(), ExpError> {
    let train = LineChart {
        title: "Training cost".into(),
        x_label: "epoch".into(),
        y_label: "cross-entropy (nats per image)".into(),
        series: layers
            .iter()
            .map(|(l, m)| series(l, m, |m| Some(m.train_cost)))
            .collect(),
        ..Default::default()
    };
    let test = LineChart {
        title: "Test reconstruction cost (clean input)".into(),
        x_label: "epoch".into(),
        y_label: "cross-entropy (nats per image)".into(),
        series: layers
            .iter()
            .map(|(l, m)| series(l, m, |m| m.test_cost))
            .collect(),
        ..Default::default()
    };
    line_chart_panels(path, Some(title), &[train, test])?;
    Ok(())
}

/// Tiles of `count` rows of `data` (each `width * height` values).
pub fn tiles(
    data: &[f32],
    width: usize,
    height: usize,
    count: usize,
    label: impl Fn(usize) -> Option<String>,
) -> Vec<Tile> {
    data.chunks_exact(width * height)
        .take(count)
        .enumerate()
        .map(|(i, px)| Tile {
            label: label(i),
            width,
            height,
            pixels: px.to_vec(),
        })
        .collect()
}

/// A grid of tiles.
pub fn grid(
    path: &Path,
    title: &str,
    tiles: Vec<Tile>,
    columns: usize,
    scale: u32,
    normalise: Normalise,
    colormap: Colormap,
) -> Result<(), ExpError> {
    image_grid(
        path,
        &ImageGrid {
            title: title.to_string(),
            tiles,
            columns,
            scale,
            normalise,
            colormap,
        },
    )?;
    Ok(())
}

/// Labelled rows of tiles.
pub fn rows(
    path: &Path,
    title: &str,
    rows: Vec<(String, Vec<Tile>)>,
    tile_px: u32,
    normalise: Normalise,
) -> Result<(), ExpError> {
    image_rows(
        path,
        &ImageRows {
            title: title.to_string(),
            rows: rows
                .into_iter()
                .map(|(label, tiles)| TileRow { label, tiles })
                .collect(),
            tile_px,
            normalise,
            colormap: Colormap::Gray,
        },
    )?;
    Ok(())
}

/// The side of the smallest square holding `n` values, for showing a hidden
/// layer's activations as an image.
pub fn square_side(n: usize) -> usize {
    (n as f64).sqrt().ceil() as usize
}

/// Each `n`-value row of `data` as a square tile of side [`square_side`]`(n)`, padded with zeros.
pub fn square_tiles(data: &[f32], n: usize) -> Vec<Tile> {
    let side = square_side(n);
    data.chunks_exact(n)
        .map(|a| {
            let mut px = a.to_vec();
            px.resize(side * side, 0.0);
            Tile::new(side, side, px)
        })
        .collect()
}

/// Parses a `metrics.csv` written by the engine back into metrics.
pub fn read_metrics(dir: &Path) -> Result<Vec<EpochMetrics>, ExpError> {
    let path = dir.join("metrics.csv");
    let text = std::fs::read_to_string(&path).map_err(super::io_err(&path))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (epoch, train, test, acc, secs) = (
        col("epoch"),
        col("train_cost"),
        col("test_cost"),
        col("test_accuracy"),
        col("seconds"),
    );
    let mut out = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        let num = |c: Option<usize>| {
            c.and_then(|i| cells.get(i))
                .and_then(|s| s.parse::<f64>().ok())
        };
        let Some(e) = num(epoch) else {
            return Err(ExpError::Config(format!(
                "{}: bad line {line:?}",
                path.display()
            )));
        };
        out.push(EpochMetrics {
            epoch: e as usize,
            train_cost: num(train).unwrap_or(f64::NAN),
            test_cost: num(test),
            test_accuracy: num(acc),
            seconds: num(secs).unwrap_or(0.0),
        });
    }
    Ok(out)
}
