//! The report builder on a small fake runs folder: embedded images decode to PNGs, report.md's image paths exist,
//! text from the files is escaped, and (where Chromium is installed) the page loads headless.
//!
//! Set `VCORTEX_REPORT_DIR` to a folder to keep the fake runs folder and its report for looking at them (then run
//! with `--test-threads=1`: every test rewrites that folder).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use vcortex::plot::{
    image_grid, line_chart, Colormap, ImageGrid, LineChart, Normalise, Series, Tile,
};
use vcortex::report::{build, ReportError};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
const INJECTION: &str = "<script>alert('x')</script>";

fn accuracy_png(path: &Path, label: &str) {
    let chart = LineChart {
        title: format!("{label}: test accuracy"),
        x_label: "epoch".into(),
        y_label: "test accuracy (fraction)".into(),
        series: vec![Series {
            label: label.into(),
            points: (1..=10)
                .map(|e| (e as f64, 0.9 + 0.008 * e as f64))
                .collect(),
        }],
        y_range: Some((0.85, 1.0)),
        log_y: false,
    };
    line_chart(path, &chart).unwrap();
}

fn filters_png(path: &Path) {
    let grid = ImageGrid {
        title: "conv1 filters".into(),
        tiles: (0..6)
            .map(|i| {
                Tile::new(
                    9,
                    9,
                    (0..81).map(|p| ((p * (i + 1)) % 13) as f32 - 6.0).collect(),
                )
            })
            .collect(),
        columns: 3,
        scale: 6,
        normalise: Normalise::PerTile,
        colormap: Colormap::Diverging,
    };
    image_grid(path, &grid).unwrap();
}

/// Writes a runs folder with two CNN runs (one listing its figures, one not), a nested comparison run whose
/// summary carries hostile text, and a study.json with a comparison figure.
fn fake_runs(root: &Path) {
    let a1 = root.join("a1");
    std::fs::create_dir_all(&a1).unwrap();
    accuracy_png(&a1.join("accuracy.png"), "A1");
    filters_png(&a1.join("filters.png"));
    std::fs::write(
        a1.join("summary.json"),
        r#"{ "name": "a1", "title": "A1: CNN, mini-batch SGD", "model": "cnn",
             "settings": { "learning_rate": 0.05, "batch": 128, "decay": 0.0001, "train": 60000 },
             "seed": 1, "threads": 2, "simd": "avx512f", "epochs_completed": 10,
             "final_test_accuracy": 0.9812, "best_test_accuracy": 0.9825, "best_epoch": 9,
             "first_epoch_reaching_0_97": 4, "final_train_cost": 0.0421, "wall_seconds": 80.2,
             "command": "vcortex run a1", "machine": "test machine",
             "reference": { "label": "seed report, part A", "final_test_accuracy": "~0.99" },
             "results": { "converged_epoch": 8 },
             "figures": [ { "file": "accuracy.png", "caption": "Test accuracy against epoch" },
                          { "file": "filters.png", "caption": "conv1 filters" },
                          { "file": "../../etc/passwd", "caption": "escape attempt" },
                          { "file": "gone.png", "caption": "missing figure" } ],
             "some_new_key": "listed under settings" }"#,
    )
    .unwrap();
    std::fs::write(
        a1.join("metrics.csv"),
        "epoch,test_accuracy,train_cost\n1,0.9,0.3\n2,0.95,0.1\n",
    )
    .unwrap();

    // No figure list: every PNG in the folder is shown. Name sorts after a2 naturally, not as text.
    let a10 = root.join("a10");
    std::fs::create_dir_all(&a10).unwrap();
    accuracy_png(&a10.join("curve.png"), "A10");
    std::fs::write(
        a10.join("summary.json"),
        r#"{ "name": "a10", "title": "A10: minimal" }"#,
    )
    .unwrap();

    let a2 = root.join("a2");
    std::fs::create_dir_all(&a2).unwrap();
    std::fs::write(
        a2.join("summary.json"),
        r#"{ "name": "a2", "title": "A2: momentum", "wall_seconds": 3725 }"#,
    )
    .unwrap();

    let nested = root.join("compare-12k").join("b1");
    std::fs::create_dir_all(&nested).unwrap();
    filters_png(&nested.join("weights.png"));
    let hostile = serde_json::json!({
        "name": "b1",
        "title": format!("B1 {INJECTION}"),
        "settings": { "note": INJECTION, "pipe|cell": "a|b" },
        "command": format!("vcortex run b1 --tag '{INJECTION}'"),
        "figures": [ { "file": "weights.png", "caption": format!("weights {INJECTION}") } ],
    });
    std::fs::write(nested.join("summary.json"), hostile.to_string()).unwrap();
    std::fs::write(
        nested.join("metrics.csv"),
        format!("epoch,note\n1,\"{INJECTION}\"\n"),
    )
    .unwrap();

    accuracy_png(&root.join("compare_accuracy.png"), "all");
    std::fs::write(
        root.join("study.json"),
        r#"{ "machine": "fake 2-core box", "simd": "avx2", "threads": 2, "total_seconds": 5000,
             "stages": [ { "name": "a1", "title": "A1", "wall_seconds": 80.2, "command": "vcortex run a1" },
                         { "name": "b1", "title": "B1", "wall_seconds": 200, "command": "vcortex run b1" } ],
             "figures": [ { "file": "compare_accuracy.png", "caption": "All runs, test accuracy" } ] }"#,
    )
    .unwrap();
}

