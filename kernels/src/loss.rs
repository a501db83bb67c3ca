//! Losses with fused gradients (PLACEHOLDER scalar loops until issue 4).

/// Softmax cross-entropy over rows of `logits` (labels.len() x classes).
/// Writes probabilities and grad = (p - onehot) * grad_scale; returns the
/// summed (not averaged) loss in f64.
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
    crate::reference::softmax_cross_entropy(logits, labels, classes, probs, grad, grad_scale)
}

/// Binary cross-entropy of sigmoid(logits) against `targets`, summed over all
/// elements, computed from the logits so it stays finite near 0 and 1.
/// Writes recon = sigmoid(logits) and grad = (recon - target) * grad_scale.
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
    crate::reference::sigmoid_binary_cross_entropy(logits, targets, recon, grad, grad_scale)
}

/// rho_hat[j] <- mean over rows of h[row, j] (h is rows x rho_hat.len()).
pub fn column_means(h: &[f32], rho_hat: &mut [f32]) {
    let units = rho_hat.len();
    assert!(units > 0 && h.len() % units == 0, "column_means: shape");
    let rows = h.len() / units;
    rho_hat.fill(0.0);
    for row in h.chunks_exact(units) {
        for (q, &v) in rho_hat.iter_mut().zip(row) {
            *q += v;
        }
    }
    for q in rho_hat {
        *q /= rows as f32;
    }
}

/// beta * sum_j KL(rho || rho_hat_j).
pub fn kl_sparsity_cost(rho_hat: &[f32], rho: f32, beta: f32) -> f64 {
    crate::reference::kl_sparsity_cost(rho_hat, rho, beta)
}

/// Adds the KL penalty's gradient with respect to each activation to grad_h
/// (rows x rho_hat.len()): beta * (-rho/rho_hat_j + (1-rho)/(1-rho_hat_j)) * scale,
/// where scale is 1 / (rows of the whole minibatch).
pub fn kl_sparsity_backward(grad_h: &mut [f32], rho_hat: &[f32], rho: f32, beta: f32, scale: f32) {
    let units = rho_hat.len();
    assert!(
        units > 0 && grad_h.len() % units == 0,
        "kl_sparsity_backward: shape"
    );
    crate::reference::kl_sparsity_backward(grad_h, units, rho_hat, rho, beta, scale)
}
