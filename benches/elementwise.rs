//! Throughput of the elementwise, loss, noise and optimizer kernels in bytes
//! moved (reads + writes of the kernel's buffers), at the study's sizes:
//! activations of a 128-image minibatch through a 900-unit layer, 784-pixel
//! reconstructions, and 784 x 900 parameter updates. A few reference (scalar)
//! versions run alongside for scale.
//!
//! `cargo bench --bench elementwise`

/// The binary's allocator, so that the operands sit where the trainer's
/// would (blocks of 1 MiB and more on cache lines, of 2 MiB and more on huge
/// pages: `vcortex_kernels::alloc`).
#[global_allocator]
static ALLOCATOR: vcortex_kernels::alloc::LargeBlocksAligned =
    vcortex_kernels::alloc::LargeBlocksAligned;

use criterion::{
    black_box, criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput,
};
use std::time::Duration;
use vcortex_kernels::rng::Rng;
use vcortex_kernels::{activation, loss, noise, optim, reference};

const BATCH: usize = 128;
const HIDDEN: usize = 900;
const PIXELS: usize = 784;
const ACT: usize = BATCH * HIDDEN;
const PARAMS: usize = PIXELS * HIDDEN;

fn filled(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut v = vec![0.0; n];
    Rng::new(seed).fill_uniform(&mut v, lo, hi);
    v
}

/// Registers one benchmark with a byte throughput of `bytes_per_elem * n`.
fn bench(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    n: usize,
    bytes_per_elem: usize,
    mut f: impl FnMut(),
) {
    g.throughput(Throughput::Bytes((n * bytes_per_elem) as u64));
    g.bench_function(name, |b| b.iter(&mut f));
}

