//! The loader's typed errors. Each names the file involved and renders as one line.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::idx::IdxError;

/// Why a dataset could not be loaded.
#[derive(Debug)]
pub enum DataError {
    /// An operating-system call on `path` failed.
    Io {
        path: PathBuf,
        /// What was being done, as a verb phrase ("open", "memory-map", ...).
        action: &'static str,
        source: io::Error,
    },
    /// `path` exists but is not a regular file.
    NotAFile { path: PathBuf },
    /// The dataset directory itself does not exist.
    MissingDirectory { path: PathBuf },
    /// Neither the raw file nor its `.gz` exists in the dataset directory.
    MissingFile { dir: PathBuf, name: &'static str },
    /// The IDX content of `path` (a raw file, or the data inside a `.gz`) is malformed.
    Idx { path: PathBuf, source: IdxError },
    /// The gzip stream of `path` is corrupt.
    Gzip { path: PathBuf, source: io::Error },
    /// The `.gz` at `path` holds more data than its IDX header claims (or than
    /// any gzip of its size can hold): refused rather than decompressed.
    GzipTooLarge { path: PathBuf, limit: u64 },
    /// The IDX header inside the `.gz` at `path` claims more bytes than a
    /// gzip file of `archive_len` bytes can hold.
    ImplausibleSize {
        path: PathBuf,
        claimed: usize,
        archive_len: u64,
    },
    /// The decompressed bytes of `path` do not match the checksum list.
    Checksum {
        path: PathBuf,
        list: PathBuf,
        expected: String,
        actual: String,
    },
    /// A line of a checksum list is not `<64 hex digits>  <file name>`.
    ChecksumList { path: PathBuf, line: usize },
    /// No memory for decompressing in memory (the last-resort cache).
    OutOfMemory { path: PathBuf, bytes: usize },
    /// An image file and its label file disagree on the number of examples.
    CountMismatch {
        images: PathBuf,
        labels: PathBuf,
        image_count: usize,
        label_count: usize,
    },
    /// Train and test images differ in shape.
    ShapeMismatch {
        train: PathBuf,
        test: PathBuf,
        train_shape: (usize, usize),
        test_shape: (usize, usize),
    },
    /// A label is not a class index below [`super::NUM_CLASSES`].
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u8,
    },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Io {
                path,
                action,
                source,
            } => write!(f, "{}: cannot {action}: {source}", path.display()),
            DataError::NotAFile { path } => write!(f, "{}: not a regular file", path.display()),
            DataError::MissingDirectory { path } if path.exists() => write!(
                f,
                "{}: not a directory (--data takes the directory that holds the four IDX files)",
                path.display()
            ),
            DataError::MissingDirectory { path } if path.is_relative() => write!(
                f,
                "{}: dataset directory not found (relative to the working directory {}; run \
                 from the repository root or pass --data DIR)",
                path.display(),
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|_| "?".into())
            ),
            DataError::MissingDirectory { path } => {
                write!(f, "{}: dataset directory not found", path.display())
            }
            DataError::MissingFile { dir, name } => write!(
                f,
                "{}: neither {name} nor {name}.gz found in the dataset directory",
                dir.display()
            ),
            DataError::Idx { path, source } => write!(f, "{}: {source}", path.display()),
            DataError::Gzip { path, source } => {
                write!(f, "{}: corrupt gzip data: {source}", path.display())
            }
            DataError::GzipTooLarge { path, limit } => write!(
                f,
                "{}: decompresses to more than the {limit} bytes its IDX header gives (a \
                 corrupt archive, or a file with a wrong header); refusing to decompress \
                 further",
                path.display()
            ),
            DataError::ImplausibleSize {
                path,
                claimed,
                archive_len,
            } => write!(
                f,
                "{}: the IDX header claims {claimed} bytes, more than a gzip file of \
                 {archive_len} bytes can hold (truncated or corrupt archive)",
                path.display()
            ),
            DataError::Checksum {
                path,
                list,
                expected,
                actual,
            } => write!(
                f,
                "{}: SHA-256 of the decompressed data is {actual} but {} lists {expected}",
                path.display(),
                list.display()
            ),
            DataError::ChecksumList { path, line } => write!(
                f,
                "{}: line {line} is not '<64 hex digits>  <file name>'",
                path.display()
            ),
            DataError::OutOfMemory { path, bytes } => write!(
                f,
                "{}: cannot allocate {bytes} bytes to decompress in memory (no writable cache \
                 directory)",
                path.display()
            ),
            DataError::CountMismatch {
                images,
                labels,
                image_count,
                label_count,
            } => write!(
                f,
                "{}: {image_count} images but {} has {label_count} labels",
                images.display(),
                labels.display()
            ),
            DataError::ShapeMismatch {
                train,
                test,
                train_shape,
                test_shape,
            } => write!(
                f,
                "{}: images are {}x{} but {} has {}x{}",
                test.display(),
                test_shape.0,
                test_shape.1,
                train.display(),
                train_shape.0,
                train_shape.1
            ),
            DataError::LabelOutOfRange { path, index, label } => write!(
                f,
                "{}: label {label} at index {index} is not a class in 0..={}",
                path.display(),
                super::NUM_CLASSES - 1
            ),
        }
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataError::Io { source, .. } | DataError::Gzip { source, .. } => Some(source),
            DataError::Idx { source, .. } => Some(source),
            _ => None,
        }
    }
}
