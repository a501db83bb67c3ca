//! Activations, bias helpers and pixel scaling, vectorised over [`F32s`].
//!
//! Everything here except the sigmoid computes the same f32 operations in the
//! same order as `reference`, so results are bit-identical to it; the sigmoid
//! differs only through the vectorised exp (about 1 ulp).

use crate::lanes::{self, load, load_partial, store, store_partial, F32s, LANES};
use crate::vmath;

/// x <- max(x, 0).
pub fn relu_inplace(x: &mut [f32]) {
    // fast_max(x, 0) returns the second operand for NaN, like f32::max(NaN, 0).
    lanes::map_inplace(x, |v| v.fast_max(F32s::ZERO));
}

/// grad <- grad where the ReLU's output y > 0, else 0.
pub fn relu_backward(y: &[f32], grad: &mut [f32]) {
    assert_eq!(y.len(), grad.len(), "relu_backward: lengths differ");
    lanes::zip_inplace(y, grad, |y, g| y.simd_le(F32s::ZERO).select(F32s::ZERO, g));
}

/// grad_in <- grad_out where the ReLU's output y > 0, else 0: `relu_backward`
/// writing to a separate buffer, which saves the copy when the upstream
/// gradient must be kept.
pub fn relu_backward_into(y: &[f32], grad_out: &[f32], grad_in: &mut [f32]) {
    assert!(
        y.len() == grad_out.len() && y.len() == grad_in.len(),
        "relu_backward_into: lengths differ"
    );
    let mut gi = grad_in.chunks_exact_mut(LANES);
    let mut yc = y.chunks_exact(LANES);
    let mut go = grad_out.chunks_exact(LANES);
    for ((d, y), g) in (&mut gi).zip(&mut yc).zip(&mut go) {
        store(load(y).simd_le(F32s::ZERO).select(F32s::ZERO, load(g)), d);
    }
    let d = gi.into_remainder();
    if !d.is_empty() {
        let (y, g) = (
            load_partial(yc.remainder(), 0.0),
            load_partial(go.remainder(), 0.0),
        );
        store_partial(y.simd_le(F32s::ZERO).select(F32s::ZERO, g), d);
    }
}

/// x <- 1 / (1 + e^-x).
pub fn sigmoid_inplace(x: &mut [f32]) {
    lanes::map_inplace(x, vmath::sigmoid);
}

/// grad <- grad * y * (1 - y), with y the sigmoid's output.
pub fn sigmoid_backward(y: &[f32], grad: &mut [f32]) {
    assert_eq!(y.len(), grad.len(), "sigmoid_backward: lengths differ");
    lanes::zip_inplace(y, grad, |y, g| g * (y * (F32s::ONE - y)));
}

/// Adds `bias[j]` to column j of every row of x (rows x bias.len()).
pub fn add_bias_rows(x: &mut [f32], bias: &[f32]) {
    assert!(
        !bias.is_empty() && x.len().is_multiple_of(bias.len()),
        "add_bias_rows: shape"
    );
    for row in x.chunks_exact_mut(bias.len()) {
        lanes::zip_inplace(bias, row, |b, v| v + b);
    }
}

/// `out[j] <- sum over rows of grad[row, j]` (overwrites). Rows are added in
/// order, in f32, as the reference does.
pub fn bias_grad_rows(grad: &[f32], out: &mut [f32]) {
    assert!(
        !out.is_empty() && grad.len().is_multiple_of(out.len()),
        "bias_grad_rows: shape"
    );
    out.fill(0.0);
    for row in grad.chunks_exact(out.len()) {
        lanes::zip_inplace(row, out, |g, o| o + g);
    }
}

/// `dst[i] <- src[i] / 255` (pixel bytes to [0, 1]); a true division, so the
/// result is the correctly rounded quotient, identical to the reference.
pub fn u8_to_unit_f32(src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "u8_to_unit_f32: lengths differ");
    let scale = F32s::splat(255.0);
    let mut dc = dst.chunks_exact_mut(LANES);
    let mut sc = src.chunks_exact(LANES);
    for (d, s) in (&mut dc).zip(&mut sc) {
        let v: [f32; LANES] = std::array::from_fn(|i| s[i] as f32);
        store(F32s::new(v) / scale, d);
    }
    let d = dc.into_remainder();
    if !d.is_empty() {
        let v: [f32; LANES] =
            std::array::from_fn(|i| sc.remainder().get(i).map_or(0.0, |&b| b as f32));
        store_partial(F32s::new(v) / scale, d);
    }
}
