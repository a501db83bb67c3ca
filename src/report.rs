//! The report: one self-contained HTML page and one Markdown page built from finished run folders.
//!
//! [`build`] reads every folder under the runs folder that holds a `summary.json` (nested folders too, e.g.
//! `runs/compare-12k/`), plus an optional top-level `study.json`, and writes `report.html` (images embedded as
//! base64 data URIs, inline CSS, no scripts, no external URLs) and `report.md` (the same tables, images by
//! relative path). Every text taken from a file is escaped. Missing keys show as "-"; unknown top-level keys of a
//! summary are listed with its settings.

use std::cmp::Ordering;
use std::fmt::{self, Write as _};
use std::fs;
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

/// Where [`build`] wrote the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPaths {
    pub html: PathBuf,
    pub markdown: PathBuf,
}

/// Why the report could not be built.
#[derive(Debug)]
pub enum ReportError {
    /// The runs folder does not exist or is not a folder.
    NotAFolder(PathBuf),
    /// Reading or writing a file failed.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A `summary.json` or `study.json` is not valid JSON or not an object.
    Json { path: PathBuf, message: String },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::NotAFolder(path) => write!(
                f,
                "runs folder {} does not exist or is not a folder",
                path.display()
            ),
            ReportError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ReportError::Json { path, message } => {
                write!(f, "{} is not a valid summary: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReportError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Folders deeper than this below the runs folder are not searched for runs.
const MAX_DEPTH: usize = 4;
/// Metrics tables longer than this are cut (with a note) to keep the page light.
const MAX_METRIC_ROWS: usize = 2000;

/// Keys of `summary.json` that the report shows in fixed places; any other top-level key goes to the settings.
const KNOWN_KEYS: &[&str] = &[
    "name",
    "title",
    "model",
    "settings",
    "seed",
    "threads",
    "simd",
    "machine",
    "command",
    "reference",
    "results",
    "figures",
    "epochs_completed",
    "final_test_accuracy",
    "best_test_accuracy",
    "best_epoch",
    "first_epoch_reaching_0_97",
    "final_train_cost",
    "wall_seconds",
];

/// Headline results in table order, with their row labels.
const HEADLINE_RESULTS: &[(&str, &str)] = &[
    ("final_test_accuracy", "Final test accuracy"),
    ("best_test_accuracy", "Best test accuracy"),
    ("best_epoch", "Best epoch"),
    ("first_epoch_reaching_0_97", "First epoch reaching 0.97"),
    ("final_train_cost", "Final training cost"),
    ("epochs_completed", "Epochs completed"),
    ("wall_seconds", "Wall time"),
];

/// A figure found for a run or for the study.
struct Figure {
    /// Path relative to the runs folder, '/'-separated (for report.md).
    relative: String,
    caption: String,
    /// File contents, or why they are not shown.
    data: Result<Vec<u8>, String>,
}

/// One run folder.
struct Run {
    /// Folder relative to the runs folder, '/'-separated.
    folder: String,
    summary: Map<String, Value>,
    metrics: Option<Table>,
    figures: Vec<Figure>,
}

impl Run {
    fn name(&self) -> String {
        match self.summary.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => self.folder.clone(),
        }
    }
    fn title(&self) -> String {
        match self.summary.get("title") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => self.name(),
        }
    }
    fn anchor(&self) -> String {
        format!("run-{}", slug(&self.folder))
    }
    fn text(&self, key: &str) -> String {
        self.summary
            .get(key)
            .map(scalar_text)
            .unwrap_or_else(|| "-".into())
    }
}

/// A CSV table: header and rows of cells.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    truncated_from: Option<usize>,
}

struct Study {
    summary: Option<Map<String, Value>>,
    figures: Vec<Figure>,
}

