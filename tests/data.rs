//! The loader on the shipped MNIST files, and on small synthetic datasets that
//! exercise the gz cache, the checksum check and every cross-file validation.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};
use vcortex::data::{
    CacheLocation, DataError, Dataset, IdxError, LoadOptions, TEST_IMAGES, TEST_LABELS,
    TRAIN_IMAGES, TRAIN_LABELS,
};

fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

#[test]
fn shipped_mnist_has_the_published_figures() {
    let dataset = Dataset::load(&mnist_dir()).expect("shipped MNIST loads");
    let (train, test) = (dataset.train(), dataset.test());
    assert_eq!((train.count, train.rows, train.cols), (60000, 28, 28));
    assert_eq!((test.count, test.rows, test.cols), (10000, 28, 28));
    assert_eq!(train.images.len(), 60000 * 784);
    assert_eq!(test.labels.len(), 10000);
    assert_eq!(
        train.label_counts(),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        test.label_counts(),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(&train.labels[..10], &[5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    assert_eq!(&test.labels[..10], &[7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);

    // Pixel values read independently from the raw files (image, row, col).
    let pixel = |split: &vcortex::data::Split<'_>, i: usize, r: usize, c: usize| {
        split.image(i)[r * split.cols + c]
    };
    assert_eq!(pixel(&train, 0, 0, 0), 0);
    assert_eq!(pixel(&train, 0, 14, 14), 240);
    assert_eq!(pixel(&train, 0, 7, 14), 253);
    assert_eq!(pixel(&train, 0, 5, 12), 3);
    assert_eq!(pixel(&train, 1, 10, 10), 238);
    assert_eq!(pixel(&train, 59999, 14, 14), 97);
    assert_eq!(pixel(&test, 0, 10, 20), 254);
    assert_eq!(pixel(&test, 9999, 14, 14), 18);

    // Exact integer sums; the mean is their ratio, so compare to f64 rounding.
    let sum = |bytes: &[u8]| bytes.iter().map(|&p| u64::from(p)).sum::<u64>();
    assert_eq!(sum(train.images), 1_567_298_545);
    assert_eq!(sum(test.images), 264_923_200);
    assert!((train.pixel_mean() - 1_567_298_545.0 / (47_040_000.0 * 255.0)).abs() < 1e-12);
    assert_eq!(format!("{:.4}", train.pixel_mean()), "0.1307");

    // Subsets as the study takes them: the first n in file order.
    let first = train.take(12000);
    assert_eq!((first.count, first.images.len()), (12000, 12000 * 784));
    assert!(dataset.files().iter().all(|f| f.is_mapped()));
}

/// Bytes of an unsigned-byte IDX file with `dims` and `payload`.
fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(payload);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A valid tiny dataset: `n_train`/`n_test` images of 2x3 with labels `i % 10`.
struct Tiny {
    files: Vec<(&'static str, Vec<u8>)>,
}

impl Tiny {
    fn new(n_train: u32, n_test: u32) -> Tiny {
        let images = |n: u32| {
            let payload: Vec<u8> = (0..n * 6).map(|i| (i * 7 % 256) as u8).collect();
            idx_bytes(&[n, 2, 3], &payload)
        };
        let labels = |n: u32| {
            let payload: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
            idx_bytes(&[n], &payload)
        };
        Tiny {
            files: vec![
                (TRAIN_IMAGES, images(n_train)),
                (TRAIN_LABELS, labels(n_train)),
                (TEST_IMAGES, images(n_test)),
                (TEST_LABELS, labels(n_test)),
            ],
        }
    }

    fn replace(mut self, name: &str, bytes: Vec<u8>) -> Tiny {
        self.files.iter_mut().find(|(n, _)| *n == name).unwrap().1 = bytes;
        self
    }

    fn write_raw(&self, dir: &Path) {
        for (name, bytes) in &self.files {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }

    fn write_gz(&self, dir: &Path) {
        for (name, bytes) in &self.files {
            fs::write(dir.join(format!("{name}.gz")), gzip(bytes)).unwrap();
        }
    }

    fn write_raw_checksums(&self, dir: &Path) {
        let list: String = self
            .files
            .iter()
            .map(|(name, bytes)| format!("{}  {name}\n", sha256_hex(bytes)))
            .collect();
        fs::write(dir.join("SHA256SUMS.raw"), list).unwrap();
    }
}

fn memory_only() -> LoadOptions {
    LoadOptions {
        cache: vec![CacheLocation::Memory],
    }
}

fn beside_only() -> LoadOptions {
    LoadOptions {
        cache: vec![CacheLocation::BesideArchive],
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn raw_files_are_mapped_directly() {
    let dir = tempfile::tempdir().unwrap();
    Tiny::new(5, 3).write_raw(dir.path());
    let dataset = Dataset::load_with(dir.path(), &beside_only()).unwrap();
    assert_eq!(
        (
            dataset.train().count,
            dataset.train().rows,
            dataset.train().cols
        ),
        (5, 2, 3)
    );
    assert_eq!(dataset.test().labels, &[0, 1, 2]);
    assert_eq!(dataset.train().image(1), &[42, 49, 56, 63, 70, 77]);
    assert!(dataset.files().iter().all(|f| f.is_mapped()));
}

#[test]
fn gz_files_are_decompressed_once_beside_the_archive_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::new(4, 2);
    tiny.write_gz(dir.path());
    tiny.write_raw_checksums(dir.path());
    let dataset = Dataset::load_with(dir.path(), &beside_only()).unwrap();
    assert!(dataset.files().iter().all(|f| f.is_mapped()));
    assert_eq!(dataset.train().labels, &[0, 1, 2, 3]);
    for (name, bytes) in &tiny.files {
        assert_eq!(&fs::read(dir.path().join(name)).unwrap(), bytes);
    }
    // No temporary files are left behind (4 archives, 4 copies, the copies'
    // records of their archives and the checksum list); a second load maps
    // the cache.
    let names = file_names(dir.path());
    assert_eq!(names.len(), 13, "{names:?}");
    assert_eq!(names.iter().filter(|n| n.ends_with(".from-gz")).count(), 4);
    let again = Dataset::load_with(dir.path(), &beside_only()).unwrap();
    assert_eq!(again.train().images, dataset.train().images);
}

#[test]
fn a_checksum_mismatch_is_an_error_and_leaves_no_cache_file() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::new(4, 2);
    tiny.write_raw_checksums(dir.path());
    // Same shape, different pixels: structurally valid, wrong digest.
    let tampered = Tiny::new(4, 2).replace(TRAIN_IMAGES, idx_bytes(&[4, 2, 3], &[9; 24]));
    tampered.write_gz(dir.path());
    let err = Dataset::load_with(dir.path(), &beside_only()).unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("train-images-idx3-ubyte.gz"), "{message}");
    assert!(message.contains("SHA256SUMS.raw"), "{message}");
    assert!(!dir.path().join(TRAIN_IMAGES).exists());
    assert!(file_names(dir.path()).iter().all(|n| !n.contains(".tmp")));
}

#[test]
fn memory_cache_serves_unmapped_bytes() {
    let dir = tempfile::tempdir().unwrap();
    Tiny::new(3, 3).write_gz(dir.path());
    let dataset = Dataset::load_with(dir.path(), &memory_only()).unwrap();
    assert!(dataset.files().iter().all(|f| !f.is_mapped()));
    assert_eq!(dataset.test().labels, &[0, 1, 2]);
    assert_eq!(file_names(dir.path()).len(), 4, "nothing written");
}

#[test]
fn unwritable_locations_fall_back_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    Tiny::new(3, 2).write_gz(&data);
    // A cache directory below a regular file cannot be created, even by root.
    let blocker = dir.path().join("blocker");
    fs::write(&blocker, b"").unwrap();
    let cache = dir.path().join("cache");
    let options = LoadOptions {
        cache: vec![
            CacheLocation::Directory(blocker.join("sub")),
            CacheLocation::Directory(cache.clone()),
        ],
    };
    let dataset = Dataset::load_with(&data, &options).unwrap();
    assert!(dataset.files().iter().all(|f| f.is_mapped()));
    let cached = file_names(&cache);
    assert_eq!(cached.len(), 4);
    assert!(cached
        .iter()
        .all(|n| n.len() > 17 && n.as_bytes()[16] == b'-'));
    drop(dataset);
    // Only an unwritable location: the error names it.
    let options = LoadOptions {
        cache: vec![CacheLocation::Directory(blocker.join("sub"))],
    };
    let err = Dataset::load_with(&data, &options).unwrap_err();
    assert!(err.to_string().contains("blocker"), "{err}");
}

/// A file in the cache directory damaged after it was written (truncated
/// here) is made again from its archive, not reported for ever.
#[test]
fn a_damaged_cache_file_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    Tiny::new(3, 2).write_gz(&data);
    let cache = dir.path().join("cache");
    let options = LoadOptions {
        cache: vec![CacheLocation::Directory(cache.clone())],
    };
    let first = Dataset::load_with(&data, &options).unwrap();
    let labels = first.train().labels.to_vec();
    drop(first);
    for name in file_names(&cache) {
        let path = cache.join(name);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    }
    let again = Dataset::load_with(&data, &options).unwrap();
    assert_eq!(again.train().labels, &labels[..]);
    assert!(again.files().iter().all(|f| f.is_mapped()));
}

#[test]
fn a_gzip_bomb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::new(2, 2);
    tiny.write_gz(dir.path());
    // Header claims 2 images of 2x3, stream holds 4 MiB.
    let mut bomb = idx_bytes(&[2, 2, 3], &[0; 12]);
    bomb.resize(4 << 20, 0);
    fs::write(dir.path().join(format!("{TRAIN_IMAGES}.gz")), gzip(&bomb)).unwrap();
    let err = Dataset::load_with(dir.path(), &memory_only()).unwrap_err();
    assert!(matches!(err, DataError::GzipTooLarge { .. }), "{err}");
}

#[test]
fn a_header_claiming_more_than_gzip_can_hold_is_refused_before_decompressing() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::new(2, 2);
    tiny.write_gz(dir.path());
    let liar = idx_bytes(&[60000, 1000, 1000], &[0; 12]);
    fs::write(dir.path().join(format!("{TRAIN_IMAGES}.gz")), gzip(&liar)).unwrap();
    let err = Dataset::load_with(dir.path(), &memory_only()).unwrap_err();
    assert!(matches!(err, DataError::ImplausibleSize { .. }), "{err}");
}

