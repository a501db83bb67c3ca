//! Figures for the run folders and the report: learning curves and image grids, drawn with plotters.
//!
//! Every function takes plain data and writes one PNG. Text is rendered with the system's sans-serif font through
//! fontconfig (Debian: `fonts-dejavu-core`); without any font the drawing fails with a [`PlotError`] instead of
//! producing a figure without labels.

use std::fmt;
use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Size in pixels of a [`line_chart`]; [`line_chart_panels`] places panels of this size side by side.
pub const LINE_CHART_SIZE: (u32, u32) = (960, 600);

const FONT: &str = "sans-serif";
const TITLE_FONT_PX: u32 = 24;
const ROW_LABEL_FONT_PX: u32 = 16;
const TILE_LABEL_FONT_PX: u32 = 13;
const MARGIN: u32 = 12;
const TILE_GAP: u32 = 6;
const BORDER: u32 = 1;
const BORDER_COLOUR: RGBColor = RGBColor(110, 110, 110);
const TEXT_COLOUR: RGBColor = RGBColor(20, 20, 20);

/// Tableau 10: distinguishable colours, also in print and for the common colour-vision deficiencies.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Why a figure could not be written. The message always names the output file.
#[derive(Debug, Clone, PartialEq)]
pub enum PlotError {
    /// The data cannot be drawn (wrong pixel count, no tiles, zero columns, ...).
    InvalidInput { path: PathBuf, message: String },
    /// Drawing or writing the PNG failed (unwritable folder, missing fonts, ...).
    Draw { path: PathBuf, message: String },
}

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlotError::InvalidInput { path, message } => {
                write!(f, "cannot draw figure {}: {message}", path.display())
            }
            PlotError::Draw { path, message } => {
                write!(f, "cannot write figure {}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for PlotError {}

fn invalid(path: &Path, message: impl Into<String>) -> PlotError {
    PlotError::InvalidInput {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn draw_error(path: &Path, message: impl fmt::Display) -> PlotError {
    let mut message = message.to_string();
    if message.to_ascii_lowercase().contains("font") {
        message.push_str(
            " (install a sans-serif font for fontconfig, e.g. Debian's fonts-dejavu-core)",
        );
    }
    PlotError::Draw {
        path: path.to_path_buf(),
        message,
    }
}

/// One curve of a [`LineChart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub label: String,
    /// (x, y) points in drawing order; non-finite points (and non-positive y on a log axis) are skipped.
    pub points: Vec<(f64, f64)>,
}

/// A chart of one or more curves sharing axes, e.g. test accuracy against epoch for several runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LineChart {
    pub title: String,
    /// Axis descriptions; include the unit, e.g. "epoch" or "cost (nats per image)".
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Fixed y range; `None` fits the data with a small margin.
    pub y_range: Option<(f64, f64)>,
    /// Logarithmic y axis (for costs spanning decades).
    pub log_y: bool,
}

/// Draws `chart` into a PNG of [`LINE_CHART_SIZE`] at `path`.
pub fn line_chart(path: &Path, chart: &LineChart) -> Result<(), PlotError> {
    check_png_path(path)?;
    render_png(path, LINE_CHART_SIZE, |root| {
        draw_line_chart(root, chart).map_err(|e| draw_error(path, e))
    })
}

/// Draws several charts side by side (e.g. test accuracy and training cost) under one optional title, each panel
/// [`LINE_CHART_SIZE`] (the title adds a band on top).
pub fn line_chart_panels(
    path: &Path,
    title: Option<&str>,
    panels: &[LineChart],
) -> Result<(), PlotError> {
    check_png_path(path)?;
    if panels.is_empty() {
        return Err(invalid(path, "no panels to draw"));
    }
    let size = line_chart_panels_size(title, panels.len());
    render_png(path, size, |root| {
        let body = match title {
            Some(title) => root
                .titled(
                    title,
                    (FONT, TITLE_FONT_PX + 4).into_font().color(&TEXT_COLOUR),
                )
                .map_err(|e| draw_error(path, e))?,
            None => root.clone(),
        };
        for (area, chart) in body.split_evenly((1, panels.len())).iter().zip(panels) {
            draw_line_chart(area, chart).map_err(|e| draw_error(path, e))?;
        }
        Ok(())
    })
}

/// Draws with `draw` on a white canvas of `size` in memory, then writes it
/// to `path` as a PNG, atomically (`jsonfile::write_bytes_atomic`): a
/// failed write (a full disk) leaves no truncated figure, and its error is
/// the file system's own, not the drawing library's debug text.
fn render_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), PlotError>,
) -> Result<(), PlotError> {
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_error(path, e))?;
        draw(&root)?;
        root.present().map_err(|e| draw_error(path, e))?;
    }
    let canvas = image::ImageBuffer::<image::Rgb<u8>, &[u8]>::from_raw(size.0, size.1, &pixels)
        .ok_or_else(|| draw_error(path, "internal error: the canvas has the wrong size"))?;
    // The encoder and settings plotters' own `present` uses for a file, so
    // the bytes are the same as before.
    let mut png = std::io::Cursor::new(Vec::new());
    canvas
        .write_to(&mut png, image::ImageOutputFormat::Png)
        .map_err(|e| draw_error(path, e))?;
    crate::jsonfile::write_bytes_atomic(path, png.get_ref()).map_err(|(_, e)| draw_error(path, e))
}