/// Builds `runs_dir/report.html` and `runs_dir/report.md` from the run folders under `runs_dir`.
pub fn build(runs_dir: &Path) -> Result<ReportPaths, ReportError> {
    if !runs_dir.is_dir() {
        return Err(ReportError::NotAFolder(runs_dir.to_path_buf()));
    }
    let mut run_dirs = Vec::new();
    find_run_dirs(runs_dir, 0, &mut run_dirs)?;
    let mut runs = run_dirs
        .iter()
        .map(|dir| read_run(runs_dir, dir))
        .collect::<Result<Vec<_>, _>>()?;
    runs.sort_by(|a, b| natural_cmp(&a.folder, &b.folder));
    let study = read_study(runs_dir)?;

    let paths = ReportPaths {
        html: runs_dir.join("report.html"),
        markdown: runs_dir.join("report.md"),
    };
    let write = |path: &Path, text: String| {
        crate::jsonfile::write_text_atomic(path, &text)
            .map_err(|(path, source)| ReportError::Io { path, source })
    };
    write(&paths.html, render_html(&study, &runs))?;
    write(&paths.markdown, render_markdown(&study, &runs))?;
    Ok(paths)
}

fn find_run_dirs(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) -> Result<(), ReportError> {
    if depth > 0 && dir.join("summary.json").is_file() {
        found.push(dir.to_path_buf());
    }
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        // Symbolic links are not followed, so a link cycle cannot loop and nothing outside is read.
        let is_dir = entry.file_type().map_err(io_error(&entry.path()))?.is_dir();
        if is_dir && !entry.file_name().to_string_lossy().starts_with('.') {
            find_run_dirs(&entry.path(), depth + 1, found)?;
        }
    }
    Ok(())
}

fn relative_string(base: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn read_json_object(path: &Path) -> Result<Map<String, Value>, ReportError> {
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ReportError::Json {
            path: path.to_path_buf(),
            message: "the top level is not a JSON object".into(),
        }),
        Err(e) => Err(ReportError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

fn read_run(runs_dir: &Path, dir: &Path) -> Result<Run, ReportError> {
    let summary = read_json_object(&dir.join("summary.json"))?;
    let metrics_path = dir.join("metrics.csv");
    let metrics = if metrics_path.is_file() {
        Some(parse_csv(
            &fs::read_to_string(&metrics_path).map_err(io_error(&metrics_path))?,
        ))
    } else {
        None
    };
    let figures = read_figures(runs_dir, dir, summary.get("figures"))?;
    Ok(Run {
        folder: relative_string(runs_dir, dir),
        summary,
        metrics,
        figures,
    })
}

fn read_study(runs_dir: &Path) -> Result<Study, ReportError> {
    let path = runs_dir.join("study.json");
    if !path.is_file() {
        return Ok(Study {
            summary: None,
            figures: Vec::new(),
        });
    }
    let summary = read_json_object(&path)?;
    // Without a figure list the study shows none: the runs folder's own PNGs are not necessarily comparisons.
    let figures = match summary.get("figures") {
        Some(list) => read_figures(runs_dir, runs_dir, Some(list))?,
        None => Vec::new(),
    };
    Ok(Study {
        summary: Some(summary),
        figures,
    })
}

/// The (file, caption) pairs of a summary's `figures` list: objects with a
/// `file` (and a `caption`, else the file's name) or bare file names; None
/// when `list` is not a list.
pub(crate) fn listed_figures(list: &Value) -> Option<Vec<(String, String)>> {
    let items = list.as_array()?;
    let entry = |item: &Value| match item {
        Value::Object(o) => {
            let file = o.get("file").and_then(Value::as_str)?.to_string();
            let caption = o
                .get("caption")
                .map(scalar_text)
                .unwrap_or_else(|| file.clone());
            Some((file, caption))
        }
        Value::String(file) => Some((file.clone(), file.clone())),
        _ => None,
    };
    Some(items.iter().filter_map(entry).collect())
}

/// The figures listed in `list` (`[{"file", "caption"}]`), or every PNG in `dir` when there is no list.
fn read_figures(
    runs_dir: &Path,
    dir: &Path,
    list: Option<&Value>,
) -> Result<Vec<Figure>, ReportError> {
    let entries: Vec<(String, String)> = match list.and_then(listed_figures) {
        Some(listed) => listed,
        None => {
            let mut pngs: Vec<String> = fs::read_dir(dir)
                .map_err(io_error(dir))?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.to_ascii_lowercase().ends_with(".png"))
                .collect();
            pngs.sort_by(|a, b| natural_cmp(a, b));
            pngs.into_iter().map(|f| (f.clone(), f)).collect()
        }
    };
    Ok(entries
        .into_iter()
        .map(|(file, caption)| {
            let relative_file = Path::new(&file);
            // Only files inside the folder: a summary must not pull arbitrary files into the page.
            let inside = relative_file
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            let full = dir.join(relative_file);
            let data = if !inside {
                Err(format!(
                    "figure path {file} leaves the run folder; not shown"
                ))
            } else if image_mime(&file).is_none() {
                Err(format!(
                    "figure {file} is not a PNG, JPEG, GIF or SVG image; not shown"
                ))
            } else if full.exists() && !full.is_file() {
                // A named pipe would block the read, a device never end.
                Err(format!("figure {file} is not a regular file; not shown"))
            } else if fs::metadata(&full).is_ok_and(|m| m.len() > MAX_FIGURE_BYTES) {
                Err(format!(
                    "figure {file} is larger than {} MiB; not shown",
                    MAX_FIGURE_BYTES >> 20
                ))
            } else {
                fs::read(&full).map_err(|e| format!("figure {file} could not be read: {e}"))
            };
            Figure {
                relative: relative_string(runs_dir, &full),
                caption,
                data,
            }
        })
        .collect())
}

/// The largest figure the report embeds: the study's PNGs are well under
/// 1 MiB each, and the page holds every figure inline.
const MAX_FIGURE_BYTES: u64 = 64 << 20;

fn image_mime(file: &str) -> Option<&'static str> {
    let lower = file.to_ascii_lowercase();
    let ext = lower.rsplit('.').next()?;
    match ext {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "gif" => Some("image/gif"),
        "svg" => Some("image/svg+xml"),
        _ => None,
    }
}

