//! The built binary: `info` on the shipped data, and bad datasets giving one
//! `error:` line on stderr, a non-zero exit and no panic.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn vcortex(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vcortex"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs the binary")
}

fn idx_bytes(dims: &[u32], payload_len: usize) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.resize(bytes.len() + payload_len, 0);
    bytes
}

/// A valid raw dataset of 4 train and 2 test images of 28x28.
fn write_tiny_dataset(dir: &Path) {
    fs::write(
        dir.join("train-images-idx3-ubyte"),
        idx_bytes(&[4, 28, 28], 4 * 784),
    )
    .unwrap();
    fs::write(dir.join("train-labels-idx1-ubyte"), idx_bytes(&[4], 4)).unwrap();
    fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx_bytes(&[2, 28, 28], 2 * 784),
    )
    .unwrap();
    fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_bytes(&[2], 2)).unwrap();
}

/// Runs `info` on `dir` and checks the failure is one clean line mentioning `expected`.
fn assert_one_line_error(dir: &Path, expected: &str) {
    let output = vcortex(&["info", "--data", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "must fail: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn info_prints_the_mnist_figures() {
    let output = vcortex(&["--threads", "2", "info"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "60000 images of 28x28",
        "10000 images of 28x28",
        "5923 6742 5958 6131 5842 5421 5918 6265 5851 5949",
        "pixel mean    0.1307",
        vcortex::kernels::SIMD_LEVEL,
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(stdout.contains("threads       2\n"), "{stdout}");
}

#[test]
fn a_valid_tiny_dataset_works_through_data() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_dataset(dir.path());
    let output = vcortex(&["info", "--data", dir.path().to_str().unwrap()]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("4 images of 28x28"));
}

#[test]
fn a_truncated_file_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_dataset(dir.path());
    let path = dir.path().join("train-images-idx3-ubyte");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..1000]).unwrap();
    assert_one_line_error(dir.path(), "train-images-idx3-ubyte: the header implies");
    fs::write(&path, &bytes[..10]).unwrap();
    assert_one_line_error(dir.path(), "truncated IDX header");
}

#[test]
fn a_wrong_magic_file_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_dataset(dir.path());
    let path = dir.path().join("t10k-labels-idx1-ubyte");
    let mut bytes = fs::read(&path).unwrap();
    bytes[..4].copy_from_slice(b"GIF8");
    fs::write(&path, &bytes).unwrap();
    assert_one_line_error(dir.path(), "t10k-labels-idx1-ubyte: bad magic number");
}

#[test]
fn a_count_mismatch_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_dataset(dir.path());
    fs::write(
        dir.path().join("train-labels-idx1-ubyte"),
        idx_bytes(&[3], 3),
    )
    .unwrap();
    assert_one_line_error(dir.path(), "4 images but");
}

#[test]
fn a_missing_directory_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_one_line_error(&dir.path().join("nowhere"), "dataset directory not found");
}

