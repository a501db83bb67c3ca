//! Losses with fused gradients, vectorised over [`F32s`].

use crate::lanes::{self, load, load_partial, store, store_partial, F32s, LANES};
use crate::vmath;

/// Softmax cross-entropy over rows of `logits` (labels.len() x classes).
/// Writes probabilities and grad = (p - onehot) * grad_scale; returns the
/// summed (not averaged) loss in f64.
///
/// Numerically stable: each row is shifted by its maximum before the exp, so
/// every exp is <= 1 and the row sum is >= 1. Exps and the row sum are f32
/// (the reference uses f64); the per-row log of the sum is taken in f64.
pub fn softmax_cross_entropy(
    logits: &[f32],
    labels: &[u8],
    classes: usize,
    probs: &mut [f32],
    grad: &mut [f32],
    grad_scale: f32,
) -> f64 {
    let len = labels.len() * classes;
    assert_eq!(logits.len(), len, "softmax_cross_entropy: logits length");
    assert_eq!(probs.len(), len, "softmax_cross_entropy: probs length");
    assert_eq!(grad.len(), len, "softmax_cross_entropy: grad length");
    assert!(
        labels.iter().all(|&l| (l as usize) < classes),
        "softmax_cross_entropy: label out of range"
    );
    if classes == 0 {
        return 0.0;
    }
    // Rows are short (10 classes), so the row-wise steps are scalar and the
    // exp, the expensive part, runs vectorised over the whole batch at once
    // (per-row vectors would spend their time on ragged-tail handling).
    let max_of = |row: &[f32]| row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for (row, p_row) in logits
        .chunks_exact(classes)
        .zip(probs.chunks_exact_mut(classes))
    {
        let max = max_of(row);
        for (p, &x) in p_row.iter_mut().zip(row) {
            *p = x - max;
        }
    }
    lanes::map_inplace(probs, vmath::exp);
    let mut total = 0.0f64;
    let rows = logits
        .chunks_exact(classes)
        .zip(probs.chunks_exact_mut(classes))
        .zip(grad.chunks_exact_mut(classes))
        .zip(labels);
    for (((row, p_row), g_row), &label) in rows {
        // Every exp is <= 1 and the maximum's is 1, so 1 <= sum <= classes.
        let sum: f32 = p_row.iter().sum();
        for (p, g) in p_row.iter_mut().zip(g_row.iter_mut()) {
            *p /= sum;
            *g = *p * grad_scale;
        }
        // The one-hot term, (p - 1) * scale, exactly as the reference.
        let l = label as usize;
        g_row[l] = (p_row[l] - 1.0) * grad_scale;
        total += (sum as f64).ln() - (row[l] as f64 - max_of(row) as f64);
    }
    total
}

