//! Fused in-place optimizer updates with L2 decay inside the update, and the
//! small vector helpers used to combine per-chunk gradients.
//!
//! Each kernel evaluates exactly the reference's f32 expression, operation by
//! operation and without fused multiply-adds, so results are bit-identical to
//! `reference` on every SIMD level.

use crate::lanes::{load, load_partial, store, store_partial, F32s, LANES};

fn check(p: usize, other: usize, what: &str) {
    assert_eq!(p, other, "{what}: parameter and buffer lengths differ");
}

/// How far ahead of their loops the parameter updates (`sgd_update`,
/// `momentum_update`, `rmsprop_update`, `momentum_finish`) ask for the
/// parameters' lines for writing (16 lines of 64 bytes; not tuned, no
/// other distance measured): the trainer's weights were last read by
/// the other core's forward pass, and the hardware prefetcher fetches them
/// shared, so every store would otherwise wait for that core to drop its
/// copy. `vcortex run b3 --epochs 1` (momentum, 2 threads, 3 alternating
/// runs): DAE layer 1 epoch 1.61-1.63 -> 1.45-1.49 s, layer 2 2.30-2.40 ->
/// 2.12-2.21, layer 3 2.25-2.34 -> 2.07-2.26. The CNN's SGD update (`vcortex
/// bench --only cnn-sgd`, 7 alternating runs, medians): 0.0125 -> 0.0091 s
/// per epoch.
const WRITE_PREFETCH_FLOATS: usize = 16 * 16;

/// Asks for the parameters [`WRITE_PREFETCH_FLOATS`] past chunk `i` (of
/// LANES floats from `p`), for writing. A hint: never faults.
#[inline(always)]
fn prefetch_params_ahead(p: *const f32, i: usize) {
    crate::simd::prefetch_line_for_write(p.wrapping_add(WRITE_PREFETCH_FLOATS + i * LANES));
}

/// Runs `f(p, a)` over two equal-length buffers, updating `p` in place.
#[inline(always)]
fn update2(p: &mut [f32], a: &[f32], f: impl Fn(F32s, F32s) -> F32s) {
    let base = p.as_ptr();
    crate::lanes::zip_inplace_with(a, p, |i| prefetch_params_ahead(base, i), |a, p| f(p, a));
}

/// Runs `f(p, s, g) -> (p', s')` over parameters, a state buffer and the
/// gradient, updating parameters and state in place.
#[inline(always)]
fn update3(p: &mut [f32], s: &mut [f32], g: &[f32], f: impl Fn(F32s, F32s, F32s) -> (F32s, F32s)) {
    let base = p.as_ptr();
    let mut pc = p.chunks_exact_mut(LANES);
    let mut sc = s.chunks_exact_mut(LANES);
    let mut gc = g.chunks_exact(LANES);
    for (i, ((p, s), g)) in (&mut pc).zip(&mut sc).zip(&mut gc).enumerate() {
        prefetch_params_ahead(base, i);
        let (pn, sn) = f(load(p), load(s), load(g));
        store(pn, p);
        store(sn, s);
    }
    let (p, s) = (pc.into_remainder(), sc.into_remainder());
    if !p.is_empty() {
        let (pn, sn) = f(
            load_partial(p, 0.0),
            load_partial(s, 0.0),
            load_partial(gc.remainder(), 0.0),
        );
        store_partial(pn, p);
        store_partial(sn, s);
    }
}

/// p <- p - lr * (g + decay * p).
pub fn sgd_update(p: &mut [f32], g: &[f32], lr: f32, decay: f32) {
    check(p.len(), g.len(), "sgd_update");
    let (lr, decay) = (F32s::splat(lr), F32s::splat(decay));
    update2(p, g, |p, g| p - lr * (g + decay * p));
}

/// v <- gamma * v - lr * (g + decay * p); p <- p + v.
pub fn momentum_update(p: &mut [f32], v: &mut [f32], g: &[f32], lr: f32, decay: f32, gamma: f32) {
    check(p.len(), g.len(), "momentum_update");
    check(p.len(), v.len(), "momentum_update");
    let (lr, decay, gamma) = (F32s::splat(lr), F32s::splat(decay), F32s::splat(gamma));
    update3(p, v, g, |p, v, g| {
        let v = gamma * v - lr * (g + decay * p);
        (p + v, v)
    });
}

/// The second half of a momentum step whose first half the caller fused
/// into its gradient GEMM (v <- gamma * v - lr * g, with alpha = -lr and
/// beta = gamma): v <- v - lr_decay * p; p <- p + v, where `lr_decay` is
/// lr * decay. Together they give `momentum_update` up to rounding.
pub fn momentum_finish(p: &mut [f32], v: &mut [f32], lr_decay: f32) {
    check(p.len(), v.len(), "momentum_finish");
    let lr_decay = F32s::splat(lr_decay);
    let step = |p: F32s, v: F32s| {
        let v = v - lr_decay * p;
        (p + v, v)
    };
    let base = p.as_ptr();
    let mut pc = p.chunks_exact_mut(LANES);
    let mut vc = v.chunks_exact_mut(LANES);
    for (i, (p, v)) in (&mut pc).zip(&mut vc).enumerate() {
        prefetch_params_ahead(base, i);
        let (pn, vn) = step(load(p), load(v));
        store(pn, p);
        store(vn, v);
    }
    let (p, v) = (pc.into_remainder(), vc.into_remainder());
    if !p.is_empty() {
        let (pn, vn) = step(load_partial(p, 0.0), load_partial(v, 0.0));
        store_partial(pn, p);
        store_partial(vn, v);
    }
}

/// r <- rho * r + (1 - rho) * g^2; p <- p - lr * (g / sqrt(r + eps) + decay * p).
#[allow(clippy::too_many_arguments)]
pub fn rmsprop_update(
    p: &mut [f32],
    r: &mut [f32],
    g: &[f32],
    lr: f32,
    decay: f32,
    rho: f32,
    eps: f32,
) {
    check(p.len(), g.len(), "rmsprop_update");
    check(p.len(), r.len(), "rmsprop_update");
    let one_minus_rho = F32s::splat(1.0 - rho);
    let (lr, decay, rho, eps) = (
        F32s::splat(lr),
        F32s::splat(decay),
        F32s::splat(rho),
        F32s::splat(eps),
    );
    update3(p, r, g, |p, r, g| {
        // (1 - rho) * g * g groups left to right, as in the reference.
        let r = rho * r + one_minus_rho * g * g;
        (p - lr * (g / (r + eps).sqrt() + decay * p), r)
    });
}

/// dst <- dst + src (summing per-chunk gradients in a fixed order).
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    check(dst.len(), src.len(), "add_assign");
    update2(dst, src, |d, s| d + s);
}

/// dst <- dst * s.
pub fn scale(dst: &mut [f32], s: f32) {
    let s = F32s::splat(s);
    crate::lanes::map_inplace(dst, |d| d * s);
}