/// A thread count past `MAX_THREADS`, by flag or by RAYON_NUM_THREADS, is
/// refused before any thread starts; the limit itself is accepted.
#[test]
fn too_many_threads_are_refused() {
    for args in [
        &["--threads", "100000", "info"][..],
        &["info", "--threads", "1025"][..],
    ] {
        let output = vcortex(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "must fail: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains("--threads"), "{stderr}");
        assert!(stderr.contains("0..=1024"), "{stderr}");
    }
    // `info` under RAYON_NUM_THREADS=value fails; its stderr.
    let refused_variable = |value: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_vcortex"))
            .arg("info")
            .env("RAYON_NUM_THREADS", value)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("runs the binary");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "must fail: {stderr}");
        stderr
    };
    assert_eq!(
        refused_variable("5000").trim(),
        "error: RAYON_NUM_THREADS=5000: at most 1024 worker threads"
    );
    let stderr = refused_variable("abc");
    assert!(
        stderr.contains("RAYON_NUM_THREADS=abc: not a thread count"),
        "{stderr}"
    );
    let output = vcortex(&["--threads", "1024", "info"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `args` and checks the failure ends in a clean `error:` line holding
/// `expected`, with no panic; returns the stderr.
fn assert_fails_with(args: &[&str], expected: &str) -> String {
    let output = vcortex(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "must fail: {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("error: "), "{args:?}: {stderr}");
    assert!(last.contains(expected), "{args:?}: {stderr}");
    stderr.into_owned()
}

/// Image files of 4 train and 2 test images of `side` x `side`.
fn write_images_of_side(dir: &Path, side: u32) {
    write_tiny_dataset(dir);
    let pixels = (side * side) as usize;
    let train = idx_bytes(&[4, side, side], 4 * pixels);
    fs::write(dir.join("train-images-idx3-ubyte"), train).unwrap();
    let test = idx_bytes(&[2, side, side], 2 * pixels);
    fs::write(dir.join("t10k-images-idx3-ubyte"), test).unwrap();
}

/// Every command that trains or times a model names the file whose images
/// have another size than the models' 28x28, before any work starts
/// (`bench --only cnn-infer` used to index past its buffers instead).
#[test]
fn images_of_another_size_are_refused_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    write_images_of_side(dir.path(), 32);
    let data = dir.path().to_str().unwrap();
    let out = dir.path().join("runs");
    let out = out.to_str().unwrap();
    let expected = "train-images-idx3-ubyte: images are 32x32, the study's models take 28x28";
    for work in ["cnn-infer", "cnn-sgd", "dae1"] {
        let args = ["bench", "--data", data, "--only", work, "--no-profile"];
        assert_fails_with(&args, expected);
    }
    for stage in ["a1", "b1", "all"] {
        let args = ["run", stage, "--data", data, "--out", out, "--no-progress"];
        assert_fails_with(&args, expected);
    }
}

/// A batch larger than the test set only sizes the inference workspace to
/// the test set (a huge one used to abort on the allocation).
#[test]
fn a_huge_inference_batch_is_cut_to_the_test_set() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_dataset(dir.path());
    let data = dir.path().to_str().unwrap();
    let output = vcortex(&[
        "bench",
        "--data",
        data,
        "--only",
        "cnn-infer",
        "--no-profile",
        "--epochs",
        "1",
        "--batch-size",
        "18446744073709551615",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("cnn-infer"));
}

/// `vcortex run a1` on the dataset in `data`, without the progress bar, then
/// `extra`.
fn a1_args<'a>(data: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "a1", "--data", data, "--no-progress"];
    args.extend_from_slice(extra);
    args
}

/// Bad output places and flags the user did not write are reported as what
/// they are.
#[test]
fn output_and_flag_errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_dataset(dir.path());
    let data = dir.path().to_str().unwrap();
    let file = dir.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    let file = file.to_str().unwrap();
    // One epoch of a1 with `extra`, refused with `expected`.
    let check = |extra: &[&str], expected: &str| {
        let extra = [&["--epochs", "1"][..], extra].concat();
        assert_fails_with(&a1_args(data, &extra), expected);
    };
    check(&["--out", file], "exists and is not a directory");
    check(&["--out", "/dev/null"], "exists and is not a directory");
    check(
        &["--lr", "-inf"],
        "--lr must be a positive number, got -inf",
    );
    check(&["--decay", "-0.5"], "--decay must be >= 0");
    // Refused by the argument parser (its message ends in a --help hint).
    let parser_refuses = |extra: &[&str], expected: &str| {
        let output = vcortex(&a1_args(data, extra));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{stderr}"
        );
    };
    // Numbers f32 cannot hold are named as such, not as the 0 they round to.
    parser_refuses(
        &["--lr", "1e-46"],
        "1e-46 is outside the range of 32-bit floats",
    );
    parser_refuses(
        &["--decay", "1e39"],
        "1e39 is outside the range of 32-bit floats",
    );
    // A negative count reaches the number parser (clap would otherwise
    // suggest '-- -1', which is wrong for an option).
    parser_refuses(
        &["--batch-size", "-1"],
        "invalid value '-1' for '--batch-size <N>'",
    );
    // --momentum belongs to b3: a1 has no momentum, a2 compares fixed values.
    for stage in ["a1", "a2"] {
        let args = ["run", stage, "--data", data, "--momentum", "0.5"];
        assert_fails_with(&args, &format!("{stage} has no run it applies to"));
    }
    // --scheme belongs to the stacks of b1 and b3.
    for stage in ["a1", "b2", "b-subset"] {
        let args = ["run", stage, "--data", data, "--scheme", "layer-local"];
        assert_fails_with(&args, &format!("{stage} has no run it applies to"));
    }
    // --jobs shares the threads between the stages of `run all`.
    let args = ["run", "a2", "--data", data, "--jobs", "2"];
    assert_fails_with(
        &args,
        "a2 is one stage, whose runs train one after the other",
    );
    let args = [
        "--threads",
        "2",
        "run",
        "all",
        "--data",
        data,
        "--jobs",
        "3",
    ];
    assert_fails_with(
        &args,
        "--jobs 3 with 2 threads: every stage needs a thread of its own",
    );
    // --data pointing at a file.
    let args = ["run", "a1", "--data", file, "--no-progress"];
    assert_fails_with(&args, "not a directory");
    // The subset stages' own sizes, not a --train-size nobody passed.
    let out = dir.path().join("runs");
    let out_arg = out.to_str().unwrap();
    let args = ["run", "a-subset", "--data", data, "--out", out_arg];
    assert_fails_with(
        &args,
        "this stage uses the first 12000 training images, but",
    );
    // The whole study checks every stage's sizes before the first trains.
    let args = ["run", "all", "--quick", "--data", data, "--out", out_arg];
    assert_fails_with(
        &args,
        "stage a-subset: this stage uses the first 3000 training",
    );
    assert!(!out.join("a1").exists());
    // A refused bench leaves an earlier report where it was.
    let earlier = dir.path().join("earlier.json");
    fs::write(&earlier, b"{\"kept\": true}").unwrap();
    let earlier_arg = earlier.to_str().unwrap();
    let args = [
        "bench",
        "--data",
        data,
        "--json",
        earlier_arg,
        "--epochs",
        "20000",
    ];
    assert_fails_with(&args, "at most 10000");
    assert_eq!(fs::read(&earlier).unwrap(), b"{\"kept\": true}");
    // --json where it cannot be written: refused before the bench runs.
    let args = ["bench", "--data", data, "--json", "/nonexistent-dir/b.json"];
    assert_fails_with(&args, "--json /nonexistent-dir/b.json: cannot write there");
}

