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
    let output = Command::new(env!("CARGO_BIN_EXE_vcortex"))
        .arg("info")
        .env("RAYON_NUM_THREADS", "5000")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs the binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "must fail: {stderr}");
    assert_eq!(
        stderr.trim(),
        "error: RAYON_NUM_THREADS=5000: at most 1024 worker threads"
    );
    let output = vcortex(&["--threads", "1024", "info"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
