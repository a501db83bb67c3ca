//! Quick single-thread timing of the trainer's weight-gradient block
//! (228 x 784, A^T B): four products of k = 64 accumulated with beta = 1,
//! one product of k = 256, and `sgemm_sum` over the four pairs. Variants
//! alternate round by round; medians of 31 rounds of 20 calls.
//!
//! `cargo run --release -p vcortex-kernels --example ksum_timing`

use std::time::Instant;
use vcortex_kernels::gemm::{sgemm_sum, sgemm_with_epilogue, Epilogue, KTerm, Trans};

/// One timed way of computing the block's product into C.
type Product<'a> = dyn Fn(&mut [f32]) + 'a;
fn main() {
    let (m, n, k, parts) = (228usize, 784usize, 64usize, 4usize);
    let n_out = 900;
    let value = |i: usize| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5;
    // A is stored k x n_out (deltas, this block's columns), B k x n (inputs).
    let a: Vec<Vec<f32>> = (0..parts)
        .map(|t| (0..k * n_out).map(|i| value(i + t)).collect())
        .collect();
    let b: Vec<Vec<f32>> = (0..parts)
        .map(|t| (0..k * n).map(|i| value(3 * i + t)).collect())
        .collect();
    let a_cat: Vec<f32> = a.concat();
    let b_cat: Vec<f32> = b.concat();
    let mut c = vec![0.0f32; m * n];
    let terms: Vec<KTerm> = (0..parts)
        .map(|t| KTerm {
            a: &a[t],
            lda: n_out,
            b: &b[t],
            ldb: n,
            k,
        })
        .collect();
    let separate = |c: &mut [f32]| {
        for t in 0..parts {
            let beta = if t == 0 { 0.9 } else { 1.0 };
            sgemm_with_epilogue(
                Trans::T,
                Trans::N,
                m,
                n,
                k,
                -0.1,
                &a[t],
                n_out,
                &b[t],
                n,
                beta,
                c,
                n,
                Epilogue::NONE,
            );
        }
    };
    let single = |c: &mut [f32]| {
        sgemm_with_epilogue(
            Trans::T,
            Trans::N,
            m,
            n,
            parts * k,
            -0.1,
            &a_cat,
            n_out,
            &b_cat,
            n,
            0.9,
            c,
            n,
            Epilogue::NONE,
        )
    };
    let summed = |c: &mut [f32]| {
        sgemm_sum(
            Trans::T,
            Trans::N,
            m,
            n,
            &terms,
            -0.1,
            0.9,
            c,
            n,
            Epilogue::NONE,
        )
    };
    let variants: [(&str, &Product); 3] = [
        ("4 x (228x784x64), beta 1 after the first", &separate),
        ("1 x (228x784x256)", &single),
        ("sgemm_sum of 4 x (228x784x64)", &summed),
    ];
    let reps = 20;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _round in 0..31 {
        for (v, (_, f)) in variants.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..reps {
                f(&mut c);
            }
            times[v].push(start.elapsed().as_secs_f64() / reps as f64);
        }
    }
    let flops = (2 * m * n * k * parts) as f64;
    for ((name, _), t) in variants.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        let med = t[t.len() / 2];
        println!(
            "{name:44} median {:7.1} us  min {:7.1} us  {:6.1} GF/s",
            med * 1e6,
            t[0] * 1e6,
            flops / med / 1e9
        );
    }
    std::hint::black_box(&c);
}