/// Through the binary: a refused resume and a busy run or output folder
/// each end in one `error:` line that names the problem, and write nothing.
#[test]
fn refused_resumes_and_busy_folders_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_dataset(dir.path());
    let data = dir.path().to_str().unwrap();
    let out = dir.path().join("runs");
    let out_arg = out.to_str().unwrap();
    let a1 = |extra: &[&'static str]| {
        a1_args(
            data,
            &[&["--out", out_arg, "--batch-size", "2"][..], extra].concat(),
        )
    };
    let first = vcortex(&a1(&["--epochs", "1", "--threads", "2"]));
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let checkpoint = out.join("a1").join("checkpoint.bin");
    let trained = fs::read(&checkpoint).unwrap();
    let one_line = |args: &[&str], expected: &str| {
        let stderr = assert_fails_with(args, expected);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    };
    one_line(
        &a1(&["--epochs", "2", "--resume", "--lr", "0.5"]),
        "trained with lr = 0.05, this run has lr = 0.5",
    );
    // The run folder, then the output folder, held by another process.
    let busy = "another vcortex run is working in this folder";
    for lock in [out.join("a1").join(".lock"), out.join(".lock")] {
        let held = fs::File::create(&lock).unwrap();
        held.lock().unwrap();
        one_line(&a1(&["--epochs", "2", "--resume"]), busy);
        drop(held);
    }
    assert_eq!(fs::read(&checkpoint).unwrap(), trained, "nothing written");
    // Released, the same resume goes on; on another thread count, with a
    // note that the sums round differently from there.
    let resumed = vcortex(&a1(&["--epochs", "2", "--resume", "--threads", "1"]));
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains("trained its first 1 epoch(s) on 2 thread(s) and continues on 1"),
        "{stderr}"
    );
}

