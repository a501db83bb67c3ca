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
    let (imgs, labs) = data(640);
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

/// 4 vs 40 batches: per-run allocations only (the shuffle order grows by
/// capacity, not count). A small slack covers thread start-up.
fn assert_flat(model: &str) {
    allocations(64, model); // warm up rayon's global state and lazy statics
    let (few, many) = (allocations(64, model), allocations(640, model));
    assert!(
        many <= few + 8,
        "{model}: {few} allocations for 4 batches, {many} for 40"
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