fn elementwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("elementwise");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(700));

    let x0 = filled(ACT, 1, -4.0, 4.0);
    let mut x = x0.clone();
    let mut grad = filled(ACT, 2, -1.0, 1.0);
    let bias = filled(HIDDEN, 3, -0.1, 0.1);
    let mut out = vec![0.0f32; HIDDEN];

    bench(&mut g, "relu_inplace 128x900", ACT, 8, || {
        activation::relu_inplace(black_box(&mut x))
    });
    bench(&mut g, "relu_backward 128x900", ACT, 12, || {
        activation::relu_backward(black_box(&x0), black_box(&mut grad))
    });
    // Re-applying the sigmoid keeps the data in (0, 1): same cost path.
    bench(&mut g, "sigmoid_inplace 128x900", ACT, 8, || {
        activation::sigmoid_inplace(black_box(&mut x))
    });
    bench(&mut g, "reference sigmoid 128x900", ACT, 8, || {
        for v in black_box(&mut x).iter_mut() {
            *v = reference::sigmoid(*v);
        }
    });
    // y(1 - y) = -1 at y = (1 + sqrt 5) / 2, so repeated application keeps
    // the gradient's magnitude (values shrinking into subnormals would
    // measure the CPU's subnormal penalty, not the kernel).
    let golden = vec![1.618_034f32; ACT];
    bench(&mut g, "sigmoid_backward 128x900", ACT, 12, || {
        activation::sigmoid_backward(black_box(&golden), black_box(&mut grad))
    });
    bench(&mut g, "add_bias_rows 128x900", ACT, 8, || {
        activation::add_bias_rows(black_box(&mut x), &bias)
    });
    bench(&mut g, "bias_grad_rows 128x900", ACT, 4, || {
        activation::bias_grad_rows(black_box(&grad), &mut out)
    });
    let pixels: Vec<u8> = (0..BATCH * PIXELS).map(|i| (i * 31 % 256) as u8).collect();
    let mut img = vec![0.0f32; BATCH * PIXELS];
    bench(&mut g, "u8_to_unit_f32 128x784", BATCH * PIXELS, 5, || {
        activation::u8_to_unit_f32(black_box(&pixels), &mut img)
    });

    // Losses.
    let logits = filled(BATCH * 10, 4, -5.0, 5.0);
    let labels: Vec<u8> = (0..BATCH).map(|i| (i % 10) as u8).collect();
    let (mut p, mut pg) = (vec![0.0; BATCH * 10], vec![0.0; BATCH * 10]);
    bench(
        &mut g,
        "softmax_cross_entropy 128x10",
        BATCH * 10,
        12,
        || {
            black_box(loss::softmax_cross_entropy(
                &logits,
                &labels,
                10,
                &mut p,
                &mut pg,
                1.0 / 128.0,
            ));
        },
    );
    let a = filled(BATCH * PIXELS, 5, -8.0, 8.0);
    let t = filled(BATCH * PIXELS, 6, 0.0, 1.0);
    let (mut r, mut rg) = (vec![0.0; BATCH * PIXELS], vec![0.0; BATCH * PIXELS]);
    bench(
        &mut g,
        "sigmoid_binary_cross_entropy 128x784",
        BATCH * PIXELS,
        16,
        || {
            black_box(loss::sigmoid_binary_cross_entropy(
                &a,
                &t,
                &mut r,
                &mut rg,
                1.0 / 128.0,
            ));
        },
    );
    bench(
        &mut g,
        "reference sigmoid_binary_cross_entropy 128x784",
        BATCH * PIXELS,
        16,
        || {
            black_box(reference::sigmoid_binary_cross_entropy(
                &a,
                &t,
                &mut r,
                &mut rg,
                1.0 / 128.0,
            ));
        },
    );
    let h = filled(ACT, 7, 0.01, 0.99);
    let mut rho_hat = vec![0.0; HIDDEN];
    bench(&mut g, "column_means 128x900", ACT, 4, || {
        loss::column_means(black_box(&h), &mut rho_hat)
    });
    bench(&mut g, "kl_sparsity_backward 128x900", ACT, 8, || {
        loss::kl_sparsity_backward(black_box(&mut grad), &rho_hat, 0.05, 0.5, 1.0 / 128.0)
    });

    // Noise.
    let mut rng = Rng::new(8);
    bench(&mut g, "mask_noise 128x784", BATCH * PIXELS, 8, || {
        noise::mask_noise(black_box(&t), &mut img, 0.9, &mut rng)
    });
    bench(&mut g, "mask_noise_u8 128x784", BATCH * PIXELS, 5, || {
        noise::mask_noise_u8(black_box(&pixels), &mut img, 0.9, &mut rng)
    });
    bench(
        &mut g,
        "reference mask_noise 128x784",
        BATCH * PIXELS,
        8,
        || reference::mask_noise(black_box(&t), &mut img, 0.9, &mut rng),
    );

    // Optimizers (tiny learning rates keep the values bounded across runs).
    let mut w = filled(PARAMS, 9, -0.1, 0.1);
    let mut state = filled(PARAMS, 10, 0.0, 0.01);
    let gw = filled(PARAMS, 11, -0.01, 0.01);
    bench(&mut g, "sgd_update 784x900", PARAMS, 12, || {
        optim::sgd_update(black_box(&mut w), &gw, 1e-6, 1e-4)
    });
    bench(&mut g, "momentum_update 784x900", PARAMS, 20, || {
        optim::momentum_update(black_box(&mut w), &mut state, &gw, 1e-6, 1e-4, 0.1)
    });
    bench(&mut g, "rmsprop_update 784x900", PARAMS, 20, || {
        optim::rmsprop_update(black_box(&mut w), &mut state, &gw, 1e-6, 1e-4, 0.9, 1e-6)
    });
    bench(
        &mut g,
        "reference rmsprop_update 784x900",
        PARAMS,
        20,
        || reference::rmsprop_update(black_box(&mut w), &mut state, &gw, 1e-6, 1e-4, 0.9, 1e-6),
    );
    bench(&mut g, "add_assign 784x900", PARAMS, 12, || {
        optim::add_assign(black_box(&mut w), &gw)
    });
    bench(&mut g, "scale 784x900", PARAMS, 8, || {
        optim::scale(black_box(&mut w), 1.0)
    });
    g.finish();
}

criterion_group!(benches, elementwise);
criterion_main!(benches);