#[test]
fn truncated_and_corrupt_archives_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::new(50, 2);
    tiny.write_gz(dir.path());
    let path = dir.path().join(format!("{TRAIN_IMAGES}.gz"));
    let whole = fs::read(&path).unwrap();
    for cut in [
        0,
        5,
        10,
        20,
        whole.len() / 2,
        whole.len() - 9,
        whole.len() - 1,
    ] {
        fs::write(&path, &whole[..cut]).unwrap();
        let err = Dataset::load_with(dir.path(), &memory_only()).unwrap_err();
        assert!(
            err.to_string().contains("train-images-idx3-ubyte.gz"),
            "cut {cut}: {err}"
        );
    }
    let mut garbled = whole.clone();
    garbled[12..40].fill(0xAA);
    fs::write(&path, &garbled).unwrap();
    assert!(Dataset::load_with(dir.path(), &memory_only()).is_err());
}

#[test]
fn a_truncated_payload_inside_the_archive_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::new(4, 2);
    tiny.write_gz(dir.path());
    let short = idx_bytes(&[4, 2, 3], &[1; 20]);
    fs::write(dir.path().join(format!("{TRAIN_IMAGES}.gz")), gzip(&short)).unwrap();
    let err = Dataset::load_with(dir.path(), &memory_only()).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Idx {
                source: IdxError::LengthMismatch {
                    expected: 40,
                    found: 36
                },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn cross_file_checks_name_the_files() {
    let cases: Vec<(Tiny, &str)> = vec![
        (
            Tiny::new(4, 2).replace(TRAIN_LABELS, idx_bytes(&[3], &[0, 1, 2])),
            "4 images but",
        ),
        (
            Tiny::new(4, 2).replace(TEST_IMAGES, idx_bytes(&[2, 3, 2], &[0; 12])),
            "images are 3x2 but",
        ),
        (
            Tiny::new(4, 2).replace(TEST_LABELS, idx_bytes(&[2], &[3, 10])),
            "label 10 at index 1",
        ),
        (
            Tiny::new(4, 2).replace(TRAIN_IMAGES, idx_bytes(&[4], &[0; 4])),
            "expected an image file",
        ),
        (
            Tiny::new(4, 2).replace(TRAIN_LABELS, idx_bytes(&[4, 1, 1], &[0; 4])),
            "expected a label file",
        ),
    ];
    for (tiny, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        tiny.write_raw(dir.path());
        let message = Dataset::load_with(dir.path(), &beside_only())
            .unwrap_err()
            .to_string();
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("-ubyte"), "names a file: {message}");
        assert!(!message.contains('\n'), "one line: {message}");
    }
}

