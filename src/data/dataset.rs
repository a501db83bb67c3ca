//! A dataset directory in the MNIST layout: four IDX files, raw or gzipped.

use std::path::{Path, PathBuf};

use super::cache::{self, open_archive, ChecksumList, LoadOptions};
use super::error::DataError;
use super::idx::{IdxFile, IdxRole};
use super::{Split, NUM_CLASSES};

/// The standard file names of MNIST, Fashion-MNIST and KMNIST.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// The default dataset directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "data/mnist";

/// One split's image and label files, checked against each other.
#[derive(Debug)]
struct SplitFiles {
    images: IdxFile,
    labels: IdxFile,
    count: usize,
    rows: usize,
    cols: usize,
}

impl SplitFiles {
    fn new(images: IdxFile, labels: IdxFile) -> Result<SplitFiles, DataError> {
        images.check_role(IdxRole::Images)?;
        labels.check_role(IdxRole::Labels)?;
        let (count, rows, cols) = match images.header().dims[..] {
            [count, rows, cols] => (count, rows, cols),
            _ => unreachable!("check_role verified three dimensions"),
        };
        let label_count = labels.header().dims[0];
        if count != label_count {
            return Err(DataError::CountMismatch {
                images: images.path().to_path_buf(),
                labels: labels.path().to_path_buf(),
                image_count: count,
                label_count,
            });
        }
        if let Some(index) = labels
            .data()
            .iter()
            .position(|&l| usize::from(l) >= NUM_CLASSES)
        {
            return Err(DataError::LabelOutOfRange {
                path: labels.path().to_path_buf(),
                index,
                label: labels.data()[index],
            });
        }
        Ok(SplitFiles {
            images,
            labels,
            count,
            rows,
            cols,
        })
    }

    fn split(&self) -> Split<'_> {
        Split {
            images: self.images.data(),
            labels: self.labels.data(),
            count: self.count,
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// A loaded dataset: train and test splits whose pixels stay in the mapped files.
#[derive(Debug)]
pub struct Dataset {
    dir: PathBuf,
    train: SplitFiles,
    test: SplitFiles,
}

impl Dataset {
    /// Loads the dataset in `dir` with the default cache policy (see [`LoadOptions`]).
    pub fn load(dir: &Path) -> Result<Dataset, DataError> {
        Dataset::load_with(dir, &LoadOptions::default())
    }

    /// Loads the dataset in `dir`, decompressing `.gz` files as `options` say.
    /// A raw file is preferred over its `.gz` and mapped directly.
    pub fn load_with(dir: &Path, options: &LoadOptions) -> Result<Dataset, DataError> {
        if !dir.is_dir() {
            return Err(DataError::MissingDirectory {
                path: dir.to_path_buf(),
            });
        }
        let checksums = ChecksumList::read_raw_list(dir)?;
        let open = |name| open_dataset_file(dir, name, &checksums, options);
        let train = SplitFiles::new(open(TRAIN_IMAGES)?, open(TRAIN_LABELS)?)?;
        let test = SplitFiles::new(open(TEST_IMAGES)?, open(TEST_LABELS)?)?;
        if (train.rows, train.cols) != (test.rows, test.cols) {
            return Err(DataError::ShapeMismatch {
                train: train.images.path().to_path_buf(),
                test: test.images.path().to_path_buf(),
                train_shape: (train.rows, train.cols),
                test_shape: (test.rows, test.cols),
            });
        }
        Ok(Dataset {
            dir: dir.to_path_buf(),
            train,
            test,
        })
    }

    /// The training split.
    pub fn train(&self) -> Split<'_> {
        self.train.split()
    }

    /// The test split.
    pub fn test(&self) -> Split<'_> {
        self.test.split()
    }

    /// The directory it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The four files (train images, train labels, test images, test labels),
    /// e.g. to report where each came from.
    pub fn files(&self) -> [&IdxFile; 4] {
        [
            &self.train.images,
            &self.train.labels,
            &self.test.images,
            &self.test.labels,
        ]
    }
}

/// Opens `dir/name` if it exists, else decompresses `dir/name.gz` into the cache.
pub fn open_dataset_file(
    dir: &Path,
    name: &'static str,
    checksums: &ChecksumList,
    options: &LoadOptions,
) -> Result<IdxFile, DataError> {
    let raw = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if raw.exists() {
        // Unless it is an earlier run's copy of a `.gz` replaced since.
        if !(gz.is_file() && cache::beside_cache_is_stale(&raw, &gz)?) {
            return IdxFile::open(&raw);
        }
        crate::note!(
            "note: {} changed since it was decompressed: decompressing it again",
            gz.display()
        );
        cache::remove_beside_cache(&raw)?;
    }
    if gz.exists() {
        // Not opened unless a regular file: a named pipe would block the open.
        if !gz.is_file() {
            return Err(DataError::NotAFile { path: gz });
        }
        return open_archive(&gz, name, checksums, options);
    }
    // Neither is usable: a link that leads nowhere (dangling, or a loop) is
    // named as such, not reported as a missing file.
    for path in [raw, gz] {
        if let (Ok(_), Err(source)) = (std::fs::symlink_metadata(&path), std::fs::metadata(&path)) {
            return Err(DataError::Io {
                path,
                action: "follow the symbolic link",
                source,
            });
        }
    }
    Err(DataError::MissingFile {
        dir: dir.to_path_buf(),
        name,
    })
}