/// Pixel size of the PNG that [`line_chart_panels`] writes.
pub fn line_chart_panels_size(title: Option<&str>, panel_count: usize) -> (u32, u32) {
    let title_band = if title.is_some() {
        TITLE_FONT_PX + 20
    } else {
        0
    };
    (
        LINE_CHART_SIZE.0 * panel_count.max(1) as u32,
        LINE_CHART_SIZE.1 + title_band,
    )
}

/// The points of `series` that can be drawn: finite, and y > 0 on a log axis.
fn drawable(series: &Series, log_y: bool) -> impl Iterator<Item = (f64, f64)> + '_ {
    series
        .points
        .iter()
        .copied()
        .filter(move |&(x, y)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0))
}

/// Every series' drawable points.
fn drawable_points(chart: &LineChart) -> impl Iterator<Item = (f64, f64)> + '_ {
    chart.series.iter().flat_map(|s| drawable(s, chart.log_y))
}

/// A non-empty range containing `lo..hi`, padded by `pad` of its span.
fn padded(lo: f64, hi: f64, pad: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * lo.abs().max(1.0) {
        let half = (lo.abs() * 0.05).max(0.5);
        return (lo - half, hi + half);
    }
    let span = hi - lo;
    (lo - pad * span, hi + pad * span)
}

fn draw_line_chart(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    chart: &LineChart,
) -> Result<(), String> {
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in drawable_points(chart) {
        x_lo = x_lo.min(x);
        x_hi = x_hi.max(x);
        y_lo = y_lo.min(y);
        y_hi = y_hi.max(y);
    }
    let (x_lo, x_hi) = if x_lo <= x_hi {
        padded(x_lo, x_hi, 0.0)
    } else {
        (0.0, 1.0)
    };
    let (y_lo, y_hi) = match chart.y_range {
        Some((lo, hi))
            if lo.is_finite() && hi.is_finite() && lo < hi && (!chart.log_y || lo > 0.0) =>
        {
            (lo, hi)
        }
        _ if y_lo > y_hi => {
            if chart.log_y {
                (0.1, 10.0)
            } else {
                (0.0, 1.0)
            }
        }
        _ if chart.log_y => padded_log(y_lo, y_hi),
        _ => padded(y_lo, y_hi, 0.05),
    };
    let (y_hi, legend_at) = legend_room(chart, (x_lo, x_hi), (y_lo, y_hi));

    let mut builder = ChartBuilder::on(area);
    builder
        .caption(
            &chart.title,
            (FONT, TITLE_FONT_PX).into_font().color(&TEXT_COLOUR),
        )
        .margin(18)
        .x_label_area_size(58)
        .y_label_area_size(86);
    if chart.log_y {
        // Our own ticks: plotters labels only powers of ten, none at all on an
        // axis that holds no power of ten.
        let (labelled, grid) = log_axis_ticks(y_lo, y_hi);
        let y_axis = (y_lo..y_hi)
            .log_scale()
            .with_key_points(labelled)
            .with_light_points(grid);
        let mut ctx = builder
            .build_cartesian_2d(x_lo..x_hi, y_axis)
            .map_err(|e| e.to_string())?;
        draw_mesh_and_series(&mut ctx, chart, legend_at)
    } else {
        let mut ctx = builder
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .map_err(|e| e.to_string())?;
        draw_mesh_and_series(&mut ctx, chart, legend_at)
    }
}

