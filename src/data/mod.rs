//! Datasets: IDX files (MNIST and any dataset of the same form), memory-mapped.
//!
//! PLACEHOLDER for issue 2: only the `Split` view below is fixed; the loader
//! (`Dataset::load`) that produces it lands with the foundation work.

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