/// Comma-separated values with optional double-quoted fields ("" inside quotes is a quote).
fn parse_csv(text: &str) -> Table {
    let mut records: Vec<Vec<String>> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => fields.push(std::mem::take(&mut field)),
                _ => field.push(c),
            }
        }
        fields.push(field.trim_end_matches('\r').to_string());
        records.push(fields.into_iter().map(|f| f.trim().to_string()).collect());
    }
    let header = if records.is_empty() {
        Vec::new()
    } else {
        records.remove(0)
    };
    let total = records.len();
    let truncated_from = (total > MAX_METRIC_ROWS).then_some(total);
    records.truncate(MAX_METRIC_ROWS);
    Table {
        header,
        rows: records,
        truncated_from,
    }
}

/// Orders "a2" before "a10": runs of digits compare by value.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.chars().peekable(), b.chars().peekable());
    loop {
        match (a.peek().copied(), b.peek().copied()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let take = |it: &mut std::iter::Peekable<std::str::Chars<'_>>| {
                    let mut digits = String::new();
                    while let Some(d) = it.peek().copied().filter(char::is_ascii_digit) {
                        digits.push(d);
                        it.next();
                    }
                    digits
                };
                let (da, db) = (take(&mut a), take(&mut b));
                let (ta, tb) = (da.trim_start_matches('0'), db.trim_start_matches('0'));
                let order = ta
                    .len()
                    .cmp(&tb.len())
                    .then_with(|| ta.cmp(tb))
                    .then_with(|| da.cmp(&db));
                if order != Ordering::Equal {
                    return order;
                }
            }
            (Some(x), Some(y)) => {
                let order = x.to_ascii_lowercase().cmp(&y.to_ascii_lowercase());
                if order != Ordering::Equal {
                    return order;
                }
                a.next();
                b.next();
            }
        }
    }
}