#[test]
fn missing_files_and_bad_checksum_lists_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = Dataset::load_with(&dir.path().join("absent"), &memory_only()).unwrap_err();
    assert!(matches!(err, DataError::MissingDirectory { .. }), "{err}");

    let tiny = Tiny::new(2, 2);
    tiny.write_raw(dir.path());
    fs::remove_file(dir.path().join(TEST_LABELS)).unwrap();
    let err = Dataset::load_with(dir.path(), &memory_only()).unwrap_err();
    assert!(
        err.to_string().contains("t10k-labels-idx1-ubyte.gz"),
        "{err}"
    );

    tiny.write_raw(dir.path());
    fs::write(dir.path().join("SHA256SUMS.raw"), "not a digest  x\n").unwrap();
    let err = Dataset::load_with(dir.path(), &memory_only()).unwrap_err();
    assert!(
        matches!(err, DataError::ChecksumList { line: 1, .. }),
        "{err}"
    );
}

/// A temporary file that a killed decompression left beside the archive is
/// removed by the next one (its process is gone and nobody writes it);
/// another live process's is kept, and so is a fresh one whose process this
/// one cannot see (another PID namespace).
#[cfg(target_os = "linux")]
#[test]
fn stale_decompression_leftovers_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    Tiny::new(3, 2).write_gz(dir.path());
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let old_file = |name: String, bytes: &[u8]| {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(an_hour_ago).unwrap();
        path
    };
    // Linux pids stay below 2^22: this one never runs.
    let stale = old_file(format!("{TRAIN_IMAGES}.tmp-999999999-0"), &[0; 1000]);
    let live = old_file(format!("{TRAIN_IMAGES}.tmp-1-0"), b"pid 1 always runs");
    let unseen = dir.path().join(format!("{TRAIN_IMAGES}.tmp-999999998-0"));
    fs::write(&unseen, b"being written in another namespace").unwrap();
    let options = LoadOptions {
        cache: vec![CacheLocation::BesideArchive],
    };
    Dataset::load_with(dir.path(), &options).unwrap();
    assert!(!stale.exists());
    assert!(live.exists());
    assert!(unseen.exists());
}

