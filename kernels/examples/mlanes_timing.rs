//! Quick single-thread timing of the trainer's M-on-lanes products (m <= 128,
//! n >= 400): the DAE decoder `h W` (128 / 64 x 784 x 450 / 900, B stored
//! k x n) and the deltas / classifier products (128 x 450 / 900 x 784), each
//! with B stored k x n (`N, N`) and n x k (`N, T`), and three epilogues:
//! beta 0 plain, beta 0 with a column bias and sigmoid, beta 1 plain.
//! Configurations alternate call by call; each line is the median of
//! `ROUNDS` rounds, in GFLOP/s.
//!
//! `cargo run --release -p vcortex-kernels --example mlanes_timing [rounds]`

use std::time::Instant;
use vcortex_kernels::gemm::{sgemm_with_epilogue, Activation, Bias, Epilogue, Trans};

/// One timed product.
struct Config {
    m: usize,
    n: usize,
    k: usize,
    tb: Trans,
    /// 0: beta 0 plain; 1: beta 0, column bias + sigmoid; 2: beta 1 plain.
    epilogue: u8,
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(41);
    let shapes = [
        (128, 784, 450),
        (128, 784, 900),
        (64, 784, 900),
        (128, 450, 784),
        (128, 900, 784),
    ];
    let mut configs = Vec::new();
    for &(m, n, k) in &shapes {
        for tb in [Trans::N, Trans::T] {
            for epilogue in 0..3 {
                configs.push(Config {
                    m,
                    n,
                    k,
                    tb,
                    epilogue,
                });
            }
        }
    }
    let value = |i: usize| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5;
    let a: Vec<f32> = (0..128 * 900).map(value).collect();
    let b: Vec<f32> = (0..900 * 900).map(|i| value(3 * i + 1) * 0.1).collect();
    let bias: Vec<f32> = (0..900).map(|i| value(5 * i + 2)).collect();
    let mut c = vec![0.0f32; 128 * 900];
    let run = |cfg: &Config, c: &mut [f32]| {
        let (m, n, k) = (cfg.m, cfg.n, cfg.k);
        let ldb = if cfg.tb == Trans::N { n } else { k };
        let (beta, epilogue) = match cfg.epilogue {
            0 => (0.0, Epilogue::NONE),
            1 => (
                0.0,
                Epilogue {
                    bias: Bias::Col(&bias[..n]),
                    activation: Activation::Sigmoid,
                },
            ),
            _ => (1.0, Epilogue::NONE),
        };
        sgemm_with_epilogue(
            Trans::N,
            cfg.tb,
            m,
            n,
            k,
            1.0,
            &a,
            k,
            &b,
            ldb,
            beta,
            c,
            n,
            epilogue,
        );
    };
    // Warm-up: every configuration once.
    for cfg in &configs {
        run(cfg, &mut c);
    }
    let mut times = vec![Vec::with_capacity(rounds); configs.len()];
    for _ in 0..rounds {
        for (cfg, t) in configs.iter().zip(&mut times) {
            // Two calls per sample: the second finds B and C where the
            // trainer's next call would (L2 / L3), as in a training step.
            run(cfg, &mut c);
            let start = Instant::now();
            run(cfg, &mut c);
            t.push(start.elapsed().as_secs_f64());
            // Keep beta-1 sums bounded.
            c.iter_mut().for_each(|x| *x = x.clamp(-1e3, 1e3));
        }
    }
    for (cfg, t) in configs.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        let median = t[t.len() / 2];
        let gflops = 2.0 * (cfg.m * cfg.n * cfg.k) as f64 / median / 1e9;
        let form = if cfg.tb == Trans::N { "N,N" } else { "N,T" };
        let ep = ["beta0", "colbias+sigmoid", "beta1"][cfg.epilogue as usize];
        println!(
            "{:>3} x {:>3} x {:>3} {form} {ep:<16} {gflops:7.1} GFLOP/s",
            cfg.m, cfg.n, cfg.k
        );
    }
    println!("checksum {}", c.iter().map(|&x| x as f64).sum::<f64>());
}
