//! One packing of op(B) shared by every part of a parallel product.
//!
//! The parallel entry splits a tall product by rows; each part packs its own
//! rows of A, but every part needs all of B. Packed by each part alone, B
//! is packed once per thread (1024^3 on 2 threads: each thread packed 4 MiB
//! of A or B beside its own half of the other). Here the parts pack each
//! (jc, pc) block of B together into one buffer: a block's steps go out in
//! units of [`UNIT_ROWS`] from a shared counter, and a part that runs out
//! of units waits only for units another part has claimed and is packing.
//! No part ever waits for a unit nobody holds, so a part whose thread starts
//! late (or never, until the others finish) cannot stall the product: the
//! first part to arrive simply packs more. Each part computes exactly the
//! tiles it computes alone, from the same packed values, so results do not
//! depend on who packed what.

use super::Line;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

/// Steps (rows of a B stored k x n) of every panel of a block per claimed
/// unit: whole rows of the source, read start to end as the per-part
/// packing reads them. Units of 4 panels instead (512 bytes of each row,
/// rows 4 KiB apart on 1024^3): B's packing took 6.0% of the 2-thread time
/// against 4.6% (perf), and the product 0.976 of `gemm` against 1.016.
pub(super) const UNIT_ROWS: usize = 32;

/// Largest shared packing (floats): 64 MiB, a k x n of 4096 x 4096. Larger
/// products keep the per-part packing rather than hold that much memory.
pub(super) const MAX_FLOATS: usize = 1 << 24;

/// The process's shared packing buffer, kept between calls (allocated per
/// call, its 4 MiB on 1024^3 would be mapped and zeroed afresh every time).
/// A second parallel product that finds it busy packs per part instead.
static BUFFER: Mutex<Vec<Line>> = Mutex::new(Vec::new());

/// Products that packed B together so far (for the tests: a product that
/// finds the buffer busy packs per part and still gives the right result).
static PRODUCTS: AtomicUsize = AtomicUsize::new(0);

/// How many parallel products have shared one packing of B so far.
pub fn products() -> usize {
    PRODUCTS.load(Ordering::Relaxed)
}

/// Spins between yields while waiting for another part's unit.
const SPINS_BEFORE_YIELD: u32 = 1 << 12;

/// One block's units: the next unclaimed one and how many are packed.
#[derive(Default)]
struct UnitCounters {
    next: AtomicUsize,
    done: AtomicUsize,
}

/// The shared packing of one product: `blocks` regions of `block_floats`,
/// each with its unit counters.
pub(super) struct SharedPackedB<'a> {
    _buffer: MutexGuard<'a, Vec<Line>>,
    base: *mut f32,
    block_floats: usize,
    counters: Vec<UnitCounters>,
}

// SAFETY: the parts write disjoint units of the buffer (each unit is claimed
// by exactly one part through its block's `next`) and read a block only
// after its `done` says every unit is written (acquire / release).
unsafe impl Sync for SharedPackedB<'_> {}

impl SharedPackedB<'_> {
    /// The buffer for `blocks` blocks of `block_floats`, or None when it is
    /// too large or in use by another product.
    pub(super) fn try_new(blocks: usize, block_floats: usize) -> Option<SharedPackedB<'static>> {
        let floats = blocks.checked_mul(block_floats)?;
        if floats > MAX_FLOATS {
            return None;
        }
        let mut buffer = match BUFFER.try_lock() {
            Ok(guard) => guard,
            // A product that panicked left whole lines behind: still usable.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let lines = floats.div_ceil(16).max(1);
        if buffer.len() < lines {
            buffer.resize(lines, Line([0.0; 16]));
        }
        let base = buffer.as_mut_ptr() as *mut f32;
        PRODUCTS.fetch_add(1, Ordering::Relaxed);
        Some(SharedPackedB {
            _buffer: buffer,
            base,
            block_floats,
            counters: (0..blocks).map(|_| UnitCounters::default()).collect(),
        })
    }

    /// The start of block `block`'s region.
    pub(super) fn block(&self, block: usize) -> *mut f32 {
        assert!(block < self.counters.len());
        self.base.wrapping_add(block * self.block_floats)
    }

    /// Returns once all `units` units of block `block` are packed, packing
    /// (with `pack_unit`) every unit no other part has claimed yet. Every
    /// part must pass the same `units` for a block, and `pack_unit(u)` must
    /// write only unit u's part of the block.
    pub(super) fn pack_block(&self, block: usize, units: usize, pack_unit: impl Fn(usize)) {
        let UnitCounters { next, done } = &self.counters[block];
        loop {
            let unit = next.fetch_add(1, Ordering::Relaxed);
            if unit >= units {
                break;
            }
            pack_unit(unit);
            done.fetch_add(1, Ordering::Release);
        }
        let mut spins = 0;
        while done.load(Ordering::Acquire) < units {
            core::hint::spin_loop();
            spins += 1;
            if spins == SPINS_BEFORE_YIELD {
                // The part packing the last unit was descheduled: let it run.
                spins = 0;
                std::thread::yield_now();
            }
        }
    }
}