/// Binary cross-entropy of sigmoid(logits) against `targets`, summed over all
/// elements, computed from the logits so it stays finite near 0 and 1.
/// Writes recon = sigmoid(logits) and grad = (recon - target) * grad_scale.
///
/// Per element: max(a, 0) - a x + log1p(e^-|a|), in f32 (vectorised exp and
/// log1p); lanes are summed in f32 over blocks of 64 vectors, then in f64.
pub fn sigmoid_binary_cross_entropy(
    logits: &[f32],
    targets: &[f32],
    recon: &mut [f32],
    grad: &mut [f32],
    grad_scale: f32,
) -> f64 {
    let len = logits.len();
    assert!(
        targets.len() == len && recon.len() == len && grad.len() == len,
        "sigmoid_binary_cross_entropy: lengths differ"
    );
    let scale = F32s::splat(grad_scale);
    // Returns (loss term, recon, grad) for one vector.
    let step = |a: F32s, x: F32s| {
        let e = vmath::exp(-a.abs());
        let num = a.simd_ge(F32s::ZERO).select(F32s::ONE, e);
        let z = num / (F32s::ONE + e);
        let term = a.fast_max(F32s::ZERO) - a * x + vmath::ln_1p_unit(e);
        (term, z, (z - x) * scale)
    };
    const BLOCK: usize = 64 * LANES;
    let mut total = 0.0f64;
    let blocks = logits
        .chunks(BLOCK)
        .zip(targets.chunks(BLOCK))
        .zip(recon.chunks_mut(BLOCK))
        .zip(grad.chunks_mut(BLOCK));
    for (((a, x), r), g) in blocks {
        let mut acc = F32s::ZERO;
        let mut ac = a.chunks_exact(LANES);
        let mut xc = x.chunks_exact(LANES);
        let mut rc = r.chunks_exact_mut(LANES);
        let mut gc = g.chunks_exact_mut(LANES);
        for (((a, x), r), g) in (&mut ac).zip(&mut xc).zip(&mut rc).zip(&mut gc) {
            let (term, z, gv) = step(load(a), load(x));
            acc += term;
            store(z, r);
            store(gv, g);
        }
        let r_tail = rc.into_remainder();
        if !r_tail.is_empty() {
            let n = r_tail.len();
            let (term, z, gv) = step(
                load_partial(ac.remainder(), 0.0),
                load_partial(xc.remainder(), 0.0),
            );
            // Padding lanes (a = 0) would each add ln 2: drop them.
            let keep: [f32; LANES] = std::array::from_fn(|i| if i < n { 1.0 } else { 0.0 });
            acc += term * F32s::new(keep);
            store_partial(z, r_tail);
            store_partial(gv, gc.into_remainder());
        }
        total += lanes::sum_f64(acc);
    }
    total
}

/// `rho_hat[j] <- mean over rows of h[row, j]` (h is rows x rho_hat.len()).
/// Rows are summed in order in f32, then divided by the row count.
pub fn column_means(h: &[f32], rho_hat: &mut [f32]) {
    let units = rho_hat.len();
    assert!(
        units > 0 && h.len().is_multiple_of(units),
        "column_means: shape"
    );
    let rows = h.len() / units;
    rho_hat.fill(0.0);
    for row in h.chunks_exact(units) {
        lanes::zip_inplace(row, rho_hat, |v, q| q + v);
    }
    let n = F32s::splat(rows as f32);
    lanes::map_inplace(rho_hat, |q| q / n);
}

/// beta * sum_j KL(rho || rho_hat_j).
///
/// Kept scalar in f64: KL(rho || q) cancels to ~0 as q approaches rho, so f32
/// would lose most digits, and it runs once per minibatch over a few hundred
/// units (negligible next to the layer's GEMMs).
pub fn kl_sparsity_cost(rho_hat: &[f32], rho: f32, beta: f32) -> f64 {
    crate::reference::kl_sparsity_cost(rho_hat, rho, beta)
}

/// Adds the KL penalty's gradient with respect to each activation to grad_h
/// (rows x rho_hat.len()): beta * (-rho/rho_hat_j + (1-rho)/(1-rho_hat_j)) * scale,
/// where scale is 1 / (rows of the whole minibatch).
pub fn kl_sparsity_backward(grad_h: &mut [f32], rho_hat: &[f32], rho: f32, beta: f32, scale: f32) {
    let units = rho_hat.len();
    assert!(
        units > 0 && grad_h.len().is_multiple_of(units),
        "kl_sparsity_backward: shape"
    );
    // Per-unit terms for a block of columns, computed once (same f32
    // operations as the reference) and then added to every row.
    const COLS: usize = 256;
    let mut term = [0.0f32; COLS];
    for c0 in (0..units).step_by(COLS) {
        let c1 = (c0 + COLS).min(units);
        let t = &mut term[..c1 - c0];
        for (t, &q) in t.iter_mut().zip(&rho_hat[c0..c1]) {
            *t = beta * (-rho / q + (1.0 - rho) / (1.0 - q)) * scale;
        }
        for row in grad_h.chunks_exact_mut(units) {
            lanes::zip_inplace(t, &mut row[c0..c1], |t, g| g + t);
        }
    }
}