fn runs_folder() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("VCORTEX_REPORT_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            fake_runs(&dir);
            (None, dir)
        }
        None => {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().to_path_buf();
            fake_runs(&dir);
            (Some(tmp), dir)
        }
    }
}

/// Values of every `attr="..."` inside `<tag ...>` elements (the builder always double-quotes attributes).
fn attribute_values(html: &str, tag: &str, attr: &str) -> Vec<String> {
    let open = format!("<{tag} ");
    let key = format!("{attr}=\"");
    html.match_indices(&open)
        .filter_map(|(at, _)| {
            let element = &html[at..at + html[at..].find('>')?];
            let start = element.find(&key)? + key.len();
            let end = start + element[start..].find('"')?;
            Some(element[start..end].to_string())
        })
        .collect()
}

#[test]
fn html_embeds_every_image_as_png_data_uri() {
    let (_keep, dir) = runs_folder();
    let paths = build(&dir).unwrap();
    assert_eq!(paths.html, dir.join("report.html"));
    let html = std::fs::read_to_string(&paths.html).unwrap();

    let sources = attribute_values(&html, "img", "src");
    // a1: 2 shown figures; a10: 1; b1: 1; study: 1.
    assert_eq!(sources.len(), 5, "{sources:?}");
    for src in &sources {
        let data = src
            .strip_prefix("data:image/png;base64,")
            .unwrap_or_else(|| {
                panic!(
                    "image is not an embedded PNG: {}",
                    &src[..src.len().min(60)]
                )
            });
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert_eq!(&bytes[..8], PNG_MAGIC);
    }
    // Self-contained: nothing is fetched from elsewhere, no scripts.
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(attribute_values(&html, "link", "href").is_empty());
    assert!(!html.contains("<script"), "a <script> tag reached the page");
    // Figures outside the run folder or missing are reported, not embedded.
    assert!(html.contains("leaves the run folder"));
    assert!(html.contains("gone.png could not be read"));
}

#[test]
fn html_has_contents_tables_and_escaped_text() {
    let (_keep, dir) = runs_folder();
    let html = std::fs::read_to_string(build(&dir).unwrap().html).unwrap();
    // Runs in natural order, nested comparison folders included.
    let order: Vec<usize> = [
        "A1: CNN, mini-batch SGD",
        "A2: momentum",
        "A10: minimal",
        "B1 &lt;script&gt;",
    ]
    .iter()
    .map(|t| {
        html.find(&format!("\">{t}"))
            .unwrap_or_else(|| panic!("no heading {t}"))
    })
    .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "runs out of order: {order:?}"
    );
    for expected in [
        "<h2 id=\"contents\">Contents</h2>",
        "href=\"#run-a1\"",
        "fake 2-core box",
        "avx2",
        "vcortex run b1",
        "<details><summary>Metrics per epoch (2 rows)</summary>",
        "<th>vcortex</th><th>seed report</th>",
        "~0.99",
        "converged_epoch",
        "some_new_key",
        "1 h 02 min",
        "Comparison figures",
        "All runs, test accuracy",
        "No results recorded.",
    ] {
        assert!(html.contains(expected), "report.html lacks {expected:?}");
    }
    assert!(!html.contains(INJECTION));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
}

