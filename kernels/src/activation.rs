//! Activations and bias helpers (PLACEHOLDER scalar loops until issue 4).

use crate::reference::sigmoid;

/// x <- max(x, 0).
pub fn relu_inplace(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// grad <- grad where the ReLU's output y > 0, else 0.
pub fn relu_backward(y: &[f32], grad: &mut [f32]) {
    assert_eq!(y.len(), grad.len(), "relu_backward: lengths differ");
    for (g, &y) in grad.iter_mut().zip(y) {
        if y <= 0.0 {
            *g = 0.0;
        }
    }
}

/// x <- 1 / (1 + e^-x).
pub fn sigmoid_inplace(x: &mut [f32]) {
    for v in x {
        *v = sigmoid(*v);
    }
}

/// grad <- grad * y * (1 - y), with y the sigmoid's output.
pub fn sigmoid_backward(y: &[f32], grad: &mut [f32]) {
    assert_eq!(y.len(), grad.len(), "sigmoid_backward: lengths differ");
    for (g, &y) in grad.iter_mut().zip(y) {
        *g *= y * (1.0 - y);
    }
}

/// Adds bias[j] to column j of every row of x (rows x bias.len()).
pub fn add_bias_rows(x: &mut [f32], bias: &[f32]) {
    assert!(
        !bias.is_empty() && x.len() % bias.len() == 0,
        "add_bias_rows: shape"
    );
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// out[j] <- sum over rows of grad[row, j] (overwrites).
pub fn bias_grad_rows(grad: &[f32], out: &mut [f32]) {
    assert!(
        !out.is_empty() && grad.len() % out.len() == 0,
        "bias_grad_rows: shape"
    );
    out.fill(0.0);
    for row in grad.chunks_exact(out.len()) {
        for (o, &g) in out.iter_mut().zip(row) {
            *o += g;
        }
    }
}
