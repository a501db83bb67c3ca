//! Losses with fused gradients, thin wrappers over the kernels that fix the
//! conventions the models use.

use crate::kernels::loss;

/// Softmax + cross-entropy over `labels.len()` rows of `classes` logits.
/// Writes the probabilities and dL/dlogits = (p - onehot) * grad_scale and
/// returns the *summed* loss (callers scale by 1 / full batch size).
pub fn softmax_cross_entropy(
    logits: &[f32],
    labels: &[u8],
    classes: usize,
    probs: &mut [f32],
    grad: &mut [f32],
    grad_scale: f32,
) -> f64 {
    let n = labels.len() * classes;
    loss::softmax_cross_entropy(
        &logits[..n],
        labels,
        classes,
        &mut probs[..n],
        &mut grad[..n],
        grad_scale,
    )
}

/// Binary cross-entropy of sigmoid(logits) against `targets`, summed over
/// every element; writes the reconstruction and the gradient with respect to
/// the logits times `grad_scale`.
pub fn sigmoid_binary_cross_entropy(
    logits: &[f32],
    targets: &[f32],
    recon: &mut [f32],
    grad: &mut [f32],
    grad_scale: f32,
) -> f64 {
    let n = targets.len();
    loss::sigmoid_binary_cross_entropy(
        &logits[..n],
        targets,
        &mut recon[..n],
        &mut grad[..n],
        grad_scale,
    )
}

/// Number of rows whose largest logit is at the label (first maximum wins).
pub fn count_correct(logits: &[f32], labels: &[u8], classes: usize) -> usize {
    logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, &label)| {
            let mut best = 0;
            for (c, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = c;
                }
            }
            best == label as usize
        })
        .count()
}

/// The KL sparsity penalty beta * sum_j KL(rho || rho_hat_j), rho_hat_j the
/// minibatch mean activation of hidden unit j.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sparsity {
    /// Target mean activation (the study: 0.05).
    pub rho: f32,
    /// Weight of the penalty (the study: 0.5).
    pub beta: f32,
}

impl Sparsity {
    /// The study's B3 setting.
    pub const STUDY: Sparsity = Sparsity {
        rho: 0.05,
        beta: 0.5,
    };

    /// The penalty for the mean activations `rho_hat`.
    pub fn cost(&self, rho_hat: &[f32]) -> f64 {
        loss::kl_sparsity_cost(rho_hat, self.rho, self.beta)
    }

    /// Adds dPenalty/dh to `grad_h` (rows x units); `batch_rows` is the size
    /// of the whole minibatch whose mean `rho_hat` is (not the chunk's).
    pub fn backward(&self, grad_h: &mut [f32], rho_hat: &[f32], batch_rows: usize) {
        loss::kl_sparsity_backward(
            grad_h,
            rho_hat,
            self.rho,
            self.beta,
            1.0 / batch_rows as f32,
        );
    }
}
