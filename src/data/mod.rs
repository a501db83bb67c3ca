//! Datasets: IDX files (MNIST and any dataset of the same form), memory-mapped.
//!
//! [`Dataset::load`] opens a directory holding the four standard files, raw or
//! gzipped; gzipped ones are decompressed once into a cache (see [`cache`]) and
//! every raw file is memory-mapped, so [`Split`] borrows pixels with no copy.

pub mod cache;
mod dataset;
mod error;
pub mod idx;
pub mod resident;

pub use cache::{CacheLocation, LoadOptions};
pub use dataset::{
    open_dataset_file, Dataset, DEFAULT_DATA_DIR, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES,
    TRAIN_LABELS,
};
pub use error::DataError;
pub use idx::{parse_idx, parse_idx_header, IdxError, IdxFile, IdxHeader, IdxRole};

/// Number of classes; loaded labels are checked to lie in `0..NUM_CLASSES`.
pub const NUM_CLASSES: usize = 10;

/// A borrowed view of images and labels: `count` images of `rows x cols`
/// bytes each, stored contiguously, and one label byte per image.
/// Pixels stay `u8` (scaled to [0, 1] by the consumer, per batch) so that the
/// mapped files are never copied.
#[derive(Clone, Copy, Debug)]
pub struct Split<'a> {
    pub images: &'a [u8],
    pub labels: &'a [u8],
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
}

impl<'a> Split<'a> {
    /// A split over images already in memory (`rows x cols` bytes each, one
    /// label per image), e.g. synthetic data in tests.
    ///
    /// # Panics
    /// If `images` does not hold exactly one `rows x cols` image per label.
    pub fn in_memory(images: &'a [u8], labels: &'a [u8], rows: usize, cols: usize) -> Self {
        assert_eq!(
            images.len(),
            labels.len() * rows * cols,
            "Split::in_memory: {} bytes for {} images of {rows}x{cols}",
            images.len(),
            labels.len()
        );
        Split {
            images,
            labels,
            count: labels.len(),
            rows,
            cols,
        }
    }

    /// Pixels per image.
    pub fn image_len(&self) -> usize {
        self.rows * self.cols
    }

    /// The first `n` images in file order (as the study's subset runs take them).
    /// Panics if n > count; callers validate user input before this.
    pub fn take(&self, n: usize) -> Split<'a> {
        assert!(n <= self.count, "Split::take({n}) of {} images", self.count);
        Split {
            images: &self.images[..n * self.image_len()],
            labels: &self.labels[..n],
            count: n,
            ..*self
        }
    }

    /// Image `i` as bytes.
    pub fn image(&self, i: usize) -> &'a [u8] {
        let len = self.image_len();
        &self.images[i * len..(i + 1) * len]
    }
}

impl Split<'_> {
    /// How many examples of each class. [`Dataset::load`] guarantees every
    /// label is below `NUM_CLASSES`; others (in a hand-made split) are not counted.
    pub fn label_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &label in self.labels {
            if let Some(count) = counts.get_mut(usize::from(label)) {
                *count += 1;
            }
        }
        counts
    }

    /// Mean pixel value scaled to [0, 1] (0 for an empty split).
    pub fn pixel_mean(&self) -> f64 {
        self.pixel_mean_within(usize::MAX, 1).0
    }

    /// Mean pixel value scaled to [0, 1] (0 for an empty split) over at most
    /// `max_bytes` of pixels, and how many images it read: all of them where
    /// they fit, else `runs` evenly spaced runs of consecutive images (fewer
    /// where fewer images fit), so a huge file is summarised in bounded time
    /// with a few long reads rather than many scattered ones.
    pub fn pixel_mean_within(&self, max_bytes: usize, runs: usize) -> (f64, usize) {
        let len = self.image_len();
        if self.count == 0 || len == 0 {
            return (0.0, self.count);
        }
        let fit = (max_bytes / len).max(1);
        // Everything that fits is one run of every image.
        let (runs, per_run) = if fit >= self.count {
            (1, self.count)
        } else {
            let runs = runs.clamp(1, fit);
            (runs, fit / runs)
        };
        // u64 cannot overflow: at most 255 per byte of an addressable slice.
        let sum: u64 = (0..runs)
            .map(|r| {
                let first = r * self.count / runs;
                let run = &self.images[first * len..(first + per_run) * len];
                run.iter().map(|&p| u64::from(p)).sum::<u64>()
            })
            .sum();
        let read = runs * per_run;
        (sum as f64 / (255.0 * (read * len) as f64), read)
    }
}
