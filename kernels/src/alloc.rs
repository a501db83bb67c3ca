//! The `vcortex` binary's global allocator (and its benches'): the system
//! allocator, with every allocation of [`LINE_ALIGNED_MIN_BYTES`] or more
//! placed on a 64-byte cache line, and (on Linux) every allocation of
//! [`HUGE_PAGE_MIN_BYTES`] or more placed on a 2 MiB boundary and advised
//! to use transparent huge pages. Here, beside the kernels, because the
//! kernels are what it serves and its `unsafe` belongs with theirs.
//!
//! Cache lines: glibc serves large blocks from `mmap`, 16 bytes past a page
//! boundary, so a model's flat parameter buffer (and its optimizer state,
//! and the dataset) started 16 bytes into a line: every row of a 784-wide
//! weight matrix (49 lines) straddled two lines at each end, and each
//! vector load or store of a row touched two lines. The trainer's update
//! phase writes the weights as GEMM and sparse-sum output and reads them
//! back transposed. Aligned, the first layer's sparse weight-gradient sum
//! (`sparse_grad_timing`'s block) took 268-292 us instead of 306-329, and
//! the DAE layer's update phase 0.477-0.504 s per epoch instead of
//! 0.506-0.523 (`vcortex bench`, 2 threads, four sets of alternating runs).
//! Smaller blocks keep the system's placement: the per-chunk activations
//! are a few hundred KiB, and aligning everything from 4 KiB or from
//! 128 KiB up measured no better than from 1 MiB (from 128 KiB: DAE and
//! classifier epochs within 2% either way, a CNN epoch 0.747 -> 0.781 s in
//! one set of 4 alternating runs).
//!
//! Huge pages: the kernels walk large blocks across rows (a weight
//! matrix's columns in the M-on-the-lanes product, B's and A's rows 4 KiB
//! apart when a 1024-wide GEMM packs them), touching a new 4 KiB page at
//! almost every step, and the default transparent-huge-page mode here
//! (`madvise`) gives 2 MiB pages only to memory that asks for them. With
//! them, 1024^3 on one thread ran at 174.2 GFLOP/s against 166.2 and on two
//! at 337.3 against 320.8 (medians of 10 `cargo bench --bench gemm` table
//! runs alternating with the build before; `gemm`'s operands are the same
//! blocks, so its ratio did not move), and the DAE layer's decoder 3%
//! faster. A block that is not a whole huge page keeps 4 KiB pages in its
//! tail; a system without them ignores the advice.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this many bytes are aligned to 64.
pub const LINE_ALIGNED_MIN_BYTES: usize = 1 << 20;

/// Allocations of at least this many bytes are aligned to [`HUGE_PAGE`]
/// and advised to use huge pages (where [`HUGE_PAGES`] is true): a smaller
/// block cannot hold a whole huge page.
pub const HUGE_PAGE_MIN_BYTES: usize = 2 << 20;

/// The transparent huge page of x86-64 and of aarch64 with 4 KiB pages.
pub const HUGE_PAGE: usize = 2 << 20;

/// Whether this build asks for huge pages: Linux on x86-64 and aarch64,
/// where `MADV_HUGEPAGE` is 14 (other targets keep 4 KiB pages and only the
/// line alignment).
pub const HUGE_PAGES: bool = cfg!(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
));

/// The cache line: 64 bytes on every x86-64 and most ARM cores.
const LINE: usize = 64;

/// [`System`], with large blocks on cache lines and the largest on huge
/// pages (see the module docs). Declared as `#[global_allocator]` by the
/// `vcortex` binary and benches.
pub struct LargeBlocksAligned;

/// The layout actually requested from the system: `layout`, with its
/// alignment raised for large blocks. Deterministic in `layout`, so
/// `dealloc` and `realloc` find the layout the block was allocated with.
fn widen(layout: Layout) -> Layout {
    let align = if on_huge_pages(layout) {
        HUGE_PAGE
    } else if layout.size() >= LINE_ALIGNED_MIN_BYTES {
        LINE
    } else {
        return layout;
    };
    if layout.align() >= align {
        return layout;
    }
    // Fails only for sizes within an alignment of isize::MAX, which no
    // system can allocate: the original layout then fails as before.
    Layout::from_size_align(layout.size(), align).unwrap_or(layout)
}

