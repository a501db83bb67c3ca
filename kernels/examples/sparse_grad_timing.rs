//! Quick single-thread timing of a first-layer weight-gradient block (456
//! units x 784 pixels, two chunks of 64 rows): the dense `sgemm_sum` against
//! listing the inputs (`Csc::fill`) plus `sgemm_tn_sparse_sum`, on real
//! MNIST images with the DAE's 10% masking; last, the sparse sum with C
//! just read by another thread, with and without `CLines::Elsewhere`'s
//! prefetch. Variants alternate round by round; medians of 31 rounds.
//!
//! `cargo run --release -p vcortex-kernels --example sparse_grad_timing [train-images-idx3-ubyte]`

use std::time::Instant;
use vcortex_kernels::gemm::{sgemm_sum, Epilogue, KTerm, Trans};
use vcortex_kernels::sparse_grad::{sgemm_tn_sparse_sum, CLines, Csc, SparseTerm};

/// The trainer's allocator, so that the blocks sit where the trainer's do
/// (`vcortex_kernels::alloc`).
#[global_allocator]
static ALLOCATOR: vcortex_kernels::alloc::LargeBlocksAligned =
    vcortex_kernels::alloc::LargeBlocksAligned;

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/mnist/train-images-idx3-ubyte".into());
    let raw = std::fs::read(&path).expect("raw (unzipped) MNIST training images");
    // FILL_IN=p sets each zero pixel to 0.5 with probability p (denser inputs).
    let fill_in: f64 = std::env::var("FILL_IN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let (m, n, k, n_out) = (456usize, 784usize, 64usize, 900usize);
    let value = |i: usize| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5;
    let mut seed = 12345u64;
    let mut keep = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        !(seed >> 40).is_multiple_of(10)
    };
    // Two chunks of 64 images (every 37th image, masked), their deltas.
    let b: Vec<Vec<f32>> = (0..2)
        .map(|t| {
            (0..k * n)
                .map(|i| {
                    let img = (t * k + i / n) * 37;
                    let mut px = raw[16 + img * n + i % n] as f32 / 255.0;
                    if px == 0.0 && ((i * 761) % 1000) as f64 / 1000.0 < fill_in {
                        px = 0.5;
                    }
                    if keep() {
                        px
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    let a: Vec<Vec<f32>> = (0..2)
        .map(|t| (0..k * n_out).map(|i| value(i + t)).collect())
        .collect();
    let nonzero = b.iter().flatten().filter(|&&v| v != 0.0).count();
    println!(
        "non-zero inputs: {:.3}",
        nonzero as f64 / (2 * k * n) as f64
    );
    // C (1.4 MB) lands on a cache line through the allocator below, as the
    // trainer's weights do.
    let mut c_buf = vec![0.0f32; m * n];
    let c = &mut c_buf[..];
    let dense = |c: &mut [f32]| {
        let terms: Vec<KTerm> = (0..2)
            .map(|t| KTerm {
                a: &a[t],
                lda: n_out,
                b: &b[t],
                ldb: n,
                k,
            })
            .collect();
        sgemm_sum(
            Trans::T,
            Trans::N,
            m,
            n,
            &terms,
            -0.1,
            1.0,
            c,
            n,
            Epilogue::NONE,
        );
    };
    let mut lists = [Csc::new(), Csc::new()];
    for (l, bt) in lists.iter_mut().zip(&b) {
        l.fill(bt, k, n, n);
    }
    let sparse_with = |c: &mut [f32], c_lines: CLines| {
        let terms: Vec<SparseTerm> = (0..2)
            .map(|t| SparseTerm {
                a: &a[t],
                lda: n_out,
                b: &lists[t],
            })
            .collect();
        sgemm_tn_sparse_sum(m, n, &terms, -0.1, 1.0, c, n, c_lines);
    };
    let sparse = |c: &mut [f32]| sparse_with(c, CLines::Here);
    let mut fill_lists = [Csc::new(), Csc::new()];
    let mut fill = || {
        for (l, bt) in fill_lists.iter_mut().zip(&b) {
            l.fill(bt, k, n, n);
        }
    };
    let (mut td, mut ts, mut tf) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..31 {
        let t = Instant::now();
        for _ in 0..20 {
            dense(c);
        }
        td.push(t.elapsed().as_secs_f64() / 20.0);
        let t = Instant::now();
        for _ in 0..20 {
            sparse(c);
        }
        ts.push(t.elapsed().as_secs_f64() / 20.0);
        let t = Instant::now();
        for _ in 0..20 {
            fill();
        }
        tf.push(t.elapsed().as_secs_f64() / 20.0);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e6
    };
    let flops = 2.0 * (m * n * 2 * k) as f64;
    let (d, s, f) = (median(&mut td), median(&mut ts), median(&mut tf));
    println!(
        "dense sgemm_sum        {d:8.1} us  ({:.0} GFLOP/s)",
        flops / d * 1e-3
    );
    println!(
        "sparse sum (listed)    {s:8.1} us  (dense-equivalent {:.0} GFLOP/s)",
        flops / s * 1e-3
    );
    println!("Csc::fill of 2 chunks  {f:8.1} us");
    // As in the trainer's update: another thread has just read C (its
    // forward pass reads the weights), so C's lines are shared.
    let (mut here, mut elsewhere) = (Vec::new(), Vec::new());
    for _ in 0..31 {
        for (c_lines, times) in [
            (CLines::Here, &mut here),
            (CLines::Elsewhere, &mut elsewhere),
        ] {
            let mut total = 0.0;
            for _ in 0..5 {
                std::thread::scope(|s| {
                    let c = &c;
                    s.spawn(move || std::hint::black_box(c.iter().sum::<f32>()));
                });
                let t = Instant::now();
                sparse_with(c, c_lines);
                total += t.elapsed().as_secs_f64();
            }
            times.push(total / 5.0);
        }
    }
    let (h, e) = (median(&mut here), median(&mut elsewhere));
    println!("sparse sum, C just read by another thread: CLines::Here {h:8.1} us, ::Elsewhere {e:8.1} us");
}
