//! A measurement of this core's f32 FMA peak, so benches can report a
//! fraction of peak instead of assuming a clock and port count.

use std::time::Instant;

// The build's own vector (`lanes`), so that the chains stay in registers:
// with f32x16 everywhere, `wide` split each chain into two ymm halves on
// AVX2 and the 24 halves spilled out of 16 registers (the AVX2 build read
// 88.7-94.4 GFLOP/s per core, below the 179.5 its CNN inference reached on
// 2 threads).
use crate::lanes::{F32s as Vector, LANES};

/// Independent FMA chains: enough to cover FMA latency (4 cycles) times the
/// FMA ports (2) times some slack, and few enough to stay in registers with
/// the two operands (14 of the 16 vector registers of AVX2 and SSE2).
const CHAINS: usize = 12;

/// Measures single-thread f32 FMA throughput in GFLOP/s (2 flops per lane per
/// FMA) with CHAINS independent FMA chains of the build's widest vector.
/// Where the build has no FMA instruction (plain x86-64), `mul_add` is a
/// multiply and an add, and this is the peak of that pair. Best of 20 runs of
/// a few milliseconds each, so a busy machine still yields an undisturbed
/// run. Call it from each thread to measure a multi-core peak.
#[doc(hidden)]
pub fn measure_fma_peak_gflops() -> f64 {
    let iters: usize = 200_000;
    let mut best = 0.0f64;
    for _ in 0..20 {
        let mut acc = [Vector::splat(0.0); CHAINS];
        let x = std::hint::black_box(Vector::splat(0.999_999));
        let y = std::hint::black_box(Vector::splat(1e-7));
        let start = Instant::now();
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = a.mul_add(x, y);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(acc);
        let flops = (iters * CHAINS * LANES * 2) as f64;
        best = best.max(flops / secs / 1e9);
    }
    best
}

/// The FMA peak with every thread of the current rayon pool (the global
/// one, or the pool whose `install` calls this) running the chains at once,
/// summed: cores clock lower when more of them are busy (16 at once on a
/// 16-core Xeon: 2428.6 GFLOP/s, against 16 x 172.8 measured on one), so
/// one thread's figure times the count would overstate the peak.
#[doc(hidden)]
pub fn measure_fma_peak_all_threads_gflops() -> f64 {
    rayon::broadcast(|_| measure_fma_peak_gflops()).iter().sum()
}

#[cfg(test)]
mod tests {
    /// The peak's vector must be the one the kernels use, or `% peak` is
    /// against another machine: the cfgs of `lanes` and of `simd` must agree.
    #[test]
    fn the_peak_runs_on_the_vector_width_of_the_simd_level() {
        let lanes = match crate::SIMD_LEVEL {
            "avx512f" => 16,
            "avx2+fma" => 8,
            _ => 4,
        };
        assert_eq!(super::LANES, lanes, "SIMD level {}", crate::SIMD_LEVEL);
    }
}
