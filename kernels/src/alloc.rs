//! The `vcortex` binary's global allocator (and its benches'): the system
//! allocator, with every allocation of [`LINE_ALIGNED_MIN_BYTES`] or more
//! placed on a 64-byte cache line. Here, beside the kernels, because the
//! kernels are what it serves and its `unsafe` belongs with theirs.
//!
//! glibc serves large blocks from `mmap`, 16 bytes past a page boundary, so
//! a model's flat parameter buffer (and its optimizer state, and the
//! dataset) started 16 bytes into a line: every row of a 784-wide weight
//! matrix (49 lines) straddled two lines at each end, and each vector load
//! or store of a row touched two lines. The trainer's update phase writes
//! the weights as GEMM and sparse-sum output and reads them back
//! transposed. Aligned, the first layer's sparse weight-gradient sum
//! (`sparse_grad_timing`'s block) took 268-292 us instead of 306-329, and
//! the DAE layer's update phase 0.477-0.504 s per epoch instead of
//! 0.506-0.523 (`vcortex bench`, 2 threads, four sets of alternating runs).
//!
//! Smaller blocks keep the system's placement: the per-chunk activations
//! are a few hundred KiB, and aligning everything from 4 KiB or from
//! 128 KiB up measured no better than from 1 MiB (from 128 KiB: DAE and
//! classifier epochs within 2% either way, a CNN epoch 0.747 -> 0.781 s in
//! one set of 4 alternating runs).

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this many bytes are aligned to 64.
pub const LINE_ALIGNED_MIN_BYTES: usize = 1 << 20;

/// The cache line: 64 bytes on every x86-64 and most ARM cores.
const LINE: usize = 64;

/// [`System`], with large blocks on cache lines (see the module docs).
/// Declared as `#[global_allocator]` by the `vcortex` binary and benches.
pub struct LineAligned;

/// The layout actually requested from the system: `layout`, with its
/// alignment raised to a line for large blocks. Deterministic in `layout`,
/// so `dealloc` and `realloc` find the layout the block was allocated with.
fn widen(layout: Layout) -> Layout {
    if layout.size() >= LINE_ALIGNED_MIN_BYTES && layout.align() < LINE {
        // Fails only for sizes within 64 bytes of isize::MAX, which no
        // system can allocate: the original layout then fails as before.
        Layout::from_size_align(layout.size(), LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every method forwards to `System` with the layout `widen` gives,
// which only ever raises the alignment (so the block satisfies the caller's
// layout too), and `widen` is a pure function of the caller's layout, so a
// block is always freed or resized with the layout it was allocated with.
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `widen` keeps the size (non-zero, as the caller promised).
        unsafe { System.alloc(widen(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(widen(layout)) }
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
        let new = widen(unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) });
        if old.align() == new.align() {
            // SAFETY: `ptr` is System's block of layout `old`; the new
            // layout keeps its alignment.
            return unsafe { System.realloc(ptr, old, new_size) };
        }
        // Crossing the threshold changes the alignment: move the block.
        // SAFETY: `new` has a non-zero size; both blocks hold at least
        // min(old, new) bytes; `ptr` is freed with the layout it had.
        unsafe {
            let moved = System.alloc(new);
            if !moved.is_null() {
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

    /// Allocates through `LineAligned` directly (the test binary keeps the
    /// default allocator), checking alignment and contents across resizes
    /// that cross the threshold both ways.
    #[test]
    fn large_blocks_on_lines_and_resizes_keep_contents() {
        let a = LineAligned;
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
}
