//! Quick single-thread timing of the trainer's fused convolution passes at its
//! chunk size (64 images): conv1 (1 -> 15, 9x9, 28x28) and conv2 (15 -> 20,
//! 5x5, 10x10), forward + ReLU + 2x2 max pool, and the backward from the pooled
//! gradient (conv1: filters only, as in training; conv2: both gradients),
//! dense and from the windows' winners (`conv2d_backward_from_maxpool2x2_winners`).
//! Passes alternate call by call; each line is the median of `ROUNDS` rounds.
//!
//! `cargo run --release -p vcortex-kernels --example conv_timing [rounds] [pass]`
//! (`pass`: run only the passes whose name contains it, e.g. for `perf`).

use std::time::Instant;
use vcortex_kernels::conv::{self, ConvScratch, ConvShape};
use vcortex_kernels::gemm::Activation;

const BATCH: usize = 64;

/// One layer's tensors and scratch.
struct Layer {
    s: ConvShape,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    pooled: Vec<f32>,
    argmax: Vec<u32>,
    gpooled: Vec<f32>,
    gw: Vec<f32>,
    gb: Vec<f32>,
    gx: Vec<f32>,
    scratch: ConvScratch,
}

impl Layer {
    fn new(c_in: usize, hw: usize, c_out: usize, k: usize) -> Layer {
        let s = ConvShape {
            batch: BATCH,
            c_in,
            h: hw,
            w: hw,
            c_out,
            kh: k,
            kw: k,
        };
        let value = |i: usize| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5;
        let mut l = Layer {
            s,
            x: (0..s.input_len()).map(value).collect(),
            w: (0..s.weight_len())
                .map(|i| value(3 * i + 1) * 0.1)
                .collect(),
            b: (0..c_out).map(|i| value(5 * i + 2) * 0.1).collect(),
            pooled: vec![0.0; s.pooled_len()],
            argmax: vec![0; s.pooled_len()],
            gpooled: (0..s.pooled_len()).map(|i| value(11 * i + 3)).collect(),
            gw: vec![0.0; s.weight_len()],
            gb: vec![0.0; c_out],
            gx: vec![0.0; s.input_len()],
            scratch: ConvScratch::default(),
        };
        l.forward();
        // As ReLU's derivative leaves it (zero where the pooled value is not
        // positive), and a quarter more zeros, as training brings.
        for (i, (g, &p)) in l.gpooled.iter_mut().zip(&l.pooled).enumerate() {
            if p <= 0.0 || i % 4 == 0 {
                *g = 0.0;
            }
        }
        l
    }

    fn forward(&mut self) {
        conv::conv2d_forward_maxpool2x2_with(
            &self.s,
            &self.x,
            &self.w,
            &self.b,
            Activation::Relu,
            &mut self.pooled,
            &mut self.argmax,
            &mut self.scratch,
        );
    }

    fn backward(&mut self, input_grad: bool, winners: bool) {
        let pass = if winners {
            conv::conv2d_backward_from_maxpool2x2_winners
        } else {
            conv::conv2d_backward_from_maxpool2x2_with
        };
        pass(
            &self.s,
            &self.x,
            &self.w,
            &self.gpooled,
            &self.argmax,
            &mut self.gw,
            &mut self.gb,
            input_grad.then_some(&mut self.gx[..]),
            &mut self.scratch,
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(201);
    let only = args.next().unwrap_or_default();
    let mut conv1 = Layer::new(1, 28, 15, 9);
    let mut conv2 = Layer::new(15, 10, 20, 5);
    let names = [
        "conv1 forward+pool",
        "conv1 backward filter",
        "conv2 forward+pool",
        "conv2 backward both",
        "conv1 backward filter, winners",
        "conv2 backward both, winners",
    ];
    let active: Vec<usize> = (0..names.len())
        .filter(|&i| names[i].contains(only.as_str()))
        .collect();
    let mut times = vec![Vec::new(); names.len()];
    for _ in 0..rounds {
        for &i in &active {
            let t = Instant::now();
            match i {
                0 => conv1.forward(),
                1 => conv1.backward(false, false),
                2 => conv2.forward(),
                3 => conv2.backward(true, false),
                4 => conv1.backward(false, true),
                _ => conv2.backward(true, true),
            }
            times[i].push(t.elapsed().as_secs_f64());
        }
    }
    for &i in &active {
        let t = &mut times[i];
        t.sort_by(f64::total_cmp);
        let med = t[t.len() / 2];
        let s = if i < 2 { conv1.s } else { conv2.s };
        // conv2's backward does two passes' multiply-adds (filters, input).
        let passes = if i == 3 { 2.0 } else { 1.0 };
        let gflops = passes * 2.0 * s.macs() as f64 / med / 1e9;
        println!(
            "{:24} {:8.1} us {:7.1} GFLOP/s",
            names[i],
            med * 1e6,
            gflops
        );
    }
}