/// A JSON value as table text: numbers rounded for reading, strings as-is, structures as compact JSON.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => format_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Four significant decimals for fractions (accuracies), three for larger values, none past a thousand.
fn format_float(f: f64) -> String {
    if !f.is_finite() {
        return f.to_string();
    }
    let text = if f.fract() == 0.0 && f.abs() < 1e15 {
        return format!("{f:.0}");
    } else if f.abs() >= 1000.0 {
        format!("{f:.1}")
    } else if f.abs() >= 1.0 {
        format!("{f:.3}")
    } else if f.abs() >= 1e-4 {
        format!("{f:.4}")
    } else {
        return format!("{f:.3e}");
    };
    let trimmed = text.trim_end_matches('0');
    trimmed.trim_end_matches('.').to_string()
}

fn format_seconds(value: Option<&Value>) -> String {
    // + 0.0 turns a -0.0 (an empty sum, written by an older release) into 0.
    match value.and_then(Value::as_f64).map(|s| s + 0.0) {
        Some(s) if s >= 3600.0 => format!(
            "{:.0} h {:02.0} min",
            (s / 3600.0).floor(),
            (s % 3600.0) / 60.0
        ),
        Some(s) if s >= 60.0 => format!("{:.0} min {:02.0} s", (s / 60.0).floor(), s % 60.0),
        Some(s) => format!("{s:.1} s"),
        None => value.map(scalar_text).unwrap_or_else(|| "-".into()),
    }
}

/// The rows of a run's settings table: `settings` entries, then run facts, then unknown top-level keys.
fn settings_rows(run: &Run) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    if let Some(Value::Object(settings)) = run.summary.get("settings") {
        rows.extend(
            settings
                .iter()
                .map(|(k, v)| vec![k.clone(), scalar_text(v)]),
        );
    }
    for key in ["model", "seed", "threads", "simd", "machine"] {
        rows.push(vec![key.to_string(), run.text(key)]);
    }
    rows.extend(
        run.summary
            .iter()
            .filter(|(k, _)| !KNOWN_KEYS.contains(&k.as_str()))
            .map(|(k, v)| vec![k.clone(), scalar_text(v)]),
    );
    rows
}

/// The rows of a run's results table: (label, vcortex value, seed report value).
fn results_rows(run: &Run) -> (Option<String>, Vec<(String, String, String)>) {
    let reference = match run.summary.get("reference") {
        Some(Value::Object(r)) => r.clone(),
        _ => Map::new(),
    };
    let reference_label = reference.get("label").map(scalar_text);
    let seed = |key: &str| {
        reference
            .get(key)
            .map(scalar_text)
            .unwrap_or_else(|| "-".into())
    };
    let mut rows = Vec::new();
    let mut shown: Vec<String> = vec!["label".into()];
    for &(key, label) in HEADLINE_RESULTS {
        let value = if key == "wall_seconds" {
            format_seconds(run.summary.get(key))
        } else {
            run.text(key)
        };
        rows.push((label.to_string(), value, seed(key)));
        shown.push(key.into());
    }
    if let Some(Value::Object(results)) = run.summary.get("results") {
        for (key, value) in results {
            if shown.contains(key) {
                continue;
            }
            rows.push((key.clone(), scalar_text(value), seed(key)));
            shown.push(key.clone());
        }
    }
    for (key, value) in &reference {
        if !shown.contains(key) {
            rows.push((key.clone(), "-".into(), scalar_text(value)));
        }
    }
    // Headline rows that neither side has are noise.
    rows.retain(|(_, ours, theirs)| ours != "-" || theirs != "-");
    (reference_label, rows)
}

fn study_text(study: &Study, key: &str) -> Option<String> {
    study.summary.as_ref()?.get(key).map(scalar_text)
}

/// Columns of the results overview, one row per run.
const OVERVIEW_HEADER: [&str; 6] = [
    "Run",
    "Title",
    "Final test accuracy",
    "Best test accuracy",
    "Epochs",
    "Wall time",
];