fn draw_mesh_and_series<'a, Y>(
    ctx: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    chart: &LineChart,
    legend_at: SeriesLabelPosition,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    // Epochs (any x that is always a whole number) are labelled only at whole
    // numbers: a 2-epoch run would otherwise read 1.2, 1.4, ...
    let whole_x = drawable_points(chart).all(|(x, _)| x.fract() == 0.0);
    let x_text = |v: &f64| {
        if whole_x && v.fract() != 0.0 {
            String::new()
        } else {
            tick_label(*v)
        }
    };
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .axis_desc_style((FONT, 18).into_font().color(&TEXT_COLOUR))
        .label_style((FONT, 15).into_font().color(&TEXT_COLOUR))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .x_labels(10)
        .y_labels(10)
        .x_label_formatter(&x_text)
        .y_label_formatter(&|v| tick_label(*v))
        .draw()
        .map_err(|e| e.to_string())?;
    let mut any_labelled = false;
    for (index, series) in chart.series.iter().enumerate() {
        let colour = PALETTE[index % PALETTE.len()];
        let points: Vec<(f64, f64)> = drawable(series, chart.log_y).collect();
        // Short series (a few epochs) get point markers, so single points and sparse data stay visible.
        let markers = if points.len() <= 30 {
            points.clone()
        } else {
            Vec::new()
        };
        ctx.draw_series(
            markers
                .into_iter()
                .map(|p| Circle::new(p, 3, colour.filled())),
        )
        .map_err(|e| e.to_string())?;
        let drawn = ctx
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        if !series.label.is_empty() {
            any_labelled = true;
            drawn.label(series.label.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
            });
        }
    }
    if any_labelled {
        ctx.configure_series_labels()
            .position(legend_at)
            .margin(14)
            .label_font((FONT, 16).into_font().color(&TEXT_COLOUR))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A log axis around `lo..=hi` (both > 0): 5% of the data's span (in log
/// space) added on each side, and at least a factor of 1.5 across, so that a
/// flat curve does not fill the panel with noise.
fn padded_log(lo: f64, hi: f64) -> (f64, f64) {
    let (ln_lo, ln_hi) = (lo.ln(), hi.ln());
    let half = (ln_hi - ln_lo).max(1.5f64.ln()) * 0.55;
    let mid = 0.5 * (ln_lo + ln_hi);
    // Kept finite and above zero (data near the ends of f64 would pad to 0 or inf).
    (
        (mid - half).exp().max(f64::MIN_POSITIVE),
        (mid + half).exp().min(f64::MAX),
    )
}

/// Fewest labelled ticks a log axis gets, while a finer ladder can give them.
const MIN_LOG_TICKS: usize = 4;
/// Most labelled ticks on a log axis (more decades than this: every other).
const MAX_LOG_TICKS: usize = 12;

/// Ticks of a log axis over `lo..=hi` (0 < lo < hi): the labelled ones and
/// the grid lines between them. Labels go at the first of these ladders that
/// gives [`MIN_LOG_TICKS`]: powers of ten, then 1-2-5, then 1..9 per decade;
/// an axis narrower than that (costs from 54 to 70) gets evenly spaced round
/// values instead. Grid lines go at 1..9 per decade.
fn log_axis_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    // Powers of ten that f64 holds: an axis given down to 0 or up to inf
    // must not make the ladder step through every i32.
    const DECADES: (i32, i32) = (f64::MIN_10_EXP - 1, f64::MAX_10_EXP);
    let ladder = |mantissas: &[f64]| -> Vec<f64> {
        let first = (lo.log10().floor() as i32).clamp(DECADES.0, DECADES.1);
        let last = (hi.log10().ceil() as i32).clamp(DECADES.0, DECADES.1);
        (first..=last)
            .flat_map(|e| mantissas.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|&v| v >= lo && v <= hi)
            .collect()
    };
    const EVERY_DIGIT: [f64; 9] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    let grid = ladder(&EVERY_DIGIT);
    for mantissas in [&[1.0][..], &[1.0, 2.0, 5.0], &EVERY_DIGIT] {
        let ticks = ladder(mantissas);
        if ticks.len() >= MIN_LOG_TICKS {
            let every = ticks.len().div_ceil(MAX_LOG_TICKS);
            return (ticks.into_iter().step_by(every).collect(), grid);
        }
    }
    (linear_ticks(lo, hi), grid)
}

/// Round values evenly spaced over `lo..=hi` (lo < hi): the largest step of
/// 1, 2 or 5 times a power of ten that gives at least four ticks (so at most
/// eleven: the next larger step, at most 2.5 times this one, gave three).
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    // NaN ends or an empty range: one tick, rather than a division by zero.
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    let top = 10f64.powf((hi - lo).log10().ceil());
    let ticks = |step: f64| {
        let (first, last) = ((lo / step).ceil() as i64, (hi / step).floor() as i64);
        // Multiplying the index (not adding steps) keeps 0.3 from reading 0.30000000000000004.
        (first..=last).map(move |i| i as f64 * step)
    };
    // From `top` (one tick at most) down to top / 50, which gives at least five.
    let steps = [1.0, 0.5, 0.2, 0.1, 0.05, 0.02].map(|f| f * top);
    let step = steps
        .into_iter()
        .find(|&step| ticks(step).count() >= 4)
        .unwrap_or(steps[steps.len() - 1]);
    ticks(step).collect()
}

