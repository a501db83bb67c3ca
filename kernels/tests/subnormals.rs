//! `flush_subnormals_on_this_thread` changes how this thread rounds subnormals
//! and nothing else.

use std::hint::black_box;
use vcortex_kernels::flush_subnormals_on_this_thread;

/// 1e-30 * 1e-10 = 1e-40 is subnormal in f32 (below 1.18e-38).
fn tiny_product() -> f32 {
    black_box(1e-30f32) * black_box(1e-10f32)
}

#[test]
fn flushing_zeroes_subnormal_results_and_inputs_only_on_its_thread() {
    // A fresh thread starts in the default mode: gradual underflow.
    let before = std::thread::spawn(tiny_product).join().unwrap();
    assert!(before > 0.0 && before < f32::MIN_POSITIVE, "{before:e}");

    let (flushed, subnormal_input, normal, supported) = std::thread::spawn(|| {
        let supported = flush_subnormals_on_this_thread();
        // DAZ: a subnormal operand reads as zero.
        let sub = f32::from_bits(1); // the smallest subnormal, 1.4e-45
        let input = black_box(sub) * black_box(1e30f32);
        let normal = black_box(1e-20f32) * black_box(1e-10f32);
        (tiny_product(), input, normal, supported)
    })
    .join()
    .unwrap();
    if supported {
        assert_eq!(flushed, 0.0);
        assert_eq!(subnormal_input, 0.0);
    }
    // Normal results are untouched.
    assert_eq!(normal, 1e-20f32 * 1e-10f32);

    // Other threads keep their own mode.
    let after = std::thread::spawn(tiny_product).join().unwrap();
    assert_eq!(after.to_bits(), before.to_bits());
}