/// One overview row per run, in [`OVERVIEW_HEADER`]'s order.
fn overview_rows(runs: &[Run]) -> Vec<Vec<String>> {
    runs.iter()
        .map(|r| {
            vec![
                r.name(),
                r.title(),
                r.text("final_test_accuracy"),
                r.text("best_test_accuracy"),
                epochs_text(r),
                format_seconds(r.summary.get("wall_seconds")),
            ]
        })
        .collect()
}

/// Epochs completed, marked when fewer than the run's settings asked for (a
/// run stopped early, or still running): its "final" figures are not final.
fn epochs_text(r: &Run) -> String {
    let done = r.summary.get("epochs_completed").and_then(Value::as_u64);
    let planned = r
        .summary
        .get("settings")
        .and_then(|s| s.get("epochs"))
        .and_then(Value::as_u64);
    match (done, planned) {
        (Some(done), Some(planned)) if done < planned => {
            format!("{done} of {planned} (incomplete)")
        }
        _ => r.text("epochs_completed"),
    }
}

/// Machine, SIMD level and threads: from study.json, else from the first run
/// that states them; and how a study shared its threads, where it says.
fn environment_rows(study: &Study, runs: &[Run]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = ["machine", "simd", "threads"]
        .iter()
        .map(|&key| {
            let value = study_text(study, key)
                .or_else(|| {
                    runs.iter()
                        .find_map(|r| r.summary.get(key).map(scalar_text))
                })
                .unwrap_or_else(|| "-".into());
            vec![key.to_string(), value]
        })
        .collect();
    for (key, label) in [
        ("jobs", "stages at once"),
        ("threads_per_stage", "threads per stage"),
    ] {
        if let Some(value) = study_text(study, key) {
            rows.push(vec![label.to_string(), value]);
        }
    }
    rows
}

/// Stage rows (name, title, wall time, command) from study.json, else one per run.
fn stage_rows(study: &Study, runs: &[Run]) -> Vec<Vec<String>> {
    if let Some(Value::Array(stages)) = study.summary.as_ref().and_then(|s| s.get("stages")) {
        return stages
            .iter()
            .filter_map(Value::as_object)
            .map(|stage| {
                let text = |k: &str| stage.get(k).map(scalar_text).unwrap_or_else(|| "-".into());
                vec![
                    text("name"),
                    text("title"),
                    format_seconds(stage.get("wall_seconds")),
                    text("command"),
                ]
            })
            .collect();
    }
    runs.iter()
        .map(|run| {
            vec![
                run.name(),
                run.title(),
                format_seconds(run.summary.get("wall_seconds")),
                run.text("command"),
            ]
        })
        .collect()
}

fn total_seconds(study: &Study, runs: &[Run]) -> String {
    if let Some(total) = study.summary.as_ref().and_then(|s| s.get("total_seconds")) {
        return format_seconds(Some(total));
    }
    let sum: f64 = runs
        .iter()
        .filter_map(|r| r.summary.get("wall_seconds")?.as_f64())
        .sum();
    format_seconds(Some(&Value::from(sum)))
}