/// Axis tick text without float noise: "10" rather than "10.0", "0.98" rather than "0.9800000000000001".
fn tick_label(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e6 || v.abs() < 1e-4) {
        // As many digits as the value has (up to six): ticks 1.05e-6 and 1.1e-6 must not both read 1.1e-6.
        let text = format!("{v:.5e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        return format!("{mantissa}e{exponent}");
    }
    let text = format!("{v:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// The top of the y axis and the legend's corner. When a line crosses every corner, an automatic y axis is raised
/// so that the lines keep below the upper corners' boxes, and the legend goes there.
fn legend_room(
    chart: &LineChart,
    x: (f64, f64),
    (y_lo, y_hi): (f64, f64),
) -> (f64, SeriesLabelPosition) {
    let (corner, crossings) = legend_position(chart, x, (y_lo, y_hi));
    let has_legend = chart.series.iter().any(|s| !s.label.is_empty());
    if !has_legend || crossings == 0 || chart.y_range.is_some() {
        return (y_hi, corner);
    }
    let stretch = 1.0 / LEGEND_BOX_BOTTOM;
    let y_hi = if chart.log_y {
        y_lo * (y_hi / y_lo).powf(stretch)
    } else {
        y_lo + (y_hi - y_lo) * stretch
    };
    (y_hi, legend_position(chart, x, (y_lo, y_hi)).0)
}

/// Where an upper corner's legend box starts, as a fraction of the plot's height from its bottom (the lower
/// corners' boxes end at `1 - LEGEND_BOX_BOTTOM`): the box is 35% of the height, roughly a legend of three entries.
const LEGEND_BOX_BOTTOM: f64 = 0.65;

/// The legend goes into the plot corner that the fewest drawn lines cross: lower right for rising accuracy curves,
/// upper right for falling costs. Each segment is sampled along its length, so that a line drawn through a corner
/// between two far-apart points (a run of a few epochs) counts there too. Returns the corner and how many samples
/// fall in it.
fn legend_position(
    chart: &LineChart,
    x: (f64, f64),
    y: (f64, f64),
) -> (SeriesLabelPosition, usize) {
    let to_unit = |v: f64, (lo, hi): (f64, f64), log: bool| {
        if log {
            (v.ln() - lo.ln()) / (hi.ln() - lo.ln())
        } else {
            (v - lo) / (hi - lo)
        }
    };
    // Corner boxes roughly the size of a legend: 40% of the width, 35% of the height.
    let (low, high) = ((0.0, 1.0 - LEGEND_BOX_BOTTOM), (LEGEND_BOX_BOTTOM, 1.0));
    let corners = [
        (SeriesLabelPosition::LowerRight, (0.6, 1.0), low),
        (SeriesLabelPosition::UpperRight, (0.6, 1.0), high),
        (SeriesLabelPosition::LowerLeft, (0.0, 0.4), low),
        (SeriesLabelPosition::UpperLeft, (0.0, 0.4), high),
    ];
    const SAMPLES_PER_SEGMENT: usize = 16;
    let mut counts = [0usize; 4];
    let mut count_at = |ux: f64, uy: f64| {
        for (count, (_, cx, cy)) in counts.iter_mut().zip(&corners) {
            if ux >= cx.0 && ux <= cx.1 && uy >= cy.0 && uy <= cy.1 {
                *count += 1;
            }
        }
    };
    for series in &chart.series {
        let unit: Vec<(f64, f64)> = drawable(series, chart.log_y)
            .map(|(px, py)| (to_unit(px, x, false), to_unit(py, y, chart.log_y)))
            .collect();
        if let [(ux, uy)] = unit[..] {
            count_at(ux, uy);
        }
        for pair in unit.windows(2) {
            let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
            for k in 0..=SAMPLES_PER_SEGMENT {
                let t = k as f64 / SAMPLES_PER_SEGMENT as f64;
                count_at(x0 + t * (x1 - x0), y0 + t * (y1 - y0));
            }
        }
    }
    let best = (0..corners.len()).min_by_key(|&i| counts[i]).unwrap_or(0);
    (corners[best].0.clone(), counts[best])
}

/// One image of an [`ImageGrid`]: a row-major `height x width` array of values.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    /// Drawn under the tile (shortened to the tile's width).
    pub label: Option<String>,
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
}

impl Tile {
    pub fn new(width: usize, height: usize, pixels: Vec<f32>) -> Self {
        Tile {
            label: None,
            width,
            height,
            pixels,
        }
    }

    pub fn labelled(
        label: impl Into<String>,
        width: usize,
        height: usize,
        pixels: Vec<f32>,
    ) -> Self {
        Tile {
            label: Some(label.into()),
            width,
            height,
            pixels,
        }
    }
}

/// How tile values map to colours.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Normalise {
    /// Each tile stretched over the whole colour scale on its own (filters, weights, feature maps).
    #[default]
    PerTile,
    /// One scale for all tiles, so brightness compares across tiles.
    Global,
    /// A fixed value range, e.g. `Fixed(0.0, 1.0)` for images and sigmoid activations.
    Fixed(f32, f32),
}

/// Colour scale of an image grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Colormap {
    /// Low values black, high values white.
    #[default]
    Gray,
    /// Blue for negative, white for zero, red for positive; the range is made symmetric around zero unless it is
    /// [`Normalise::Fixed`].
    Diverging,
}

/// A grid of tiles, e.g. the 15 conv1 filters or the weights of 100 DAE units.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageGrid {
    pub title: String,
    pub tiles: Vec<Tile>,
    /// Tiles per row.
    pub columns: usize,
    /// Screen pixels per tile pixel (nearest-neighbour upscaling). Tiles read well at 50-80 pixels: e.g. 8 for
    /// 9x9 filters, 3 for 20x20 maps, 2 for 28x28 weights of 100 units. The report shows figures at their size.
    pub scale: u32,
    pub normalise: Normalise,
    pub colormap: Colormap,
}

/// Several labelled rows of tiles, each row with its own tile size, e.g. the feature maps of one digit at conv1,
/// pool1, conv2 and pool2. Each row is upscaled so its tiles are about `tile_px` pixels tall.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRows {
    pub title: String,
    pub rows: Vec<TileRow>,
    pub tile_px: u32,
    pub normalise: Normalise,
    pub colormap: Colormap,
}

/// One labelled row of an [`ImageRows`] figure.
#[derive(Debug, Clone, PartialEq)]
pub struct TileRow {
    pub label: String,
    pub tiles: Vec<Tile>,
}

/// Layout of one band of tiles (a grid, or one row of an [`ImageRows`]).
struct Band<'a> {
    label: Option<&'a str>,
    tiles: &'a [Tile],
    columns: usize,
    scale: u32,
    cell_w: u32,
    cell_h: u32,
    tile_label_h: u32,
}

impl Band<'_> {
    fn rows(&self) -> u32 {
        self.tiles.len().div_ceil(self.columns) as u32
    }
    fn label_h(&self) -> u32 {
        if self.label.is_some() {
            ROW_LABEL_FONT_PX + 10
        } else {
            0
        }
    }
    fn width(&self) -> u32 {
        let cols = self.columns.min(self.tiles.len()).max(1) as u32;
        cols * self.cell_w + (cols - 1) * TILE_GAP
    }
    fn height(&self) -> u32 {
        let rows = self.rows();
        self.label_h()
            + rows * (self.cell_h + self.tile_label_h)
            + rows.saturating_sub(1) * TILE_GAP
    }
}

