//! 2x2, stride-2 max pooling on planes (NCHW: planes = batch * channels).
//!
//! PLACEHOLDER until issue 4's SIMD version lands. Odd sizes floor (the last
//! row/column is dropped). Ties go to the first element of the window in
//! row-major order, so the gradient reaches exactly one input.

fn check(
    planes: usize,
    h: usize,
    w: usize,
    input_len: usize,
    output_len: usize,
    argmax_len: usize,
) {
    assert_eq!(input_len, planes * h * w, "maxpool2x2: input length");
    assert_eq!(
        output_len,
        planes * (h / 2) * (w / 2),
        "maxpool2x2: output length"
    );
    assert_eq!(argmax_len, output_len, "maxpool2x2: argmax length");
}

/// output <- max over each 2x2 window; argmax <- the winner's index in its plane.
pub fn maxpool2x2_forward(
    planes: usize,
    h: usize,
    w: usize,
    input: &[f32],
    output: &mut [f32],
    argmax: &mut [u32],
) {
    check(planes, h, w, input.len(), output.len(), argmax.len());
    crate::reference::maxpool2x2_forward(planes, h, w, input, output, argmax);
}

/// grad_input <- grad_output scattered to the recorded argmax (overwrites).
pub fn maxpool2x2_backward(
    planes: usize,
    h: usize,
    w: usize,
    grad_output: &[f32],
    argmax: &[u32],
    grad_input: &mut [f32],
) {
    check(
        planes,
        h,
        w,
        grad_input.len(),
        grad_output.len(),
        argmax.len(),
    );
    crate::reference::maxpool2x2_backward(planes, h, w, grad_output, argmax, grad_input);
}
