//! Direct convolution and max pooling throughput (issue 4).
//!
//! Prints, per pass, GFLOP/s = 2 * MACs / median time and the fraction of the
//! single-core FMA peak, which is measured here with independent FMA chains.
//! Run: `cargo bench --bench conv` (sample_size 10: short runs).

/// The binary's allocator, so that the operands sit where the trainer's
/// would (blocks of 1 MiB and more on cache lines, of 2 MiB and more on huge
/// pages: `vcortex_kernels::alloc`).
#[global_allocator]
static ALLOCATOR: vcortex_kernels::alloc::LargeBlocksAligned =
    vcortex_kernels::alloc::LargeBlocksAligned;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::time::{Duration, Instant};
use vcortex_kernels::conv::{self, ConvShape};
use vcortex_kernels::gemm::Activation;
use vcortex_kernels::pool;

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
type V = wide::f32x16;
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
type V = wide::f32x8;
const VL: usize = std::mem::size_of::<V>() / 4;

/// One timed pass of a convolution, named.
type Pass<'a> = Box<dyn FnMut() + 'a>;

/// Single-core FMA peak in GFLOP/s: 16 independent FMA chains (enough to cover
/// latency x ports), best of 5 runs.
fn fma_peak_gflops() -> f64 {
    const CHAINS: usize = 16;
    const ITERS: usize = 4_000_000;
    let mut best = 0.0f64;
    for _ in 0..5 {
        let mut acc = [V::splat(1.0); CHAINS];
        let m = black_box(V::splat(0.999_999));
        let a = black_box(V::splat(1e-7));
        let t = Instant::now();
        for _ in 0..ITERS {
            for c in &mut acc {
                *c = c.mul_add(m, a);
            }
        }
        let dt = t.elapsed().as_secs_f64();
        black_box(acc);
        best = best.max((2 * CHAINS * ITERS * VL) as f64 / dt / 1e9);
    }
    best
}