#[test]
fn markdown_has_tables_and_existing_image_paths() {
    let (_keep, dir) = runs_folder();
    let md = std::fs::read_to_string(build(&dir).unwrap().markdown).unwrap();
    let images: Vec<&str> = md
        .match_indices("](")
        .filter(|(at, _)| {
            md[..*at]
                .rfind("![")
                .is_some_and(|open| !md[open..*at].contains('\n'))
        })
        .map(|(at, _)| {
            let rest = &md[at + 2..];
            &rest[..rest.find(')').unwrap()]
        })
        .collect();
    assert_eq!(images.len(), 5, "{images:?}");
    for image in &images {
        assert!(
            dir.join(image).is_file(),
            "report.md references missing {image}"
        );
    }
    assert!(images.contains(&"compare-12k/b1/weights.png"));
    assert!(md.contains("| Result | vcortex | seed report |"));
    assert!(md.contains("| Final test accuracy | 0.9812 | ~0.99 |"));
    // Raw HTML from a summary must not reach the page outside fenced code blocks (which show text literally).
    let outside_fences: String = md.split("```").step_by(2).collect();
    assert!(
        !outside_fences.contains("<script>"),
        "raw HTML from a summary reached report.md"
    );
    assert!(outside_fences.contains("&lt;script&gt;"));
    assert!(md.contains("pipe\\|cell | a\\|b"));
}

#[test]
fn errors_are_typed() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let err = build(&missing).unwrap_err();
    assert!(matches!(err, ReportError::NotAFolder(_)));
    assert!(err.to_string().contains("nope"));

    let run = tmp.path().join("a1");
    std::fs::create_dir(&run).unwrap();
    std::fs::write(run.join("summary.json"), "{ not json").unwrap();
    let err = build(tmp.path()).unwrap_err();
    assert!(matches!(err, ReportError::Json { .. }), "{err:?}");
    assert!(err.to_string().contains("summary.json"), "{err}");
}

#[test]
fn empty_runs_folder_gives_a_page_saying_so() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = build(tmp.path()).unwrap();
    assert!(std::fs::read_to_string(paths.html)
        .unwrap()
        .contains("No run folders"));
    assert!(paths.markdown.is_file());
}

fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

#[test]
fn page_loads_in_headless_chromium() {
    let Some(chromium) = find_on_path(&[
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]) else {
        // note! writes to the stderr handle itself: libtest hides what a
        // passing test prints with eprintln!, and a skip should show.
        vcortex::note!(
            "page_loads_in_headless_chromium SKIPPED: chromium not installed (Debian: apt-get install chromium)"
        );
        return;
    };
    let (_keep, dir) = runs_folder();
    let html = std::fs::read_to_string(build(&dir).unwrap().html).unwrap();
    // The report has no scripts; a probe copy gets one that counts images that failed to decode, which headless
    // Chromium does not otherwise report. The images are data URIs, so the copy may live anywhere.
    let profile = tempfile::tempdir().unwrap();
    let probe_page = profile.path().join("probe.html");
    let probe = "<script>window.addEventListener('load', function () { var bad = 0; \
                 for (var i = 0; i < document.images.length; i++) { var im = document.images[i]; \
                 if (!(im.complete && im.naturalWidth > 0)) bad++; } \
                 document.body.setAttribute('data-image-check', document.images.length + ' images, ' + bad + ' broken'); \
                 });</script></body>";
    assert!(html.contains("</body>"));
    std::fs::write(&probe_page, html.replace("</body>", probe)).unwrap();
    let mut child = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            // Lets the load event fire (and the probe run) before the DOM is dumped.
            "--virtual-time-budget=10000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", probe_page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium is on PATH but could not start");
    // Read both pipes on threads so a chatty browser cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).map(|_| s)
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dom = out.join().unwrap().unwrap();
    let log = err.join().unwrap().unwrap_or_default();
    assert!(
        status.success(),
        "chromium exited with {status}; stderr:\n{log}"
    );
    for heading in [
        "vcortex report",
        "Contents",
        "Overview",
        "A1: CNN, mini-batch SGD",
        "A10: minimal",
    ] {
        assert!(
            dom.contains(heading),
            "rendered DOM lacks {heading:?}; stderr:\n{log}"
        );
    }
    assert!(
        dom.contains("data-image-check=\"5 images, 0 broken\""),
        "not every image loaded; body: {}",
        dom[dom.find("<body").unwrap_or(0)..]
            .chars()
            .take(200)
            .collect::<String>()
    );
    println!("chromium {} rendered the report", chromium.display());
}

