//! GEMM throughput on the model's shapes: our packed kernel against the `gemm`
//! crate (AVX-512 enabled through its `x86-v4` feature) in the same run, on 1
//! thread and on every thread of the rayon pool (2 on this project's machine;
//! `RAYON_NUM_THREADS=16` on a larger one), as GFLOP/s (2mnk / t), fraction of
//! the measured FMA peak and ratio to `gemm`. Criterion reports each
//! benchmark; the summary table after it times ours and `gemm` call by call
//! in turn (medians, and the ratio as the median of the pairs' ratios) so it
//! can be printed in one place and its ratios survive the host's drift. Run
//! with `cargo bench --bench gemm`.

/// The binary's allocator, so that the operands sit where the trainer's
/// would (blocks of 1 MiB and more on cache lines, of 2 MiB and more on huge
/// pages: `vcortex_kernels::alloc`).
#[global_allocator]
static ALLOCATOR: vcortex_kernels::alloc::LargeBlocksAligned =
    vcortex_kernels::alloc::LargeBlocksAligned;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::time::{Duration, Instant};
use vcortex_kernels::gemm::{
    micro_kernel_gflops, sgemm_parallel, sgemm_with_epilogue, Epilogue, KernelPath, Trans,
};
use vcortex_kernels::peak::{measure_fma_peak_all_threads_gflops, measure_fma_peak_gflops};

/// (m, k, n, op(A), op(B)): C is m x n, the shared dimension k.
type Shape = (usize, usize, usize, Trans, Trans);

const N: Trans = Trans::N;
const T: Trans = Trans::T;

/// The shapes: forward layers at batch 128, the two backward forms,
/// and 1024^3.
const SHAPES: [Shape; 8] = [
    (128, 784, 900, N, N),
    (128, 900, 625, N, N),
    (128, 625, 400, N, N),
    (128, 400, 10, N, N),
    (128, 180, 100, N, N),
    (784, 128, 900, T, N),
    (128, 900, 784, N, T),
    (1024, 1024, 1024, N, N),
];

/// The trainer's per-core chunks (half of a 128 batch), single-threaded;
/// 64x900x784, 64x625x900 and 64x400x625 A B are the DAE decoder's `h W` and
/// the MLP's backward `delta W`.
const SMALL_M_SHAPES: [Shape; 10] = [
    (64, 784, 900, N, N),
    (64, 900, 784, N, N),
    (64, 625, 900, N, N),
    (64, 400, 625, N, N),
    (64, 900, 625, N, N),
    (64, 625, 400, N, N),
    (64, 400, 10, N, N),
    (64, 180, 100, N, N),
    (784, 64, 900, T, N),
    (64, 900, 784, N, T),
];

struct Operands {
    shape: Shape,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl Operands {
    fn new(shape: Shape) -> Self {
        let (m, k, n, _, _) = shape;
        let fill = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7 + seed) % 13) as f32 * 0.1 - 0.6)
                .collect()
        };
        Operands {
            shape,
            a: fill(m * k, 1),
            b: fill(k * n, 2),
            c: vec![0.0; m * n],
        }
    }

    fn ours(&mut self, threads: usize) {
        let (m, k, n, ta, tb) = self.shape;
        let lda = if ta == N { k } else { m };
        let ldb = if tb == N { n } else { k };
        let product = if threads == 1 {
            sgemm_with_epilogue
        } else {
            sgemm_parallel
        };
        product(
            ta,
            tb,
            m,
            n,
            k,
            1.0,
            &self.a,
            lda,
            &self.b,
            ldb,
            0.0,
            &mut self.c,
            n,
            Epilogue::NONE,
        );
    }

    fn gemm_crate(&mut self, threads: usize) {
        let (m, k, n, ta, tb) = self.shape;
        // gemm takes (column stride, row stride) per operand.
        let (a_cs, a_rs) = if ta == N {
            (1, k as isize)
        } else {
            (m as isize, 1)
        };
        let (b_cs, b_rs) = if tb == N {
            (1, n as isize)
        } else {
            (k as isize, 1)
        };
        let par = if threads == 1 {
            gemm::Parallelism::None
        } else {
            gemm::Parallelism::Rayon(threads)
        };
        // SAFETY: the strides describe the owned buffers exactly.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                self.c.as_mut_ptr(),
                1,
                n as isize,
                false,
                self.a.as_ptr(),
                a_cs,
                a_rs,
                self.b.as_ptr(),
                b_cs,
                b_rs,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    }
}

fn label(s: &Shape) -> (String, &'static str) {
    let form = match (s.3, s.4) {
        (N, N) => "A B",
        (T, N) => "A^T B",
        (N, T) => "A B^T",
        _ => "A^T B^T",
    };
    (format!("{}x{}x{}", s.0, s.1, s.2), form)
}