fn slug(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').to_string()
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes text for a Markdown table cell or paragraph: no HTML, no table breaks, no emphasis or links.
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            '\\' | '|' | '*' | '_' | '[' | ']' | '`' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// A relative path usable as a Markdown link target.
fn markdown_path(relative: &str) -> String {
    let mut out = String::new();
    for c in relative.chars() {
        if c.is_ascii_alphanumeric() || "/-_.~".contains(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

const CSS: &str = r#"
:root { color-scheme: light; }
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; line-height: 1.5;
  color: #1d1d1f; background: #fff; max-width: 1120px; margin: 0 auto; padding: 1.5rem 1.25rem 4rem; }
h1 { font-size: 1.9rem; margin-bottom: .2rem; }
h2 { font-size: 1.45rem; margin-top: 2.8rem; border-bottom: 2px solid #e3e3e8; padding-bottom: .25rem; }
h3 { font-size: 1.1rem; margin-top: 1.6rem; }
nav ol { columns: 2; column-gap: 2.5rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .93rem; }
th, td { border: 1px solid #d6d6dc; padding: .28rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; color: #555; font-size: .88rem; padding-bottom: .2rem; }
code, pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .88rem; }
pre { background: #f6f6f8; border: 1px solid #e3e3e8; padding: .6rem .8rem; overflow-x: auto; }
.side { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
figure { margin: 1rem 0 1.6rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e3e8; }
figcaption { color: #444; font-size: .9rem; margin-top: .25rem; }
details { margin: .8rem 0; }
details summary { cursor: pointer; font-weight: 600; }
.missing { color: #a33; }
.muted { color: #666; }
"#;

fn html_table(out: &mut String, caption: Option<&str>, header: &[&str], rows: &[Vec<String>]) {
    out.push_str("<table>");
    if let Some(caption) = caption {
        let _ = write!(out, "<caption>{}</caption>", escape_html(caption));
    }
    out.push_str("<thead><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", escape_html(h));
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let class = if looks_numeric(cell) {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(out, "<td{class}>{}</td>", escape_html(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

fn looks_numeric(cell: &str) -> bool {
    !cell.is_empty() && cell.parse::<f64>().is_ok()
}

fn html_figure(out: &mut String, figure: &Figure) {
    match &figure.data {
        Ok(bytes) => {
            let mime = image_mime(&figure.relative).unwrap_or("image/png");
            let data = base64::engine::general_purpose::STANDARD.encode(bytes);
            let _ = writeln!(
                out,
                "<figure><img src=\"data:{mime};base64,{data}\" alt=\"{alt}\"><figcaption>{caption}</figcaption></figure>",
                alt = escape_html(&figure.caption),
                caption = escape_html(&figure.caption),
            );
        }
        Err(why) => {
            let _ = writeln!(out, "<p class=\"missing\">{}</p>", escape_html(why));
        }
    }
}

/// A warning for a study run with `--quick` (study.json says so): its
/// figures are a smoke test, not the study's (plain text, no markup).
fn quick_note(study: &Study) -> Option<String> {
    use crate::experiments::{QUICK_TEST, QUICK_TRAIN};
    let quick = study.summary.as_ref()?.get("quick")?.as_bool()?;
    quick.then(|| {
        format!(
            "Quick mode (--quick): every run trained on at most {QUICK_TRAIN} training and \
             {QUICK_TEST} test images for a few epochs. These results are a smoke test, not \
             comparable with the seed report's; the stage titles name the full study's settings."
        )
    })
}

fn render_html(study: &Study, runs: &[Run]) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        out,
        "<title>vcortex report</title>\n<style>{CSS}</style>\n</head>\n<body>"
    );
    out.push_str("<h1>vcortex report</h1>\n");
    out.push_str("<p class=\"muted\">Six classic MNIST experiments (CNNs A1-A3, denoising autoencoders B1-B3) \
                  reproduced on the CPU, beside the numbers quoted by the seed report.</p>\n");
    if let Some(note) = quick_note(study) {
        let _ = writeln!(out, "<p><strong>{note}</strong></p>");
    }

    out.push_str(
        "<nav><h2 id=\"contents\">Contents</h2><ol>\n<li><a href=\"#overview\">Overview</a></li>\n",
    );
    if !study.figures.is_empty() {
        out.push_str("<li><a href=\"#comparisons\">Comparison figures</a></li>\n");
    }
    for run in runs {
        let _ = writeln!(
            out,
            "<li><a href=\"#{}\">{}</a></li>",
            run.anchor(),
            escape_html(&run.title())
        );
    }
    out.push_str("</ol></nav>\n");

    out.push_str("<h2 id=\"overview\">Overview</h2>\n");
    let env = environment_rows(study, runs);
    html_table(&mut out, Some("Machine"), &["Property", "Value"], &env);
    if runs.is_empty() {
        out.push_str("<p class=\"missing\">No run folders (with a summary.json) were found.</p>\n");
    } else {
        let summary = overview_rows(runs);
        html_table(&mut out, Some("Results"), &OVERVIEW_HEADER, &summary);
    }
    let stages = stage_rows(study, runs);
    if !stages.is_empty() {
        let caption = format!(
            "Stages and wall time (total {})",
            total_seconds(study, runs)
        );
        html_table(
            &mut out,
            Some(&caption),
            &["Stage", "Title", "Wall time", "Command"],
            &stages,
        );
    }
    let commands: Vec<String> = stages
        .iter()
        .map(|s| s[3].clone())
        .filter(|c| c != "-")
        .collect();
    if !commands.is_empty() {
        out.push_str("<h3>Exact commands</h3>\n<pre>");
        for command in &commands {
            out.push_str(&escape_html(command));
            out.push('\n');
        }
        out.push_str("</pre>\n");
    }

    if !study.figures.is_empty() {
        out.push_str("<h2 id=\"comparisons\">Comparison figures</h2>\n");
        for figure in &study.figures {
            html_figure(&mut out, figure);
        }
    }

    for run in runs {
        let _ = writeln!(
            out,
            "<section>\n<h2 id=\"{}\">{}</h2>",
            run.anchor(),
            escape_html(&run.title())
        );
        let _ = writeln!(
            out,
            "<p class=\"muted\">Run folder <code>{}</code></p>",
            escape_html(&run.folder)
        );
        out.push_str("<div class=\"side\">\n<div>\n");
        let settings = settings_rows(run);
        html_table(&mut out, Some("Settings"), &["Setting", "Value"], &settings);
        out.push_str("</div>\n<div>\n");
        let (reference_label, results) = results_rows(run);
        let caption = match reference_label {
            Some(label) => format!("Results (seed report column: {label})"),
            None => "Results".to_string(),
        };
        let results: Vec<Vec<String>> =
            results.into_iter().map(|(a, b, c)| vec![a, b, c]).collect();
        if results.is_empty() {
            out.push_str("<p class=\"muted\">No results recorded.</p>\n");
        } else {
            html_table(
                &mut out,
                Some(&caption),
                &["", "vcortex", "seed report"],
                &results,
            );
        }
        out.push_str("</div>\n</div>\n");
        let command = run.text("command");
        if command != "-" {
            let _ = writeln!(
                out,
                "<p>Command: <code>{}</code></p>",
                escape_html(&command)
            );
        }
        for figure in &run.figures {
            html_figure(&mut out, figure);
        }
        if let Some(metrics) = &run.metrics {
            let extra = match metrics.truncated_from {
                Some(total) => format!(", first {} of {total}", metrics.rows.len()),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "<details><summary>Metrics per epoch ({} rows{extra})</summary>",
                metrics.rows.len()
            );
            let header: Vec<&str> = metrics.header.iter().map(String::as_str).collect();
            html_table(&mut out, None, &header, &metrics.rows);
            out.push_str("</details>\n");
        }
        out.push_str("</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn md_table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let cells = |cells: &mut dyn Iterator<Item = String>| {
        let inner: Vec<String> = cells.collect();
        format!("| {} |\n", inner.join(" | "))
    };
    out.push_str(&cells(&mut header.iter().map(|h| escape_markdown(h))));
    out.push_str(&cells(&mut header.iter().map(|_| "---".to_string())));
    for row in rows {
        out.push_str(&cells(&mut row.iter().map(|c| {
            if c.is_empty() {
                " ".into()
            } else {
                escape_markdown(c)
            }
        })));
    }
    out.push('\n');
}

fn md_figure(out: &mut String, figure: &Figure) {
    match &figure.data {
        Ok(_) => {
            let _ = writeln!(
                out,
                "![{caption}]({path})\n\n*{caption}*\n",
                caption = escape_markdown(&figure.caption),
                path = markdown_path(&figure.relative)
            );
        }
        Err(why) => {
            let _ = writeln!(out, "> {}\n", escape_markdown(why));
        }
    }
}

fn render_markdown(study: &Study, runs: &[Run]) -> String {
    let mut out = String::from("# vcortex report\n\n");
    if let Some(note) = quick_note(study) {
        let _ = writeln!(out, "**{note}**\n");
    }
    out.push_str("## Overview\n\n");
    let env = environment_rows(study, runs);
    md_table(&mut out, &["Machine", "Value"], &env);
    if runs.is_empty() {
        out.push_str("No run folders (with a summary.json) were found.\n\n");
    } else {
        let summary = overview_rows(runs);
        md_table(&mut out, &OVERVIEW_HEADER, &summary);
    }
    let stages = stage_rows(study, runs);
    if !stages.is_empty() {
        let _ = writeln!(
            out,
            "Stages and wall time (total {}):\n",
            total_seconds(study, runs)
        );
        md_table(
            &mut out,
            &["Stage", "Title", "Wall time", "Command"],
            &stages,
        );
        let commands: Vec<&String> = stages.iter().map(|s| &s[3]).filter(|c| *c != "-").collect();
        if !commands.is_empty() {
            out.push_str("Exact commands:\n\n```\n");
            for command in commands {
                // A fenced block shows text literally; only a fence inside the text could break out.
                out.push_str(&command.replace("```", "'''"));
                out.push('\n');
            }
            out.push_str("```\n\n");
        }
    }
    if !study.figures.is_empty() {
        out.push_str("## Comparison figures\n\n");
        for figure in &study.figures {
            md_figure(&mut out, figure);
        }
    }
    for run in runs {
        let _ = writeln!(out, "## {}\n", escape_markdown(&run.title()));
        let _ = writeln!(out, "Run folder: {}\n", escape_markdown(&run.folder));
        let settings = settings_rows(run);
        md_table(&mut out, &["Setting", "Value"], &settings);
        let (reference_label, results) = results_rows(run);
        if let Some(label) = reference_label {
            let _ = writeln!(out, "Seed report: {}\n", escape_markdown(&label));
        }
        let results: Vec<Vec<String>> =
            results.into_iter().map(|(a, b, c)| vec![a, b, c]).collect();
        if results.is_empty() {
            out.push_str("No results recorded.\n\n");
        } else {
            md_table(&mut out, &["Result", "vcortex", "seed report"], &results);
        }
        let command = run.text("command");
        if command != "-" {
            let _ = writeln!(
                out,
                "Command:\n\n```\n{}\n```\n",
                command.replace("```", "'''")
            );
        }
        for figure in &run.figures {
            md_figure(&mut out, figure);
        }
        if let Some(metrics) = &run.metrics {
            let _ = writeln!(
                out,
                "<details><summary>Metrics per epoch ({} rows)</summary>\n",
                metrics.rows.len()
            );
            let header: Vec<&str> = metrics.header.iter().map(String::as_str).collect();
            md_table(&mut out, &header, &metrics.rows);
            out.push_str("</details>\n\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_puts_a2_before_a10() {
        let mut names = vec!["b1", "a10", "a2", "compare-12k", "a1"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, ["a1", "a2", "a10", "b1", "compare-12k"]);
    }

    #[test]
    fn floats_are_rounded_for_reading() {
        assert_eq!(format_float(0.99123456), "0.9912");
        assert_eq!(format_float(80.2), "80.2");
        assert_eq!(format_float(12345.67), "12345.7");
        assert_eq!(format_float(3.0), "3");
        assert_eq!(format_float(1e-6), "1.000e-6");
    }

    #[test]
    fn csv_handles_quotes_and_blank_lines() {
        let table = parse_csv("epoch,note\n1,\"a, \"\"b\"\"\"\n\n2,c\r\n");
        assert_eq!(table.header, ["epoch", "note"]);
        assert_eq!(table.rows, [vec!["1", "a, \"b\""], vec!["2", "c"]]);
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape_html("<b a=\"x\">&'"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(escape_markdown("a|b<i>_c"), "a\\|b&lt;i&gt;\\_c");
        assert_eq!(markdown_path("a1/my fig(1).png"), "a1/my%20fig%281%29.png");
    }
}
