//! Training images copied into memory backed by huge pages where the system
//! allows it.
//!
//! Why: a shuffled epoch reads images at random places of a 47 MB array.
//! Mapped from the cache file in 4 KiB pages, almost every image costs a
//! TLB miss and a page walk on top of its cache misses (prefetching the next
//! images does not hide those); in 2 MiB pages the whole array needs about
//! two dozen TLB entries. Linux grants huge pages to anonymous memory that
//! asks for them (`madvise`, the default transparent-huge-page mode), not
//! to file mappings, hence the copy, made once per training run.

use memmap2::MmapMut;

use super::Split;

/// A training split's images in their own huge-page copy (or, where none
/// could be made, nothing: [`ResidentImages::split`] then returns the split
/// as it was).
pub struct ResidentImages(Option<MmapMut>);

impl ResidentImages {
    /// Copies `split`'s images.
    pub fn of(split: &Split) -> Self {
        ResidentImages(huge_page_copy(split.images))
    }

    /// `split` reading its images from the copy.
    pub fn split<'a>(&'a self, split: Split<'a>) -> Split<'a> {
        match &self.0 {
            Some(copy) => Split {
                images: copy,
                ..split
            },
            None => split,
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
        let resident = ResidentImages::of(&split);
        let view = resident.split(split);
        assert_eq!(view.images, split.images);
        assert_eq!((view.count, view.rows, view.cols), (split.count, 28, 28));
        assert_ne!(view.images.as_ptr(), split.images.as_ptr());
    }
}