/// Times two products call by call in turn (after one warm-up call each)
/// and returns the median seconds of each and the median of the pairs'
/// ratios `t(second) / t(first)`. Alternating keeps the host's drift out of
/// the ratio (on the shared machines measured, the same product's speed
/// moved by a quarter between runs a minute apart), which two loops run one
/// after the other would take in. Each call then finds the caches as the
/// other product left them; with the same operands and C, that costs both
/// alike.
fn paired_medians(mut run: impl FnMut(bool)) -> (f64, f64, f64) {
    let mut time = |second: bool| {
        let t = Instant::now();
        run(second);
        t.elapsed().as_secs_f64()
    };
    time(false);
    time(true);
    let (mut first, mut second, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let start = Instant::now();
    while ratios.len() < 7 || (ratios.len() < 41 && start.elapsed() < Duration::from_millis(800)) {
        let (a, b) = (time(false), time(true));
        first.push(a);
        second.push(b);
        ratios.push(b / a);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut first), median(&mut second), median(&mut ratios))
}

/// Thread counts of the table's rows: one, and the whole global rayon pool
/// (`sgemm_parallel` splits over all of it; `gemm` is told the same count).
fn thread_counts() -> Vec<usize> {
    let pool = rayon::current_num_threads();
    if pool > 1 {
        vec![1, pool]
    } else {
        vec![1]
    }
}

fn summary_table() {
    let counts = thread_counts();
    let pool = *counts.last().expect("at least one thread");
    let peak1 = measure_fma_peak_gflops();
    let peak_pool = measure_fma_peak_all_threads_gflops();
    println!("\nFMA peak: {peak1:.1} GFLOP/s on 1 thread, {peak_pool:.1} on {pool} (measured)");
    let (mr, nr) = KernelPath::NATIVE.tile();
    for kc in [64, 192, 256] {
        let g = micro_kernel_gflops(KernelPath::NATIVE, kc);
        println!(
            "micro-kernel {mr}x{nr} in L1, kc = {kc}: {g:.1} GFLOP/s ({:.1}% of peak)",
            100.0 * g / peak1
        );
    }
    println!(
        "{:<16} {:<8} {:>3} {:>9} {:>7} {:>9} {:>7} {:>6}",
        "m x k x n", "form", "thr", "ours", "%peak", "gemm", "%peak", "ratio"
    );
    let rows = SHAPES
        .iter()
        .flat_map(|s| counts.iter().map(move |&t| (*s, t)))
        .chain(SMALL_M_SHAPES.iter().map(|s| (*s, 1usize)));
    // GEMM_TABLE_ROWS=784x64 (a substring of "m x k x n form tN") keeps
    // only matching rows, for quick comparisons on a busy machine.
    let keep = std::env::var("GEMM_TABLE_ROWS").unwrap_or_default();
    for (shape, threads) in rows {
        let (dims, form) = label(&shape);
        if !format!("{dims} {form} t{threads}").contains(keep.as_str()) {
            continue;
        }
        let mut ops = Operands::new(shape);
        let flops = 2.0 * (shape.0 * shape.1 * shape.2) as f64;
        let (ours_secs, theirs_secs, ratio) = paired_medians(|theirs| {
            if theirs {
                ops.gemm_crate(threads)
            } else {
                ops.ours(threads)
            }
        });
        let (ours, theirs) = (flops / ours_secs / 1e9, flops / theirs_secs / 1e9);
        let peak = if threads == 1 { peak1 } else { peak_pool };
        println!(
            "{dims:<16} {form:<8} {threads:>3} {ours:>9.1} {:>6.1}% {theirs:>9.1} {:>6.1}% {:>6.2}",
            100.0 * ours / peak,
            100.0 * theirs / peak,
            ratio
        );
    }
}

fn bench_gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("sgemm");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(600));
    for shape in SHAPES {
        let (dims, form) = label(&shape);
        group.throughput(criterion::Throughput::Elements(
            (2 * shape.0 * shape.1 * shape.2) as u64,
        ));
        let mut ops = Operands::new(shape);
        for &threads in &thread_counts() {
            let id = format!("{dims} {form} t{threads}");
            group.bench_function(BenchmarkId::new("vcortex", &id), |b| {
                b.iter(|| {
                    ops.ours(threads);
                    black_box(&ops.c);
                })
            });
            group.bench_function(BenchmarkId::new("gemm-crate", &id), |b| {
                b.iter(|| {
                    ops.gemm_crate(threads);
                    black_box(&ops.c);
                })
            });
        }
    }
    group.finish();
    summary_table();
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);