fn band<'a>(label: Option<&'a str>, tiles: &'a [Tile], columns: usize, scale: u32) -> Band<'a> {
    let max_w = tiles.iter().map(|t| t.width).max().unwrap_or(1) as u32;
    let max_h = tiles.iter().map(|t| t.height).max().unwrap_or(1) as u32;
    let tile_label_h = if tiles.iter().any(|t| t.label.is_some()) {
        TILE_LABEL_FONT_PX + 6
    } else {
        0
    };
    Band {
        label,
        tiles,
        columns,
        scale,
        cell_w: max_w * scale + 2 * BORDER,
        cell_h: max_h * scale + 2 * BORDER,
        tile_label_h,
    }
}

fn check_tiles(path: &Path, tiles: &[Tile], what: &str) -> Result<(), PlotError> {
    if tiles.is_empty() {
        return Err(invalid(path, format!("{what} has no tiles")));
    }
    for (index, tile) in tiles.iter().enumerate() {
        if tile.width == 0 || tile.height == 0 {
            return Err(invalid(
                path,
                format!(
                    "{what}: tile {index} is empty ({}x{})",
                    tile.width, tile.height
                ),
            ));
        }
        if tile.pixels.len() != tile.width * tile.height {
            return Err(invalid(
                path,
                format!(
                    "{what}: tile {index} has {} values but is {}x{} = {}",
                    tile.pixels.len(),
                    tile.width,
                    tile.height,
                    tile.width * tile.height
                ),
            ));
        }
        if tile.width > 4096 || tile.height > 4096 {
            return Err(invalid(
                path,
                format!("{what}: tile {index} is larger than 4096 pixels"),
            ));
        }
    }
    Ok(())
}

fn text_width(text: &str, font_px: u32) -> u32 {
    // If fonts are missing, drawing fails later with a clear error; here an estimate is enough.
    (FONT, font_px)
        .into_font()
        .box_size(text)
        .map(|(w, _)| w)
        .unwrap_or(text.chars().count() as u32 * font_px * 6 / 10)
}

fn title_width(title: &str) -> u32 {
    if title.is_empty() {
        0
    } else {
        text_width(title, TITLE_FONT_PX)
    }
}

fn title_band(title: &str) -> u32 {
    if title.is_empty() {
        0
    } else {
        TITLE_FONT_PX + 16
    }
}

fn checked_scale(path: &Path, scale: u32) -> Result<u32, PlotError> {
    if scale == 0 || scale > 64 {
        return Err(invalid(path, format!("scale {scale} is outside 1..=64")));
    }
    Ok(scale)
}

fn grid_band<'a>(path: &Path, grid: &'a ImageGrid) -> Result<Band<'a>, PlotError> {
    check_tiles(path, &grid.tiles, "image grid")?;
    if grid.columns == 0 {
        return Err(invalid(path, "image grid has 0 columns"));
    }
    Ok(band(
        None,
        &grid.tiles,
        grid.columns,
        checked_scale(path, grid.scale)?,
    ))
}

/// Pixel size of the PNG that [`image_grid`] writes for `grid`: margins, title band, and per tile the largest
/// tile's size times `scale` plus a 1-pixel border, gaps of 6 pixels, and a label line when any tile has a label.
pub fn image_grid_size(grid: &ImageGrid) -> Result<(u32, u32), PlotError> {
    let path = Path::new("<image grid>");
    let band = grid_band(path, grid)?;
    Ok(canvas_size(&grid.title, std::slice::from_ref(&band)))
}

fn canvas_size(title: &str, bands: &[Band<'_>]) -> (u32, u32) {
    let content_w = bands.iter().map(Band::width).max().unwrap_or(0);
    let label_w = bands
        .iter()
        .filter_map(|b| b.label)
        .map(|l| text_width(l, ROW_LABEL_FONT_PX))
        .max()
        .unwrap_or(0);
    let width = 2 * MARGIN + content_w.max(title_width(title)).max(label_w);
    let gaps = bands.len().saturating_sub(1) as u32 * (2 * TILE_GAP);
    let height =
        2 * MARGIN + title_band(title) + bands.iter().map(Band::height).sum::<u32>() + gaps;
    (width, height)
}

/// Draws `grid` into a PNG at `path`; its size is [`image_grid_size`].
pub fn image_grid(path: &Path, grid: &ImageGrid) -> Result<(), PlotError> {
    check_png_path(path)?;
    let band = grid_band(path, grid)?;
    let range = global_range(&grid.tiles, grid.normalise, grid.colormap);
    bands_png(
        path,
        &grid.title,
        &[band],
        grid.normalise,
        grid.colormap,
        range,
    )
}

fn rows_bands<'a>(path: &Path, rows: &'a ImageRows) -> Result<Vec<Band<'a>>, PlotError> {
    if rows.rows.is_empty() {
        return Err(invalid(path, "image rows figure has no rows"));
    }
    if rows.tile_px == 0 || rows.tile_px > 1024 {
        return Err(invalid(
            path,
            format!("tile_px {} is outside 1..=1024", rows.tile_px),
        ));
    }
    rows.rows
        .iter()
        .map(|row| {
            check_tiles(path, &row.tiles, &format!("row \"{}\"", row.label))?;
            let tallest = row.tiles.iter().map(|t| t.height).max().unwrap_or(1) as u32;
            let scale = (rows.tile_px as f32 / tallest as f32).round().max(1.0) as u32;
            Ok(band(Some(&row.label), &row.tiles, row.tiles.len(), scale))
        })
        .collect()
}