/// Whether `widen` puts a block of `layout` on huge pages.
fn on_huge_pages(layout: Layout) -> bool {
    HUGE_PAGES && layout.size() >= HUGE_PAGE_MIN_BYTES
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
extern "C" {
    /// The C library's `madvise(2)`.
    fn madvise(
        addr: *mut core::ffi::c_void,
        len: usize,
        advice: core::ffi::c_int,
    ) -> core::ffi::c_int;
}

/// Asks the kernel to back the block at `block` (from `widen(layout)`, so
/// on a huge page) with huge pages. Advice only: the block is valid either
/// way, and a system without transparent huge pages refuses it (the test
/// checks that the advice took, in /proc/self/smaps).
fn advise_huge_pages(block: *mut u8, layout: Layout) {
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        const MADV_HUGEPAGE: core::ffi::c_int = 14;
        if block.is_null() || !on_huge_pages(layout) {
            return;
        }
        // The length is rounded up to whole 4 KiB pages, as the kernel
        // does itself; a page shared with a neighbouring block only gets
        // the same advice.
        let len = layout.size().next_multiple_of(4096);
        // SAFETY: `block` starts a live allocation of `layout.size()`
        // bytes on a page boundary; madvise reads and writes no memory and
        // only changes how the kernel backs the pages.
        unsafe { madvise(block.cast(), len, MADV_HUGEPAGE) };
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    {
        let _ = (block, layout);
    }
}

// SAFETY: every method forwards to `System` with the layout `widen` gives,
// which only ever raises the alignment (so the block satisfies the caller's
// layout too), and `widen` is a pure function of the caller's layout, so a
// block is always freed or resized with the layout it was allocated with.
// The huge-page advice changes no contents.
unsafe impl GlobalAlloc for LargeBlocksAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `widen` keeps the size (non-zero, as the caller promised).
        let block = unsafe { System.alloc(widen(layout)) };
        advise_huge_pages(block, layout);
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !on_huge_pages(layout) {
            // SAFETY: as for `alloc`.
            return unsafe { System.alloc_zeroed(widen(layout)) };
        }
        // Advise before the zeroing touches the pages, so that they are
        // faulted in as huge pages (System zeroes over-aligned blocks with
        // a write too, so this costs nothing more).
        // SAFETY: as for `alloc`; the block holds `layout.size()` bytes.
        unsafe {
            let block = System.alloc(widen(layout));
            if !block.is_null() {
                advise_huge_pages(block, layout);
                std::ptr::write_bytes(block, 0, layout.size());
            }
            block
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with `layout`, i.e. from System
        // with `widen(layout)`.
        unsafe { System.dealloc(ptr, widen(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = widen(layout);
        // SAFETY: the caller promises a valid `new_size` for `layout`'s
        // alignment, so the layout exists.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = widen(new_layout);
        if old.align() == new.align() && !on_huge_pages(new_layout) {
            // SAFETY: `ptr` is System's block of layout `old`; the new
            // layout keeps its alignment.
            return unsafe { System.realloc(ptr, old, new_size) };
        }
        // Crossing a threshold changes the alignment, and a block on huge
        // pages needs the advice before it is written: move the block.
        // SAFETY: `new` has a non-zero size; both blocks hold at least
        // min(old, new) bytes; `ptr` is freed with the layout it had.
        unsafe {
            let moved = System.alloc(new);
            if !moved.is_null() {
                advise_huge_pages(moved, new_layout);
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                System.dealloc(ptr, old);
            }
            moved
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates through `LargeBlocksAligned` directly (the test binary keeps the
    /// default allocator), checking alignment and contents across resizes
    /// that cross the threshold both ways.
    #[test]
    fn large_blocks_on_lines_and_resizes_keep_contents() {
        let a = LargeBlocksAligned;
        let small = Layout::from_size_align(1000, 4).unwrap();
        let big = LINE_ALIGNED_MIN_BYTES + 4;
        // SAFETY: every block is used within its size and freed once with
        // the layout it currently has.
        unsafe {
            let p = a.alloc(small);
            assert!(!p.is_null());
            for i in 0..1000 {
                *p.add(i) = (i % 251) as u8;
            }
            let p = a.realloc(p, small, big);
            assert!(!p.is_null());
            assert_eq!(p as usize % LINE, 0, "grown past the threshold");
            assert!((0..1000).all(|i| *p.add(i) == (i % 251) as u8));
            *p.add(big - 1) = 7;
            let big_layout = Layout::from_size_align(big, 4).unwrap();
            let p = a.realloc(p, big_layout, 2 * big);
            assert_eq!(p as usize % LINE, 0, "grown above the threshold");
            assert!((0..1000).all(|i| *p.add(i) == (i % 251) as u8));
            assert_eq!(*p.add(big - 1), 7);
            let p = a.realloc(p, Layout::from_size_align(2 * big, 4).unwrap(), 500);
            assert!((0..500).all(|i| *p.add(i) == (i % 251) as u8));
            a.dealloc(p, Layout::from_size_align(500, 4).unwrap());

            let z = a.alloc_zeroed(big_layout);
            assert_eq!(z as usize % LINE, 0);
            assert!((0..big).step_by(4099).all(|i| *z.add(i) == 0));
            a.dealloc(z, big_layout);

            // A caller asking for more than a line keeps its alignment.
            let page = Layout::from_size_align(big, 4096).unwrap();
            let q = a.alloc(page);
            assert_eq!(q as usize % 4096, 0);
            a.dealloc(q, page);
        }
    }

    /// Blocks from [`HUGE_PAGE_MIN_BYTES`] up start on a huge page and keep
    /// their contents across resizes into, within and out of that range;
    /// zeroed ones are zero.
    #[test]
    fn huge_blocks_on_huge_pages_and_resizes_keep_contents() {
        let a = LargeBlocksAligned;
        let align = if HUGE_PAGES { HUGE_PAGE } else { LINE };
        let mid = HUGE_PAGE_MIN_BYTES - 100;
        let huge = HUGE_PAGE_MIN_BYTES + 12_345;
        let pattern = |i: usize| (i % 253) as u8;
        // SAFETY: every block is used within its size and freed once with
        // the layout it currently has.
        unsafe {
            let mid_layout = Layout::from_size_align(mid, 8).unwrap();
            let p = a.alloc(mid_layout);
            assert_eq!(p as usize % LINE, 0, "below the huge threshold: a line");
            for i in 0..mid {
                *p.add(i) = pattern(i);
            }
            let p = a.realloc(p, mid_layout, huge);
            assert_eq!(p as usize % align, 0, "grown to a huge block");
            assert!((0..mid).all(|i| *p.add(i) == pattern(i)));
            for i in mid..huge {
                *p.add(i) = pattern(i);
            }
            let huge_layout = Layout::from_size_align(huge, 8).unwrap();
            let p = a.realloc(p, huge_layout, 2 * huge);
            assert_eq!(p as usize % align, 0, "grown within the huge range");
            assert!((0..huge).all(|i| *p.add(i) == pattern(i)));
            let p = a.realloc(p, Layout::from_size_align(2 * huge, 8).unwrap(), mid);
            assert_eq!(p as usize % LINE, 0, "shrunk below the huge threshold");
            assert!((0..mid).all(|i| *p.add(i) == pattern(i)));
            a.dealloc(p, mid_layout);

            let z = a.alloc_zeroed(huge_layout);
            assert_eq!(z as usize % align, 0);
            assert!((0..huge).all(|i| *z.add(i) == 0));
            // Where the kernel has transparent huge pages and shows the
            // process's mappings (not every sandbox does).
            if HUGE_PAGES
                && std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists()
                && !under_user_mode_emulator()
            {
                if let Some(advised) = advised_huge(z as usize) {
                    assert!(
                        advised,
                        "the block's mapping does not carry the huge-page advice (smaps VmFlags hg)"
                    );
                }
            }
            a.dealloc(z, huge_layout);
        }
    }

    /// Whether this test may run under a user-mode emulator (CI runs the
    /// aarch64 build under qemu-user), which ignores `madvise` advice and
    /// writes its own /proc/self/smaps, without `hg`: `.ci/run` says so in
    /// `VCORTEX_EMULATED`, or the kernel's own architecture
    /// (/proc/sys/kernel/arch, Linux 6.1 on) is not the one the test was
    /// built for. Without that file, only x86-64 builds are taken as native.
    fn under_user_mode_emulator() -> bool {
        if std::env::var_os("VCORTEX_EMULATED").is_some() {
            return true;
        }
        match std::fs::read_to_string("/proc/sys/kernel/arch") {
            Ok(arch) => arch.trim() != std::env::consts::ARCH,
            Err(_) => std::env::consts::ARCH != "x86_64",
        }
    }

    /// Whether the mapping holding `addr` was advised to use huge pages:
    /// its `VmFlags` line in /proc/self/smaps has `hg` (None where the file
    /// cannot be read).
    fn advised_huge(addr: usize) -> Option<bool> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = first.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return Some(flags.split_whitespace().any(|f| f == "hg"));
                }
            }
        }
        Some(false)
    }
}