/// An empty item of `bench --only` is named as such, not as a missing value;
/// an unknown one keeps clap's list and suggestion.
#[test]
fn bench_only_names_an_empty_item() {
    for list in ["dae1,,mlp", "dae1,", ",mlp", ""] {
        assert_fails_with(
            &["bench", "--only", list],
            "an empty item in the comma-separated list of '--only <WORK>'",
        );
    }
    let output = vcortex(&["bench", "--only", "dae1,dae4"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("invalid value 'dae4'"), "{stderr}");
    assert!(
        stderr.contains("a similar value exists: 'dae3'"),
        "{stderr}"
    );
    assert!(stderr.contains("cnn-sgd, cnn-rmsprop, dae1"), "{stderr}");
}

/// `bench --json /dev/stdout` with standard output redirected to a file
/// adds the JSON after the table instead of replacing the file with it.
#[cfg(target_os = "linux")]
#[test]
fn bench_json_to_a_redirected_stdout_keeps_the_table() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_dataset(dir.path());
    let out = dir.path().join("out.txt");
    fs::write(&out, "kept\n").unwrap();
    let appended = fs::OpenOptions::new().append(true).open(&out).unwrap();
    let data = dir.path().to_str().unwrap();
    let args = [
        "--threads",
        "1",
        "bench",
        "--data",
        data,
        "--only",
        "cnn-infer",
    ];
    let status = Command::new(env!("CARGO_BIN_EXE_vcortex"))
        .args(args)
        .args(["--no-profile", "--json", "/dev/stdout"])
        .stdout(appended)
        .status()
        .unwrap();
    assert!(status.success());
    let text = fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("kept\n"), "{text}");
    let table = text.find("cnn-infer ").expect("the table");
    let json = text.find("\"rows\"").expect("the JSON");
    assert!(table < json, "{text}");
}

/// A named pipe in place of a data file is refused, not opened (opening one
/// blocks until a writer appears).
#[cfg(unix)]
#[test]
fn a_named_pipe_in_place_of_a_data_file_is_refused() {
    for name in ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"] {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_dataset(dir.path());
        fs::remove_file(dir.path().join("train-images-idx3-ubyte")).unwrap();
        let fifo = dir.path().join(name);
        let made = Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            // note!, not eprintln!: libtest hides what a passing test
            // prints that way, and a skip should show.
            vcortex::note!(
                "a_named_pipe_in_place_of_a_data_file_is_refused SKIPPED: mkfifo is not available"
            );
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let dir_arg = dir.path().to_str().unwrap().to_string();
        std::thread::spawn(move || {
            let _ = tx.send(vcortex(&["info", "--data", &dir_arg]));
        });
        let output = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("info returns instead of blocking on the pipe");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("{name}: not a regular file")),
            "{stderr}"
        );
    }
}

/// An image file whose magic announces 4 dimensions is reported as that,
/// raw or compressed, not as a length that follows from misreading it.
#[test]
fn a_wrong_dimension_count_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_dataset(dir.path());
    let path = dir.path().join("train-images-idx3-ubyte");
    let mut bytes = fs::read(&path).unwrap();
    bytes[3] = 4;
    fs::write(&path, &bytes).unwrap();
    let expected = "expected an image file (magic 0x00000803, 3 dimensions) but the header \
                    declares 4 dimensions";
    assert_one_line_error(dir.path(), expected);
    // The same inside a .gz.
    fs::remove_file(&path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &bytes).unwrap();
    fs::write(path.with_extension("gz"), gz.finish().unwrap()).unwrap();
    assert_one_line_error(dir.path(), expected);
}

/// An argument that is not UTF-8 (a path) reaches the error for the path,
/// not a panic while the command line is recorded.
#[cfg(unix)]
#[test]
fn a_non_utf8_path_is_an_error_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let odd = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"data\xff\xfe"));
    let output = Command::new(env!("CARGO_BIN_EXE_vcortex"))
        .args(["run", "a1", "--no-progress", "--data"])
        .arg(&odd)
        .arg("--out")
        .arg(dir.path().join("runs"))
        .output()
        .expect("runs the binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("dataset directory not found"), "{stderr}");
}

/// `report` while a run holds the output folder still builds the report (the
/// user's look at the stages finished so far), says that the run will rebuild
/// it, and leaves no temporary file behind.
#[test]
fn report_beside_a_running_study_says_so() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let held = fs::File::create(out.path().join(".lock")).unwrap();
    held.lock().unwrap();
    let busy = vcortex(&["report", "--out", dir]);
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(busy.status.success(), "{stderr}");
    assert!(stderr.contains("a vcortex run is working in"), "{stderr}");
    assert!(out.path().join("report.html").is_file());
    drop(held);
    let free = vcortex(&["report", "--out", dir]);
    assert!(free.status.success());
    assert!(
        free.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&free.stderr)
    );
    let names: Vec<String> = fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}