/// Pixel size of the PNG that [`image_rows`] writes for `rows`.
pub fn image_rows_size(rows: &ImageRows) -> Result<(u32, u32), PlotError> {
    let bands = rows_bands(Path::new("<image rows>"), rows)?;
    Ok(canvas_size(&rows.title, &bands))
}

/// Draws labelled rows of tiles into a PNG at `path`; its size is [`image_rows_size`]. With
/// [`Normalise::Global`] the scale is shared by all rows.
pub fn image_rows(path: &Path, rows: &ImageRows) -> Result<(), PlotError> {
    check_png_path(path)?;
    let bands = rows_bands(path, rows)?;
    let all = rows.rows.iter().flat_map(|r| &r.tiles);
    let range = global_range(all, rows.normalise, rows.colormap);
    bands_png(
        path,
        &rows.title,
        &bands,
        rows.normalise,
        rows.colormap,
        range,
    )
}

fn check_png_path(path: &Path) -> Result<(), PlotError> {
    let is_png = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(invalid(path, "the file name must end in .png"));
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(draw_error(
            path,
            format!("folder {} does not exist", dir.display()),
        )),
        _ => Ok(()),
    }
}

/// The value range for `Global`/`Fixed`; `None` for per-tile normalisation.
fn global_range<'a>(
    tiles: impl IntoIterator<Item = &'a Tile>,
    normalise: Normalise,
    colormap: Colormap,
) -> Option<(f32, f32)> {
    match normalise {
        Normalise::PerTile => None,
        Normalise::Fixed(lo, hi) => Some((lo, hi)),
        Normalise::Global => Some(value_range(
            tiles.into_iter().flat_map(|t| t.pixels.iter().copied()),
            colormap,
        )),
    }
}

fn value_range(values: impl Iterator<Item = f32>, colormap: Colormap) -> (f32, f32) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (0.0, 1.0);
    }
    match colormap {
        Colormap::Gray => (lo, hi),
        Colormap::Diverging => {
            let m = lo.abs().max(hi.abs());
            (-m, m)
        }
    }
}

/// Maps `v` in `lo..hi` to a colour; non-finite values show magenta so they cannot pass unnoticed. A constant
/// tile (lo == hi) shows the middle of the scale, except an all-zero tile in gray, which shows black as zero does
/// in every other tile (a feature map of a unit that is silent on this image).
fn colour(v: f32, (lo, hi): (f32, f32), colormap: Colormap) -> [u8; 3] {
    if !v.is_finite() {
        return [255, 0, 255];
    }
    let t = if hi > lo {
        ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
    } else if v == 0.0 && colormap == Colormap::Gray {
        0.0
    } else {
        0.5
    };
    match colormap {
        Colormap::Gray => {
            let g = (t * 255.0).round() as u8;
            [g, g, g]
        }
        Colormap::Diverging => {
            // Blue (33,102,172) -> white -> red (178,24,43), as ColorBrewer's RdBu ends.
            let (end, s) = if t < 0.5 {
                ([33.0, 102.0, 172.0], 1.0 - 2.0 * t)
            } else {
                ([178.0, 24.0, 43.0], 2.0 * t - 1.0)
            };
            let mix = |e: f32| (255.0 + (e - 255.0) * s).round() as u8;
            [mix(end[0]), mix(end[1]), mix(end[2])]
        }
    }
}

fn tile_bitmap(tile: &Tile, scale: u32, range: (f32, f32), colormap: Colormap) -> Vec<u8> {
    let (w, h, s) = (tile.width, tile.height, scale as usize);
    let mut rgb = vec![0u8; w * s * h * s * 3];
    for y in 0..h * s {
        for x in 0..w * s {
            let c = colour(tile.pixels[(y / s) * w + x / s], range, colormap);
            let at = (y * w * s + x) * 3;
            rgb[at..at + 3].copy_from_slice(&c);
        }
    }
    rgb
}

/// Shortens `text` so it fits `width` pixels at `font_px`.
fn fit_label(text: &str, width: u32, font_px: u32) -> String {
    let font = (FONT, font_px).into_font();
    let fits = |s: &str| font.box_size(s).map(|(w, _)| w <= width).unwrap_or(true);
    if fits(text) {
        return text.to_string();
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let candidate: String = chars.iter().collect::<String>() + "…";
        if fits(&candidate) {
            return candidate;
        }
    }
    String::new()
}

