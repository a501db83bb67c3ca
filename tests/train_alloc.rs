//! Buffers are allocated once per run: the number of heap allocations of a
//! run does not grow with the number of batches. (Own test binary: the
//! counting allocator sees every thread of the process.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use vcortex::data::Split;
use vcortex::kernels::rng::Rng;
use vcortex::model::{Cnn, CnnShape, DaeStack, Mlp};
use vcortex::nn::Sparsity;
use vcortex::train::{pretrain_dae, train_classifier, DaeConfig, DaeScheme, TrainConfig};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn data(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng::new(1);
    let images = (0..n * 64).map(|_| rng.below(256) as u8).collect();
    let labels = (0..n).map(|_| rng.below(4) as u8).collect();
    (images, labels)
}

fn split<'a>(images: &'a [u8], labels: &'a [u8]) -> Split<'a> {
    Split::in_memory(images, labels, 8, 8)
}

/// Allocations of one run training on the first `n` images, one epoch.
fn allocations(n: usize, model: &str) -> usize {
    let (imgs, labs) = data(MANY_BATCHES * 16);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TrainConfig::new("alloc", dir.path());
    cfg.batch_size = 16;
    cfg.threads = 2;
    cfg.train_count = Some(n);
    cfg.test_count = Some(32);
    let (train, test) = (split(&imgs, &labs), split(&imgs, &labs));
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    if model == "mlp" {
        let mut mlp = Mlp::new(&[64, 20, 12, 4], 1);
        train_classifier(&mut mlp, train, test, &cfg, None).unwrap();
    } else if model == "dae" {
        let mut stack = DaeStack::new(&[64, 16, 8], 1);
        let dc = DaeConfig {
            scheme: DaeScheme::ImageSpace,
            layer: 2,
            keep_prob: 0.9,
            sparsity: Some(Sparsity::STUDY),
        };
        pretrain_dae(&mut stack, &dc, train, test, &cfg, None).unwrap();
    } else {
        let shape = CnnShape {
            in_h: 8,
            in_w: 8,
            c1: 3,
            k1: 3,
            c2: 4,
            k2: 2,
            hidden: 6,
            classes: 4,
        };
        let mut model = Cnn::new(shape, 1);
        train_classifier(&mut model, train, test, &cfg, None).unwrap();
    }
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

/// Batches of the long run.
const MANY_BATCHES: usize = 400;

/// 4 vs 400 batches: per-run allocations only (the shuffle order grows by
/// capacity, not count). A run's count moves by up to about 10 from run to
/// run, in either direction (thread start-up, the pools' lazy state): 4-batch
/// runs gave 384-393 and 40-batch runs 383-394 for the MLP, and a loaded CI
/// run once failed the former single-run check (389 against 399, slack 8).
/// So each side is the least of three runs, and a slack of 16 covers what
/// is left (the DAE's long runs take 4 more: a buffer that grows by
/// doubling). One allocation per batch would add 396.
fn assert_flat(model: &str) {
    allocations(64, model); // warm up rayon's global state and lazy statics
    let least = |n: usize| (0..3).map(|_| allocations(n, model)).min().unwrap();
    let (few, many) = (least(64), least(MANY_BATCHES * 16));
    assert!(
        many <= few + 16,
        "{model}: {few} allocations for 4 batches, {many} for {MANY_BATCHES}"
    );
}

/// One test for all models: the counter is process-wide, so a second test
/// running (or starting) concurrently would add its allocations. The CNN's
/// conv kernels keep their packing buffers in the chunk workspace's
/// `ConvScratch`, which grows during the first batch only.
#[test]
fn allocations_do_not_grow_with_batches() {
    assert_flat("mlp");
    assert_flat("dae");
    assert_flat("cnn");
}
