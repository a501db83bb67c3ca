//! The plot module writes valid PNGs of the documented size and fails with a typed error naming the path.
//!
//! Set `VCORTEX_FIGURE_DIR` to a folder to keep the example figures for looking at them.

use std::path::{Path, PathBuf};

use vcortex::plot::{
    image_grid, image_grid_size, image_rows, image_rows_size, line_chart, line_chart_panels,
    line_chart_panels_size, Colormap, ImageGrid, ImageRows, LineChart, Normalise, PlotError,
    Series, Tile, TileRow, LINE_CHART_SIZE,
};

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// Output folder: `VCORTEX_FIGURE_DIR` when set (kept), else a temporary one.
fn out_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("VCORTEX_FIGURE_DIR") {
        Some(dir) => {
            std::fs::create_dir_all(&dir).unwrap();
            (None, PathBuf::from(dir))
        }
        None => {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().to_path_buf();
            (Some(tmp), path)
        }
    }
}

/// A smooth pseudo-image so the figures look like something: a ring whose radius and sign vary with `seed`.
fn blob(width: usize, height: usize, seed: usize) -> Vec<f32> {
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let radius = 0.2 + 0.05 * (seed % 5) as f32;
    let sign = if seed.is_multiple_of(2) { 1.0 } else { -1.0 };
    (0..width * height)
        .map(|i| {
            let (x, y) = ((i % width) as f32 - cx, (i / width) as f32 - cy);
            let r = (x * x + y * y).sqrt() / width as f32;
            sign * (-(r - radius).powi(2) * 60.0).exp() + 0.1 * ((i * 7 + seed) % 5) as f32 / 5.0
        })
        .collect()
}

fn accuracy_chart() -> LineChart {
    let curve = |rate: f64, top: f64| -> Vec<(f64, f64)> {
        (1..=100)
            .map(|e| (e as f64, top - (top - 0.85) * (-(e as f64) / rate).exp()))
            .collect()
    };
    LineChart {
        title: "Test accuracy, 12000/2000".into(),
        x_label: "epoch".into(),
        y_label: "test accuracy (fraction)".into(),
        series: vec![
            Series {
                label: "A1 SGD".into(),
                points: curve(20.0, 0.975),
            },
            Series {
                label: "A2 momentum 0.1".into(),
                points: curve(12.0, 0.976),
            },
            Series {
                label: "A2 momentum 0.9".into(),
                points: curve(4.0, 0.978),
            },
            Series {
                label: "A3 RMSProp".into(),
                points: curve(2.0, 0.98),
            },
        ],
        y_range: None,
        log_y: false,
    }
}

fn cost_chart(log_y: bool) -> LineChart {
    LineChart {
        title: "Training cost".into(),
        x_label: "epoch".into(),
        y_label: "cross-entropy (nats per image)".into(),
        series: vec![
            Series {
                label: "A1 SGD".into(),
                points: (1..=100)
                    .map(|e| (e as f64, 0.6 / (e as f64).sqrt()))
                    .collect(),
            },
            Series {
                label: "A3 RMSProp".into(),
                points: (1..=100).map(|e| (e as f64, 0.3 / e as f64)).collect(),
            },
        ],
        y_range: None,
        log_y,
    }
}

#[test]
fn line_chart_writes_png_of_documented_size() {
    let (_keep, dir) = out_dir();
    let path = dir.join("accuracy.png");
    line_chart(&path, &accuracy_chart()).unwrap();
    assert_eq!(png_size(&path), LINE_CHART_SIZE);

    let path = dir.join("cost_log.png");
    line_chart(&path, &cost_chart(true)).unwrap();
    assert_eq!(png_size(&path), LINE_CHART_SIZE);
}

#[test]
fn line_chart_tolerates_degenerate_data() {
    let (_keep, dir) = out_dir();
    let path = dir.join("degenerate.png");
    let chart = LineChart {
        title: "Degenerate".into(),
        series: vec![
            Series {
                label: "empty".into(),
                points: vec![],
            },
            Series {
                label: "one point".into(),
                points: vec![(1.0, 0.5)],
            },
            Series {
                label: "non-finite".into(),
                points: vec![(f64::NAN, 1.0), (2.0, f64::INFINITY)],
            },
        ],
        log_y: true,
        ..LineChart::default()
    };
    line_chart(&path, &chart).unwrap();
    assert_eq!(png_size(&path), LINE_CHART_SIZE);
}

#[test]
fn two_panels_side_by_side() {
    let (_keep, dir) = out_dir();
    let path = dir.join("panels.png");
    let title = Some("A3: CNN, RMSProp");
    line_chart_panels(&path, title, &[accuracy_chart(), cost_chart(false)]).unwrap();
    assert_eq!(png_size(&path), line_chart_panels_size(title, 2));
    assert_eq!(line_chart_panels_size(title, 2).0, 2 * LINE_CHART_SIZE.0);
}