/// A mean over more pixel bytes than allowed reads evenly spaced runs of
/// whole images, and says how many (what `info` prints for a huge file).
#[test]
fn pixel_mean_samples_images_beyond_its_budget() {
    // 10 images of 2x2; image i's pixels all equal 10 i.
    let images: Vec<u8> = (0..10u8).flat_map(|i| [10 * i; 4]).collect();
    let labels = [0u8; 10];
    let split = vcortex::data::Split::in_memory(&images, &labels, 2, 2);
    let all = (1800.0 / (255.0 * 40.0), 10);
    assert_eq!(split.pixel_mean_within(40, 2), all);
    assert_eq!(split.pixel_mean(), all.0);
    // 4 images fit, in 2 runs of 2: images 0, 1 and 5, 6 (sum 4 x 120).
    assert_eq!(split.pixel_mean_within(16, 2), (480.0 / (255.0 * 16.0), 4));
    // 3 fit, in at most 3 runs of 1: images 0, 3 and 6 (sum 4 x 90).
    assert_eq!(split.pixel_mean_within(12, 64), (360.0 / (255.0 * 12.0), 3));
    // Not even one fits: image 0 alone.
    assert_eq!(split.pixel_mean_within(1, 64), (0.0, 1));
    let none = vcortex::data::Split::in_memory(&[], &[], 2, 2);
    assert_eq!(none.pixel_mean_within(1, 64), (0.0, 0));
}

