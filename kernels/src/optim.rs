//! Fused in-place optimizer updates with L2 decay inside the update
//! (PLACEHOLDER scalar loops until issue 4).

fn check(p: usize, other: usize, what: &str) {
    assert_eq!(p, other, "{what}: parameter and buffer lengths differ");
}

/// p <- p - lr * (g + decay * p).
pub fn sgd_update(p: &mut [f32], g: &[f32], lr: f32, decay: f32) {
    check(p.len(), g.len(), "sgd_update");
    crate::reference::sgd_update(p, g, lr, decay);
}

/// v <- gamma * v - lr * (g + decay * p); p <- p + v.
pub fn momentum_update(p: &mut [f32], v: &mut [f32], g: &[f32], lr: f32, decay: f32, gamma: f32) {
    check(p.len(), g.len(), "momentum_update");
    check(p.len(), v.len(), "momentum_update");
    crate::reference::momentum_update(p, v, g, lr, decay, gamma);
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
    crate::reference::rmsprop_update(p, r, g, lr, decay, rho, eps);
}
