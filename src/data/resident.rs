//! A training run's images and labels copied into memory (the images into
//! memory backed by huge pages where the system allows it).
//!
//! Why: a shuffled epoch reads images at random places of a 47 MB array.
//! Mapped from the cache file in 4 KiB pages, almost every image costs a
//! TLB miss and a page walk on top of its cache misses (prefetching the next
//! images does not hide those); in 2 MiB pages the whole array needs about
//! two dozen TLB entries. Linux grants huge pages to anonymous memory that
//! asks for them (`madvise`, the default transparent-huge-page mode), not
//! to file mappings, hence the copy, made once per training run. The test
//! split and the labels are copied too (8 MB for MNIST's): a run reads them
//! for hours, and a mapped page whose file was truncated or rewritten under
//! the run would raise SIGBUS and kill it without a word.

use memmap2::MmapMut;

use super::Split;

/// A split's images and labels in a copy of their own (the images, where no
/// anonymous mapping could be made, read in place: [`ResidentSplit::split`]
/// then returns them as they were).
pub struct ResidentSplit {
    images: Option<MmapMut>,
    labels: Vec<u8>,
}

impl ResidentSplit {
    /// Copies `split`'s images and labels.
    pub fn of(split: &Split) -> Self {
        ResidentSplit {
            images: huge_page_copy(split.images),
            labels: split.labels.to_vec(),
        }
    }

    /// `split` reading its images and labels from the copy.
    pub fn split<'a>(&'a self, split: Split<'a>) -> Split<'a> {
        Split {
            images: self.images.as_deref().unwrap_or(split.images),
            labels: &self.labels,
            ..split
        }
    }
}

/// `bytes` copied into anonymous memory advised to use huge pages, or None
/// if no such mapping could be made (the caller then reads `bytes` itself).
fn huge_page_copy(bytes: &[u8]) -> Option<MmapMut> {
    if bytes.is_empty() {
        return None;
    }
    let mut map = MmapMut::map_anon(bytes.len()).ok()?;
    // Advice before the first touch, so the pages are faulted in huge. Only
    // a hint: where it is refused, the copy still works in small pages.
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    map.copy_from_slice(bytes);
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_holds_the_same_bytes() {
        let bytes: Vec<u8> = (0..5_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let copy = huge_page_copy(&bytes).expect("anonymous mapping");
        assert_eq!(&copy[..], &bytes[..]);
        assert!(huge_page_copy(&[]).is_none());
        let labels = vec![3u8; 5_000_000 / 784];
        let split = Split {
            images: &bytes[..labels.len() * 784],
            labels: &labels,
            count: labels.len(),
            rows: 28,
            cols: 28,
        };
        let resident = ResidentSplit::of(&split);
        let view = resident.split(split);
        assert_eq!(view.images, split.images);
        assert_eq!(view.labels, split.labels);
        assert_eq!((view.count, view.rows, view.cols), (split.count, 28, 28));
        assert_ne!(view.images.as_ptr(), split.images.as_ptr());
        assert_ne!(view.labels.as_ptr(), split.labels.as_ptr());
    }
}