#[test]
fn without_study_json_stages_come_from_the_runs() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, seconds) in [("b2", 125.0), ("b1", 30.5)] {
        let run = tmp.path().join(name);
        std::fs::create_dir(&run).unwrap();
        let summary = serde_json::json!({
            "name": name, "wall_seconds": seconds, "command": format!("vcortex run {name}"),
            "simd": "avx512f", "threads": 2, "machine": "box"
        });
        std::fs::write(run.join("summary.json"), summary.to_string()).unwrap();
    }
    let md = std::fs::read_to_string(build(tmp.path()).unwrap().markdown).unwrap();
    assert!(md.contains("| b1 | b1 | 30.5 s | vcortex run b1 |"), "{md}");
    assert!(
        md.contains("| b2 | b2 | 2 min 05 s | vcortex run b2 |"),
        "{md}"
    );
    assert!(md.contains("total 2 min 36 s"), "{md}");
    assert!(md.contains("| simd | avx512f |"), "{md}");
    assert!(md.find("## b1").unwrap() < md.find("## b2").unwrap());
}

proptest::proptest! {
    /// Escaped text has no markup characters left and unescapes to the original.
    #[test]
    fn escape_html_removes_markup(text in "\\PC{0,40}") {
        let escaped = vcortex::report::escape_html(&text);
        proptest::prop_assert!(!escaped.contains(['<', '>', '"', '\'']));
        let unescaped = escaped
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&");
        proptest::prop_assert_eq!(unescaped, text);
    }
}

/// A run that stopped before its planned epochs is marked as such in the
/// overview; a figure that is not a regular file (a named pipe would block
/// the read) is reported, not read.
#[test]
fn incomplete_runs_and_odd_figures_are_marked() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, done: u32| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let summary = format!(
            r#"{{ "name": "{name}", "settings": {{ "epochs": 3 }}, "epochs_completed": {done},
                 "figures": [ {{ "file": "odd.png", "caption": "not a file" }} ] }}"#
        );
        std::fs::write(d.join("summary.json"), summary).unwrap();
        std::fs::create_dir(d.join("odd.png")).unwrap();
    };
    run("stopped", 1);
    run("finished", 3);
    let html = std::fs::read_to_string(build(dir.path()).unwrap().html).unwrap();
    assert!(html.contains("1 of 3 (incomplete)"), "{html}");
    assert_eq!(html.matches("(incomplete)").count(), 1);
    assert!(html.contains("figure odd.png is not a regular file; not shown"));
}

/// A study run with --quick says so at the top of both pages; a full one
/// does not.
#[test]
fn a_quick_study_is_labelled_as_one() {
    for quick in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let study = format!(r#"{{ "title": "study", "stages": [], "quick": {quick} }}"#);
        std::fs::write(dir.path().join("study.json"), study).unwrap();
        let paths = build(dir.path()).unwrap();
        let md = std::fs::read_to_string(&paths.markdown).unwrap();
        let html = std::fs::read_to_string(&paths.html).unwrap();
        for page in [&md, &html] {
            assert_eq!(page.contains("Quick mode (--quick)"), quick, "{page}");
        }
    }
}
