//! Valid, stride-1 2-D convolution (cross-correlation) on NCHW tensors.
//!
//! PLACEHOLDER: delegates to the reference loops until the direct SIMD kernels
//! land (issue 4). The signatures are the contract the trainer uses.
//!
//! Layouts: input [batch, c_in, h, w]; weight [c_out, c_in, kh, kw];
//! bias [c_out]; output [batch, c_out, h - kh + 1, w - kw + 1].

use crate::gemm::Activation;

/// The shape of one convolution over a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
}

impl ConvShape {
    pub fn out_h(&self) -> usize {
        self.h + 1 - self.kh
    }
    pub fn out_w(&self) -> usize {
        self.w + 1 - self.kw
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.c_in * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.c_out * self.out_h() * self.out_w()
    }
    pub fn weight_len(&self) -> usize {
        self.c_out * self.c_in * self.kh * self.kw
    }
    /// Multiply-adds of one forward pass (each backward pass does as many).
    pub fn macs(&self) -> usize {
        self.output_len() * self.c_in * self.kh * self.kw
    }
    /// The same shape for a different batch size.
    pub fn with_batch(&self, batch: usize) -> Self {
        ConvShape { batch, ..*self }
    }
    fn check(&self) {
        assert!(
            self.kh >= 1 && self.kw >= 1 && self.kh <= self.h && self.kw <= self.w,
            "conv: kernel {}x{} does not fit image {}x{}",
            self.kh,
            self.kw,
            self.h,
            self.w
        );
    }
}

/// output <- act(conv(input, weight) + bias).
pub fn conv2d_forward(
    s: &ConvShape,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    output: &mut [f32],
    act: Activation,
) {
    s.check();
    assert_eq!(input.len(), s.input_len(), "conv2d_forward: input length");
    assert_eq!(
        weight.len(),
        s.weight_len(),
        "conv2d_forward: weight length"
    );
    assert_eq!(bias.len(), s.c_out, "conv2d_forward: bias length");
    assert_eq!(
        output.len(),
        s.output_len(),
        "conv2d_forward: output length"
    );
    crate::reference::conv2d_forward(s, input, weight, bias, output, act);
}

/// grad_input <- dL/d(input) given dL/d(output) (overwrites).
pub fn conv2d_backward_input(
    s: &ConvShape,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    s.check();
    assert_eq!(
        grad_output.len(),
        s.output_len(),
        "conv2d_backward_input: grad_output length"
    );
    assert_eq!(
        weight.len(),
        s.weight_len(),
        "conv2d_backward_input: weight length"
    );
    assert_eq!(
        grad_input.len(),
        s.input_len(),
        "conv2d_backward_input: grad_input length"
    );
    crate::reference::conv2d_backward_input(s, grad_output, weight, grad_input);
}

/// grad_weight, grad_bias <- sums over the batch of dL/dW, dL/db (overwrites).
pub fn conv2d_backward_filter(
    s: &ConvShape,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
    grad_bias: &mut [f32],
) {
    s.check();
    assert_eq!(
        input.len(),
        s.input_len(),
        "conv2d_backward_filter: input length"
    );
    assert_eq!(
        grad_output.len(),
        s.output_len(),
        "conv2d_backward_filter: grad_output length"
    );
    assert_eq!(
        grad_weight.len(),
        s.weight_len(),
        "conv2d_backward_filter: grad_weight length"
    );
    assert_eq!(
        grad_bias.len(),
        s.c_out,
        "conv2d_backward_filter: grad_bias length"
    );
    crate::reference::conv2d_backward_filter(s, input, grad_output, grad_weight, grad_bias);
}