#[test]
fn image_grids_of_filters_weights_and_reconstructions() {
    let (_keep, dir) = out_dir();
    let filters = ImageGrid {
        title: "conv1: 15 filters, 9x9".into(),
        tiles: (0..15).map(|i| Tile::new(9, 9, blob(9, 9, i))).collect(),
        columns: 5,
        scale: 8,
        normalise: Normalise::PerTile,
        colormap: Colormap::Diverging,
    };
    let weights = ImageGrid {
        title: "DAE layer 1: weights of 100 units".into(),
        tiles: (0..100)
            .map(|i| Tile::new(28, 28, blob(28, 28, i)))
            .collect(),
        columns: 10,
        scale: 2,
        normalise: Normalise::PerTile,
        colormap: Colormap::Gray,
    };
    let reconstructions = ImageGrid {
        title: "Reconstructions".into(),
        tiles: (0..16)
            .map(|i| {
                let label = if i % 2 == 0 {
                    format!("digit {} input", i / 2)
                } else {
                    "reconstruction".into()
                };
                Tile::labelled(
                    label,
                    28,
                    28,
                    blob(28, 28, i / 2)
                        .iter()
                        .map(|v| v.clamp(0.0, 1.0))
                        .collect(),
                )
            })
            .collect(),
        columns: 8,
        scale: 3,
        normalise: Normalise::Fixed(0.0, 1.0),
        colormap: Colormap::Gray,
    };
    for (name, grid) in [
        ("filters.png", filters),
        ("weights.png", weights),
        ("recon.png", reconstructions),
    ] {
        let path = dir.join(name);
        image_grid(&path, &grid).unwrap();
        assert_eq!(png_size(&path), image_grid_size(&grid).unwrap(), "{name}");
    }
}

#[test]
fn image_rows_of_feature_maps_at_four_stages() {
    let (_keep, dir) = out_dir();
    let stage = |name: &str, count: usize, side: usize| TileRow {
        label: format!("digit 7, {name}: {count} maps of {side}x{side}"),
        tiles: (0..count)
            .map(|i| Tile::new(side, side, blob(side, side, i)))
            .collect(),
    };
    let rows = ImageRows {
        title: "Feature maps".into(),
        rows: vec![
            stage("conv1", 15, 20),
            stage("pool1", 15, 10),
            stage("conv2", 20, 6),
            stage("pool2", 20, 3),
        ],
        tile_px: 40,
        normalise: Normalise::PerTile,
        colormap: Colormap::Gray,
    };
    let path = dir.join("feature_maps.png");
    image_rows(&path, &rows).unwrap();
    assert_eq!(png_size(&path), image_rows_size(&rows).unwrap());
}

#[test]
fn unwritable_path_is_an_error_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-folder").join("figure.png");
    let err = line_chart(&missing, &accuracy_chart()).unwrap_err();
    assert!(matches!(err, PlotError::Draw { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let grid = ImageGrid {
        title: String::new(),
        tiles: vec![Tile::new(2, 2, vec![0.0, 1.0, 2.0, 3.0])],
        columns: 1,
        scale: 4,
        normalise: Normalise::Global,
        colormap: Colormap::Gray,
    };
    let err = image_grid(&missing, &grid).unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    // A folder where the file should be: the write itself fails.
    let dir_as_file = tmp.path().join("taken.png");
    std::fs::create_dir(&dir_as_file).unwrap();
    let err = image_grid(&dir_as_file, &grid).unwrap_err();
    assert!(err.to_string().contains("taken.png"), "{err}");

    // The file system's own words, not the drawing library's debug text; and
    // the figure is written whole or not at all: no temporary file is left.
    let msg = err.to_string();
    assert!(
        !msg.contains("ImageError") && !msg.contains("backend"),
        "{msg}"
    );
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["taken.png"], "{names:?}");
}

#[test]
fn bad_input_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.png");
    let grid = |tiles: Vec<Tile>, columns: usize| ImageGrid {
        title: "bad".into(),
        tiles,
        columns,
        scale: 2,
        normalise: Normalise::PerTile,
        colormap: Colormap::Gray,
    };
    let wrong_len = image_grid(&path, &grid(vec![Tile::new(3, 3, vec![0.0; 8])], 1)).unwrap_err();
    assert!(matches!(wrong_len, PlotError::InvalidInput { .. }));
    assert!(wrong_len.to_string().contains("8 values"), "{wrong_len}");
    assert!(image_grid(&path, &grid(vec![], 1)).is_err());
    assert!(image_grid(&path, &grid(vec![Tile::new(1, 1, vec![0.0])], 0)).is_err());
    let not_png = image_grid(
        &tmp.path().join("figure.jpg"),
        &grid(vec![Tile::new(1, 1, vec![0.0])], 1),
    );
    assert!(not_png.unwrap_err().to_string().contains("figure.jpg"));
    assert!(!path.exists());
}
