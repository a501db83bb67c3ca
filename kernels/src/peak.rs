//! A measurement of this core's f32 FMA peak, so benches can report a
//! fraction of peak instead of assuming a clock and port count.

use std::time::Instant;
use wide::f32x16;

/// Independent FMA chains: enough to cover FMA latency (4 cycles) times the
/// FMA ports (2) times some slack, and few enough to stay in registers.
const CHAINS: usize = 12;

/// Measures single-thread f32 FMA throughput in GFLOP/s (2 flops per lane per
/// FMA) with CHAINS independent f32x16 FMA chains. Best of 20 runs of a
/// few milliseconds each, so a busy machine still yields an undisturbed run. Call it from each thread to measure a multi-core peak.
#[doc(hidden)]
pub fn measure_fma_peak_gflops() -> f64 {
    let iters: usize = 200_000;
    let mut best = 0.0f64;
    for _ in 0..20 {
        let mut acc = [f32x16::splat(0.0); CHAINS];
        let x = std::hint::black_box(f32x16::splat(0.999_999));
        let y = std::hint::black_box(f32x16::splat(1e-7));
        let start = Instant::now();
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = a.mul_add(x, y);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(acc);
        let flops = (iters * CHAINS * 16 * 2) as f64;
        best = best.max(flops / secs / 1e9);
    }
    best
}