fn median_time(mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..10)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn fill(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

const CONV1: ConvShape = ConvShape {
    batch: 128,
    c_in: 1,
    h: 28,
    w: 28,
    c_out: 15,
    kh: 9,
    kw: 9,
};
const CONV2: ConvShape = ConvShape {
    batch: 128,
    c_in: 15,
    h: 10,
    w: 10,
    c_out: 20,
    kh: 5,
    kw: 5,
};

fn bench(c: &mut Criterion) {
    let peak = fma_peak_gflops();
    println!(
        "SIMD {} | single-core FMA peak {:.1} GFLOP/s",
        vcortex_kernels::SIMD_LEVEL,
        peak
    );
    let mut table = Vec::new();
    let mut group = c.benchmark_group("conv");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (name, base) in [("conv1", CONV1), ("conv2", CONV2)] {
        for batch in [128, 64] {
            let s = base.with_batch(batch);
            let x = fill(s.input_len(), 1);
            let w = fill(s.weight_len(), 2);
            let b = fill(s.c_out, 3);
            let go = fill(s.output_len(), 4);
            let mut y = vec![0.0; s.output_len()];
            let mut gi = vec![0.0; s.input_len()];
            let mut gw = vec![0.0; s.weight_len()];
            let mut gb = vec![0.0; s.c_out];
            let flops = 2.0 * s.macs() as f64;
            // The fused kernels (conv + ReLU + 2x2 max pool, and its backward
            // from the pooled gradient, both gradients) with their own
            // scratch; the argmax comes from a real forward pass.
            let m = s.output_len() / 4;
            let (mut pooled, mut argmax) = (vec![0.0; m], vec![0u32; m]);
            let mut scratch = conv::ConvScratch::default();
            conv::conv2d_forward_maxpool2x2_with(
                &s,
                &x,
                &w,
                &b,
                Activation::Relu,
                &mut pooled,
                &mut argmax,
                &mut scratch,
            );
            // ReLU's derivative: zero where the pooled value is not positive.
            let pooled_grad: Vec<f32> = fill(m, 6)
                .iter()
                .zip(&pooled)
                .map(|(&g, &p)| if p > 0.0 { g } else { 0.0 })
                .collect();
            let (mut pooled_out, mut argmax_out) = (vec![0.0; m], vec![0u32; m]);
            let (mut fgw, mut fgb, mut fgi) = (
                vec![0.0; s.weight_len()],
                vec![0.0; s.c_out],
                vec![0.0; s.input_len()],
            );
            let (mut wgw, mut wgb, mut wgi) = (fgw.clone(), fgb.clone(), fgi.clone());
            let fused_scratch = std::cell::RefCell::new(scratch);
            let mut passes: Vec<(&str, Pass<'_>)> = vec![
                (
                    "forward",
                    Box::new(|| conv::conv2d_forward(&s, &x, &w, &b, &mut y, Activation::Relu)),
                ),
                (
                    "backward_input",
                    Box::new(|| conv::conv2d_backward_input(&s, &go, &w, &mut gi)),
                ),
                (
                    "backward_filter",
                    Box::new(|| conv::conv2d_backward_filter(&s, &x, &go, &mut gw, &mut gb)),
                ),
                (
                    "forward+pool",
                    Box::new(|| {
                        conv::conv2d_forward_maxpool2x2_with(
                            &s,
                            &x,
                            &w,
                            &b,
                            Activation::Relu,
                            &mut pooled_out,
                            &mut argmax_out,
                            &mut fused_scratch.borrow_mut(),
                        )
                    }),
                ),
                (
                    "bwd_from_pool",
                    Box::new(|| {
                        conv::conv2d_backward_from_maxpool2x2_with(
                            &s,
                            &x,
                            &w,
                            &pooled_grad,
                            &argmax,
                            &mut fgw,
                            &mut fgb,
                            Some(&mut fgi),
                            &mut fused_scratch.borrow_mut(),
                        )
                    }),
                ),
                (
                    "bwd_winners",
                    Box::new(|| {
                        conv::conv2d_backward_from_maxpool2x2_winners(
                            &s,
                            &x,
                            &w,
                            &pooled_grad,
                            &argmax,
                            &mut wgw,
                            &mut wgb,
                            Some(&mut wgi),
                            &mut fused_scratch.borrow_mut(),
                        )
                    }),
                ),
            ];
            for (pass, f) in passes.iter_mut() {
                group.bench_function(format!("{name}/b{batch}/{pass}"), |bch| bch.iter(&mut *f));
                let t = median_time(&mut *f);
                // The backward passes from the pooled gradient compute both
                // gradients; the winners' pass is credited with the dense
                // passes' work (it skips their zero terms), so its figure
                // compares with theirs.
                let flops = if pass.starts_with("bwd_") {
                    2.0 * flops
                } else {
                    flops
                };
                let gf = flops / t / 1e9;
                table.push(format!(
                    "{name} b{batch:<3} {pass:<16} {:>8.1} us {:>7.1} GFLOP/s {:>5.1}% of peak",
                    t * 1e6,
                    gf,
                    100.0 * gf / peak
                ));
            }
        }
    }
    // Max pooling at the model's sizes, batch 128: bytes = input + output + argmax.
    for (name, planes, h, w) in [("pool1", 128 * 15, 20, 20), ("pool2", 128 * 20, 6, 6)] {
        let x = fill(planes * h * w, 5);
        let m = planes * (h / 2) * (w / 2);
        let (mut out, mut am, mut gi) = (vec![0.0; m], vec![0u32; m], vec![0.0; planes * h * w]);
        let t = median_time(|| pool::maxpool2x2_forward(planes, h, w, &x, &mut out, &mut am));
        group.bench_function(format!("{name}/forward"), |bch| {
            bch.iter(|| pool::maxpool2x2_forward(planes, h, w, &x, &mut out, &mut am))
        });
        let bytes = (planes * h * w * 4 + m * 8) as f64;
        table.push(format!(
            "{name} forward  {:>8.1} us {:>7.2} GB/s",
            t * 1e6,
            bytes / t / 1e9
        ));
        let go = out.clone();
        let t = median_time(|| pool::maxpool2x2_backward(planes, h, w, &go, &am, &mut gi));
        table.push(format!(
            "{name} backward {:>8.1} us {:>7.2} GB/s",
            t * 1e6,
            bytes / t / 1e9
        ));
    }
    group.finish();
    println!("\n--- medians of 10 single-threaded runs ---");
    for line in table {
        println!("{line}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