/// Renders `bands` under `title` into a PNG at `path`, at [`canvas_size`].
fn bands_png(
    path: &Path,
    title: &str,
    bands: &[Band<'_>],
    normalise: Normalise,
    colormap: Colormap,
    shared_range: Option<(f32, f32)>,
) -> Result<(), PlotError> {
    render_png(path, canvas_size(title, bands), |root| {
        let size = root.dim_in_pixel();
        let err = |e: DrawingAreaErrorKind<_>| draw_error(path, e);
        let mut y = MARGIN as i32;
        if !title.is_empty() {
            let style = (FONT, TITLE_FONT_PX)
                .into_font()
                .color(&TEXT_COLOUR)
                .pos(Pos::new(HPos::Center, VPos::Top));
            root.draw(&Text::new(title, (size.0 as i32 / 2, y), style))
                .map_err(err)?;
            y += title_band(title) as i32;
        }
        for band in bands {
            if let Some(label) = band.label {
                let style = (FONT, ROW_LABEL_FONT_PX).into_font().color(&TEXT_COLOUR);
                root.draw(&Text::new(label, (MARGIN as i32, y + 2), style))
                    .map_err(err)?;
                y += band.label_h() as i32;
            }
            for (index, tile) in band.tiles.iter().enumerate() {
                let (col, row) = ((index % band.columns) as u32, (index / band.columns) as u32);
                let cell_x = (MARGIN + col * (band.cell_w + TILE_GAP)) as i32;
                let cell_y = y + (row * (band.cell_h + band.tile_label_h + TILE_GAP)) as i32;
                // Smaller tiles sit centred in the cell of the largest one.
                let (tw, th) = (
                    tile.width as u32 * band.scale,
                    tile.height as u32 * band.scale,
                );
                let x0 = cell_x + ((band.cell_w - 2 * BORDER - tw) / 2) as i32;
                let y0 = cell_y + ((band.cell_h - 2 * BORDER - th) / 2) as i32;
                let range = match normalise {
                    Normalise::PerTile => value_range(tile.pixels.iter().copied(), colormap),
                    _ => shared_range.unwrap_or((0.0, 1.0)),
                };
                let bitmap = tile_bitmap(tile, band.scale, range, colormap);
                let element = BitMapElement::<_>::with_owned_buffer(
                    (x0 + BORDER as i32, y0 + BORDER as i32),
                    (tw, th),
                    bitmap,
                )
                .ok_or_else(|| {
                    draw_error(path, "internal error: tile bitmap has the wrong size")
                })?;
                root.draw(&element).map_err(err)?;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + tw as i32 + 1, y0 + th as i32 + 1)],
                    BORDER_COLOUR.stroke_width(BORDER),
                ))
                .map_err(err)?;
                if let Some(label) = &tile.label {
                    let text = fit_label(label, band.cell_w, TILE_LABEL_FONT_PX);
                    let style = (FONT, TILE_LABEL_FONT_PX)
                        .into_font()
                        .color(&TEXT_COLOUR)
                        .pos(Pos::new(HPos::Center, VPos::Top));
                    let at = (
                        cell_x + band.cell_w as i32 / 2,
                        cell_y + band.cell_h as i32 + 3,
                    );
                    root.draw(&Text::new(text, at, style)).map_err(err)?;
                }
            }
            y += (band.height() - band.label_h() + 2 * TILE_GAP) as i32;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverging_maps_zero_to_white_and_ends_to_blue_and_red() {
        let range = (-2.0, 2.0);
        assert_eq!(colour(0.0, range, Colormap::Diverging), [255, 255, 255]);
        assert_eq!(colour(-2.0, range, Colormap::Diverging), [33, 102, 172]);
        assert_eq!(colour(2.0, range, Colormap::Diverging), [178, 24, 43]);
    }

    #[test]
    fn gray_constant_tile_is_mid_gray_zero_tile_black_and_nan_is_magenta() {
        assert_eq!(colour(3.0, (3.0, 3.0), Colormap::Gray), [128, 128, 128]);
        assert_eq!(colour(0.0, (0.0, 0.0), Colormap::Gray), [0, 0, 0]);
        assert_eq!(
            colour(0.0, (0.0, 0.0), Colormap::Diverging),
            [255, 255, 255]
        );
        assert_eq!(colour(f32::NAN, (0.0, 1.0), Colormap::Gray), [255, 0, 255]);
    }

    /// Ticks inside the axis, ascending, as many as asked for.
    fn check_ticks(lo: f64, hi: f64, expected: &[f64]) {
        let (labelled, grid) = log_axis_ticks(lo, hi);
        assert!(labelled.windows(2).all(|w| w[0] < w[1]), "{labelled:?}");
        assert!(labelled.iter().all(|&v| v >= lo && v <= hi), "{labelled:?}");
        assert!(grid.iter().all(|&v| v >= lo && v <= hi), "{grid:?}");
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
        assert!(
            labelled.len() == expected.len()
                && labelled.iter().zip(expected).all(|(&a, &b)| close(a, b)),
            "{lo}..{hi}: {labelled:?}, expected {expected:?}"
        );
    }

    #[test]
    fn log_axis_ticks_take_the_first_ladder_with_enough_labels() {
        // Five decades: powers of ten.
        check_ticks(0.0005, 20.0, &[0.001, 0.01, 0.1, 1.0, 10.0]);
        // Two and a half decades (a CNN's cost): 1-2-5.
        check_ticks(0.003, 0.9, &[0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]);
        // Under a decade: 1..9.
        check_ticks(0.025, 0.09, &[0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09]);
        // Holding no power of ten and too narrow for 1..9: round linear steps.
        check_ticks(53.2, 71.0, &[55.0, 60.0, 65.0, 70.0]);
        check_ticks(0.0312, 0.0358, &[0.032, 0.033, 0.034, 0.035]);
        // A 20% span: the step that gives four or more, not two (100, 120).
        check_ticks(100.0, 124.5, &[100.0, 105.0, 110.0, 115.0, 120.0]);
        check_ticks(88.0, 138.0, &[90.0, 100.0, 110.0, 120.0, 130.0]);
        check_ticks(1e-6, 1.2e-6, &[1e-6, 1.05e-6, 1.1e-6, 1.15e-6, 1.2e-6]);
        // Thirty decades: every third power, at most MAX_LOG_TICKS labels.
        let (labelled, _) = log_axis_ticks(1e-20, 1e10);
        assert!(labelled.len() <= MAX_LOG_TICKS && labelled.len() >= MIN_LOG_TICKS);
    }

    /// Every span from a factor of 1.0001 to 1.5 (the ones narrower than the
    /// 1..9 ladder) gets 4 to 11 linear ticks, each with its own label.
    #[test]
    fn linear_ticks_give_four_to_eleven_distinct_labels() {
        for scale in [1e-9, 3e-5, 0.07, 1.0, 54.0, 2e5, 7e8] {
            for k in 1..=500 {
                let hi = scale * (1.0 + 0.001 * k as f64);
                let ticks = linear_ticks(scale, hi);
                assert!((4..=11).contains(&ticks.len()), "{scale}..{hi}: {ticks:?}");
                let labels: Vec<String> = ticks.iter().map(|&v| tick_label(v)).collect();
                assert!(labels.windows(2).all(|w| w[0] != w[1]), "{labels:?}");
            }
        }
        assert_eq!(tick_label(1.05e-6), "1.05e-6");
        assert_eq!(tick_label(2e7), "2e7");
        assert_eq!(tick_label(0.3), "0.3");
    }

    /// Data at the ends of f64 give a finite axis and a short tick list.
    #[test]
    fn extreme_log_data_give_a_finite_axis() {
        for (a, b) in [(1e-10, 1e305), (1e-320, 1.0), (f64::MIN_POSITIVE, f64::MAX)] {
            let (lo, hi) = padded_log(a, b);
            assert!(lo > 0.0 && hi.is_finite() && lo < hi, "{a}..{b}: {lo} {hi}");
            let (labelled, grid) = log_axis_ticks(lo, hi);
            assert!(
                (2..=MAX_LOG_TICKS).contains(&labelled.len()),
                "{labelled:?}"
            );
            assert!(grid.len() <= 9 * 700, "{}", grid.len());
        }
    }

    #[test]
    fn padded_log_axis_holds_the_data_and_is_never_flat() {
        let (lo, hi) = padded_log(0.01, 1.0);
        assert!(lo < 0.01 && hi > 1.0 && lo > 0.007 && hi < 1.4, "{lo} {hi}");
        let (lo, hi) = padded_log(60.0, 60.0);
        assert!(lo < 60.0 && hi > 60.0 && hi / lo >= 1.5, "{lo} {hi}");
        // Every axis gets at least two labels.
        for (a, b) in [(60.0, 60.0), (1e-9, 1e-9), (0.5, 0.51), (3.0, 3e7)] {
            let (lo, hi) = padded_log(a, b);
            assert!(log_axis_ticks(lo, hi).0.len() >= 2, "{a}..{b}");
        }
    }

    /// Two lines crossing from corner to corner leave no corner free: the axis
    /// is raised so that the upper band is, and the legend goes there.
    #[test]
    fn a_legend_with_no_free_corner_gets_room_above_the_lines() {
        let line = |label: &str, points: Vec<(f64, f64)>| Series {
            label: label.into(),
            points,
        };
        for log_y in [false, true] {
            let crossing = |falling: &str, rising: &str| LineChart {
                series: vec![
                    line(falling, vec![(0.0, 10.0), (10.0, 1.0)]),
                    line(rising, vec![(0.0, 1.0), (10.0, 10.0)]),
                ],
                log_y,
                ..Default::default()
            };
            let chart = crossing("falling", "rising");
            let y = if log_y {
                padded_log(1.0, 10.0)
            } else {
                padded(1.0, 10.0, 0.05)
            };
            assert!(legend_position(&chart, (0.0, 10.0), y).1 > 0);
            let (y_hi, corner) = legend_room(&chart, (0.0, 10.0), y);
            assert!(y_hi > y.1, "{y_hi} {}", y.1);
            assert_eq!(legend_position(&chart, (0.0, 10.0), (y.0, y_hi)).1, 0);
            assert_eq!(corner, SeriesLabelPosition::UpperRight);
            // A free corner, or no legend, leaves the axis alone.
            let one = LineChart {
                series: vec![line("falling", vec![(0.0, 10.0), (10.0, 1.0)])],
                log_y,
                ..Default::default()
            };
            assert_eq!(legend_room(&one, (0.0, 10.0), y).0, y.1);
            assert_eq!(legend_room(&crossing("", ""), (0.0, 10.0), y).0, y.1);
        }
    }

    #[test]
    fn diverging_range_is_symmetric() {
        assert_eq!(
            value_range([-1.0, 3.0].into_iter(), Colormap::Diverging),
            (-3.0, 3.0)
        );
        assert_eq!(
            value_range([f32::NAN].into_iter(), Colormap::Gray),
            (0.0, 1.0)
        );
    }
}
