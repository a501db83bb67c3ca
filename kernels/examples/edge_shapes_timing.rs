//! Quick single-thread timing of the GEMM shapes that sat near the `gemm`
//! crate (issue 3) and their trainer relatives: 128 / 64 x 180 x 100 A B
//! (A and B in place, the dot edge for the last 4 columns), 128 / 64 x 625
//! x 400 A B (M-on-lanes), 784 x 128 / 64 x 900 A^T B (packed, row order,
//! the lane edge for the last 4 columns). Shapes alternate call by call,
//! each timed over a batch of about a millisecond; each line is the median
//! of `ROUNDS` batches, in GFLOP/s. The `gemm` crate is not a dependency of
//! this crate: compare against it with `cargo bench --bench gemm --
//! table-only` (GEMM_TABLE_ROWS picks rows).
//!
//! `cargo run --release -p vcortex-kernels --example edge_shapes_timing [rounds]`

use std::time::Instant;
use vcortex_kernels::gemm::{sgemm, Trans};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(31);
    // (m, k, n, op(A)); op(B) = B stored k x n.
    let shapes = [
        (128, 180, 100, Trans::N),
        (64, 180, 100, Trans::N),
        (128, 625, 400, Trans::N),
        (64, 625, 400, Trans::N),
        (784, 128, 900, Trans::T),
        (784, 64, 900, Trans::T),
    ];
    let value = |i: usize| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5;
    let a: Vec<f32> = (0..784 * 625).map(value).collect();
    let b: Vec<f32> = (0..625 * 900).map(|i| value(3 * i + 1)).collect();
    let mut c = vec![0.0f32; 784 * 900];
    let run = |&(m, k, n, ta): &(usize, usize, usize, Trans), c: &mut [f32]| {
        let lda = if ta == Trans::N { k } else { m };
        sgemm(ta, Trans::N, m, n, k, 1.0, &a, lda, &b, n, 0.0, c, n);
    };
    // Calls per batch: about 1 ms at 150 GFLOP/s.
    let reps: Vec<usize> = shapes
        .iter()
        .map(|&(m, k, n, _)| (150e6 / (2 * m * k * n) as f64).ceil() as usize)
        .collect();
    for s in &shapes {
        run(s, &mut c);
    }
    let mut times = vec![Vec::with_capacity(rounds); shapes.len()];
    for _ in 0..rounds {
        for ((s, t), &r) in shapes.iter().zip(&mut times).zip(&reps) {
            let start = Instant::now();
            for _ in 0..r {
                run(s, &mut c);
            }
            t.push(start.elapsed().as_secs_f64() / r as f64);
        }
    }
    for (&(m, k, n, ta), t) in shapes.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        let gflops = 2.0 * (m * k * n) as f64 / t[t.len() / 2] / 1e9;
        let form = if ta == Trans::N { "A B" } else { "A^T B" };
        println!("{m:>3} x {k:>3} x {n:>3} {form:<6} {gflops:7.1} GFLOP/s");
    }
    println!("checksum {}", c.iter().map(|&x| x as f64).sum::<f64>());
}