/// A copy decompressed beside its archive follows the archive: kept while
/// the `.gz` holds the same bytes (even rewritten), decompressed again once
/// another dataset's `.gz` replaces it. A raw file with no record of its
/// source is the user's own and stays preferred over its `.gz`.
#[test]
fn a_replaced_archive_is_decompressed_again() {
    let dir = tempfile::tempdir().unwrap();
    let train_count = || {
        let dataset = Dataset::load_with(dir.path(), &beside_only()).unwrap();
        dataset.train().count
    };
    Tiny::new(3, 2).write_gz(dir.path());
    assert_eq!(train_count(), 3);
    let raw = dir.path().join(TRAIN_IMAGES);
    let made = fs::metadata(&raw).unwrap().modified().unwrap();
    Tiny::new(3, 2).write_gz(dir.path());
    assert_eq!(train_count(), 3);
    assert_eq!(fs::metadata(&raw).unwrap().modified().unwrap(), made);
    Tiny::new(5, 2).write_gz(dir.path());
    assert_eq!(train_count(), 5);
    for entry in fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".from-gz") {
            fs::remove_file(path).unwrap();
        }
    }
    Tiny::new(7, 2).write_gz(dir.path());
    assert_eq!(train_count(), 5);
}

/// An archive whose data is whole but followed by bytes that are not gzip is
/// refused, and the message says where the damage is.
#[test]
fn bytes_after_the_gzip_data_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::new(3, 2);
    tiny.write_gz(dir.path());
    let path = dir.path().join(format!("{TRAIN_IMAGES}.gz"));
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(b"\x1f\x8b not a second member");
    fs::write(&path, bytes).unwrap();
    let err = Dataset::load_with(dir.path(), &memory_only()).unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    assert!(err.to_string().contains("after all of the data"), "{err}");
}

/// A dangling link or a loop in place of a file is named as such, not
/// reported as a missing file.
#[cfg(unix)]
#[test]
fn broken_links_are_named() {
    let dir = tempfile::tempdir().unwrap();
    Tiny::new(3, 2).write_raw(dir.path());
    let raw = dir.path().join(TRAIN_IMAGES);
    fs::remove_file(&raw).unwrap();
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &raw).unwrap();
    let err = Dataset::load_with(dir.path(), &memory_only()).unwrap_err();
    assert!(
        err.to_string().contains("cannot follow the symbolic link"),
        "{err}"
    );
    assert!(err.to_string().contains(TRAIN_IMAGES), "{err}");
    fs::remove_file(&raw).unwrap();
    let (a, b) = (
        dir.path().join("a"),
        dir.path().join(format!("{TRAIN_IMAGES}.gz")),
    );
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    let err = Dataset::load_with(dir.path(), &memory_only()).unwrap_err();
    assert!(
        err.to_string().contains("cannot follow the symbolic link"),
        "{err}"
    );
    // A broken link beside a usable file is not in the way.
    Tiny::new(3, 2).write_raw(dir.path());
    let dataset = Dataset::load_with(dir.path(), &memory_only()).unwrap();
    assert_eq!(dataset.train().count, 3);
}
