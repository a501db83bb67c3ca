//! Valid, stride-1 2-D convolution (cross-correlation) on NCHW tensors.
//!
//! Direct SIMD kernels (see `lanes` for the layout: a group of images packed
//! one per SIMD lane). The plain functions are single-threaded; the trainer runs
//! one coarse batch chunk per core. The `_parallel` variants split the batch
//! into fixed chunks of `PAR_CHUNK` images with rayon; the filter gradient sums
//! per-chunk results in chunk order, so it is bit-identical for the same inputs
//! whatever the thread count.
//!
//! The first layer of a network needs no gradient to its input: simply do not
//! call `conv2d_backward_input` for it (the filter gradient is a separate call).
//!
//! A conv -> ReLU -> 2x2 max-pool block can run fused:
//! `conv2d_forward_maxpool2x2_with` and `conv2d_backward_from_maxpool2x2_with`
//! give bit-identical results to the separate kernels without materialising
//! the conv output or its gradient. `conv2d_backward_from_maxpool2x2_winners`
//! computes the same gradients from each pooling window's winner alone (a
//! quarter of the multiply-adds; equal within rounding): faster where a
//! pixel's input channels fill the lanes (`winners_pay_off`).
//!
//! Layouts: input [batch, c_in, h, w]; weight [c_out, c_in, kh, kw];
//! bias `[c_out]`; output `[batch, c_out, h - kh + 1, w - kw + 1]`.

use crate::gemm::Activation;
use rayon::prelude::*;
use std::cell::RefCell;

mod lanes;
mod winners;

pub use winners::Layout as WinnersLayout;
pub(crate) mod transpose;

/// SIMD lanes (images per packed group) in this build: 16, 8 or 4.
pub const LANES: usize = lanes::L;

/// Images per chunk in the `_parallel` functions. Fixed (not derived from the
/// thread count) so that the filter gradient's summation order never changes.
pub const PAR_CHUNK: usize = 32;

/// Packing buffers for the `_with` functions: they grow on first use and are
/// reused, so a caller that keeps one per worker (e.g. in its per-chunk
/// workspace) allocates nothing per call, deterministically. The plain
/// functions use a thread-local one instead.
#[derive(Clone, Debug, Default)]
pub struct ConvScratch {
    lanes: lanes::Scratch,
    winners: winners::Scratch,
    /// The layout the winners' backward pass uses; `None`: the one with
    /// fewer vectors per receptive field.
    winners_layout: Option<WinnersLayout>,
}

impl ConvScratch {
    /// Scratch whose winners' backward pass always uses `layout` (the tests
    /// check both layouts on every shape).
    pub fn with_winners_layout(layout: WinnersLayout) -> ConvScratch {
        ConvScratch {
            winners_layout: Some(layout),
            ..ConvScratch::default()
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<ConvScratch> = RefCell::new(ConvScratch::default());
}

/// Runs `f` with this thread's scratch. No kernel calls another while holding
/// it, so the borrow is never re-entered.
fn with_scratch<R>(f: impl FnOnce(&mut ConvScratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

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
    /// Elements of the output after 2x2 max pooling (odd sizes floor).
    pub fn pooled_len(&self) -> usize {
        self.batch * self.c_out * (self.out_h() / 2) * (self.out_w() / 2)
    }
    /// Multiply-adds of one forward pass (each backward pass does as many).
    pub fn macs(&self) -> usize {
        self.output_len() * self.c_in * self.kh * self.kw
    }
    /// The same shape for a different batch size.
    pub fn with_batch(&self, batch: usize) -> Self {
        ConvShape { batch, ..*self }
    }
    /// Elements of one image's input and output, or None if there are none
    /// (empty batch or empty planes): the `_parallel` functions then defer
    /// to the plain ones.
    fn image_lens(&self) -> Option<(usize, usize)> {
        let (i, o) = (
            self.c_in * self.h * self.w,
            self.c_out * self.out_h() * self.out_w(),
        );
        (self.batch > 0 && i > 0 && o > 0).then_some((i, o))
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
    with_scratch(|sc| conv2d_forward_with(s, input, weight, bias, output, act, sc))
}

/// `conv2d_forward` with caller-owned scratch.
pub fn conv2d_forward_with(
    s: &ConvShape,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    output: &mut [f32],
    act: Activation,
    scratch: &mut ConvScratch,
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
    lanes::forward(&mut scratch.lanes, s, input, weight, bias, output, act);
}

/// `conv2d_forward` followed by `pool::maxpool2x2_forward` on its output
/// planes, fused: `pooled` and `argmax` (`[batch, c_out, out_h / 2, out_w / 2]`,
/// indices within each `out_h x out_w` plane) are bit-identical to the two
/// calls in sequence, but the convolution's output is never stored (no write
/// and re-read of the largest tensor; the unpacking covers the pooled
/// values and the argmax, half the conv output's size). For a
/// network whose backward pass needs only the pooled values and the argmax
/// (ReLU's derivative folded into the pooling's backward).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_maxpool2x2_with(
    s: &ConvShape,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    act: Activation,
    pooled: &mut [f32],
    argmax: &mut [u32],
    scratch: &mut ConvScratch,
) {
    s.check();
    let pooled_len = s.pooled_len();
    assert_eq!(
        input.len(),
        s.input_len(),
        "conv2d_forward_maxpool2x2: input length"
    );
    assert_eq!(
        weight.len(),
        s.weight_len(),
        "conv2d_forward_maxpool2x2: weight length"
    );
    assert_eq!(
        bias.len(),
        s.c_out,
        "conv2d_forward_maxpool2x2: bias length"
    );
    assert_eq!(
        pooled.len(),
        pooled_len,
        "conv2d_forward_maxpool2x2: pooled length"
    );
    assert_eq!(
        argmax.len(),
        pooled_len,
        "conv2d_forward_maxpool2x2: argmax length"
    );
    lanes::forward_maxpool(
        &mut scratch.lanes,
        s,
        input,
        weight,
        bias,
        act,
        pooled,
        argmax,
    );
}

/// grad_input <- dL/d(input) given dL/d(output) (overwrites).
pub fn conv2d_backward_input(
    s: &ConvShape,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    with_scratch(|sc| conv2d_backward_input_with(s, grad_output, weight, grad_input, sc))
}

/// `conv2d_backward_input` with caller-owned scratch.
pub fn conv2d_backward_input_with(
    s: &ConvShape,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
    scratch: &mut ConvScratch,
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
    lanes::backward_input(&mut scratch.lanes, s, grad_output, weight, grad_input);
}

/// The backward pass of a convolution followed by ReLU and
/// `pool::maxpool2x2_forward`, from the pooled gradient: `pooled_grad` is
/// dL/d(pooled) with ReLU's derivative already applied (zero where the pooled
/// value is <= 0), `argmax` the pooling's indices. Gives exactly what
/// `pool::maxpool2x2_backward` followed by `conv2d_backward_filter` (and
/// `conv2d_backward_input` if `grad_input` is given) give, but the output
/// gradient is rebuilt directly in the kernels' packed layout: it is never
/// written out, re-read and transposed (one packing serves both gradients).
///
/// Panics if an argmax index is not one of its window's four positions (the
/// argmax must come from the forward pass; a hand-made one can use the
/// separate kernels).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_from_maxpool2x2_with(
    s: &ConvShape,
    input: &[f32],
    weight: &[f32],
    pooled_grad: &[f32],
    argmax: &[u32],
    grad_weight: &mut [f32],
    grad_bias: &mut [f32],
    grad_input: Option<&mut [f32]>,
    scratch: &mut ConvScratch,
) {
    let what = "conv2d_backward_from_maxpool2x2";
    let lens = [input, weight, pooled_grad, grad_weight, grad_bias].map(<[f32]>::len);
    check_pooled_backward(what, s, lens, argmax.len(), grad_input.as_deref());
    let in_windows = lanes::backward_from_maxpool(
        &mut scratch.lanes,
        s,
        input,
        weight,
        pooled_grad,
        argmax,
        grad_weight,
        grad_bias,
        grad_input,
    );
    assert!(
        in_windows,
        "{what}: an argmax index lies outside its 2x2 window"
    );
}

/// The shape and lengths of a backward pass from a pooled gradient: `lens`
/// are those of input, weight, pooled gradient, filter and bias gradients.
fn check_pooled_backward(
    what: &str,
    s: &ConvShape,
    lens: [usize; 5],
    argmax_len: usize,
    grad_input: Option<&[f32]>,
) {
    s.check();
    let pooled_len = s.pooled_len();
    let want = [
        s.input_len(),
        s.weight_len(),
        pooled_len,
        s.weight_len(),
        s.c_out,
    ];
    let names = ["input", "weight", "pooled_grad", "grad_weight", "grad_bias"];
    for ((len, want), name) in lens.into_iter().zip(want).zip(names) {
        assert_eq!(len, want, "{what}: {name} length");
    }
    assert_eq!(argmax_len, pooled_len, "{what}: argmax length");
    if let Some(gi) = grad_input {
        assert_eq!(gi.len(), s.input_len(), "{what}: grad_input length");
    }
}

/// Whether [`conv2d_backward_from_maxpool2x2_winners`] beats the dense
/// [`conv2d_backward_from_maxpool2x2_with`] on shape `s`: where a pixel's
/// input channels fill the lanes (`WinnersLayout::Channels`, at least half a
/// vector of channels). The winners' pass does a quarter of the multiply-adds
/// but loads a vector for each; the dense tiles reuse every load for many.
/// Measured (`conv_timing`, 64 images, one thread, AVX-512): conv2 (15 -> 20
/// channels) 290-310 us against 519-550 dense; conv1 (1 -> 15, rows on the
/// lanes, 9 of 16 lanes used) 943 against 751 in one session and 412-434
/// against 441-475 in another, but in the trainer (one thread, 3 alternating
/// epochs) no faster: 1.606 / 1.634 / 1.492 s against 1.628 / 1.482 / 1.479.
pub fn winners_pay_off(s: &ConvShape) -> bool {
    WinnersLayout::for_shape(s) == WinnersLayout::Channels && 2 * s.c_in >= LANES
}

/// The gradients of [`conv2d_backward_from_maxpool2x2_with`], computed from
/// each pooling window's winner alone (see `winners`): at most a quarter of
/// the multiply-adds, summed in another order, so equal to it within
/// rounding rather than bit for bit. Terms whose pooled gradient is zero are
/// skipped (they add exactly zero when the input is finite).
///
/// Panics on the same bad lengths and argmax indices.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_from_maxpool2x2_winners(
    s: &ConvShape,
    input: &[f32],
    weight: &[f32],
    pooled_grad: &[f32],
    argmax: &[u32],
    grad_weight: &mut [f32],
    grad_bias: &mut [f32],
    grad_input: Option<&mut [f32]>,
    scratch: &mut ConvScratch,
) {
    let what = "conv2d_backward_from_maxpool2x2_winners";
    let lens = [input, weight, pooled_grad, grad_weight, grad_bias].map(<[f32]>::len);
    check_pooled_backward(what, s, lens, argmax.len(), grad_input.as_deref());
    let layout = scratch
        .winners_layout
        .unwrap_or_else(|| WinnersLayout::for_shape(s));
    let in_windows = winners::backward_from_winners(
        &mut scratch.winners,
        s,
        layout,
        input,
        weight,
        pooled_grad,
        argmax,
        grad_weight,
        grad_bias,
        grad_input,
    );
    assert!(
        in_windows,
        "{what}: an argmax index lies outside its 2x2 window"
    );
}

/// grad_weight, grad_bias <- sums over the batch of dL/dW, dL/db (overwrites).
pub fn conv2d_backward_filter(
    s: &ConvShape,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
    grad_bias: &mut [f32],
) {
    with_scratch(|sc| {
        conv2d_backward_filter_with(s, input, grad_output, grad_weight, grad_bias, sc)
    })
}

/// `conv2d_backward_filter` with caller-owned scratch.
pub fn conv2d_backward_filter_with(
    s: &ConvShape,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
    grad_bias: &mut [f32],
    scratch: &mut ConvScratch,
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
    lanes::backward_filter(
        &mut scratch.lanes,
        s,
        input,
        grad_output,
        grad_weight,
        grad_bias,
    );
}

/// `conv2d_forward` with rayon over fixed chunks of `PAR_CHUNK` images.
pub fn conv2d_forward_parallel(
    s: &ConvShape,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    output: &mut [f32],
    act: Activation,
) {
    s.check();
    assert_eq!(
        input.len(),
        s.input_len(),
        "conv2d_forward_parallel: input length"
    );
    assert_eq!(
        output.len(),
        s.output_len(),
        "conv2d_forward_parallel: output length"
    );
    let Some((in_img, out_img)) = s.image_lens() else {
        return conv2d_forward(s, input, weight, bias, output, act);
    };
    output
        .par_chunks_mut(PAR_CHUNK * out_img)
        .zip(input.par_chunks(PAR_CHUNK * in_img))
        .for_each(|(out, inp)| {
            let cs = s.with_batch(inp.len() / in_img);
            conv2d_forward(&cs, inp, weight, bias, out, act);
        });
}

/// `conv2d_backward_input` with rayon over fixed chunks of `PAR_CHUNK` images.
pub fn conv2d_backward_input_parallel(
    s: &ConvShape,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    s.check();
    assert_eq!(
        grad_output.len(),
        s.output_len(),
        "conv2d_backward_input_parallel: grad_output length"
    );
    assert_eq!(
        grad_input.len(),
        s.input_len(),
        "conv2d_backward_input_parallel: grad_input length"
    );
    let Some((in_img, out_img)) = s.image_lens() else {
        return conv2d_backward_input(s, grad_output, weight, grad_input);
    };
    grad_input
        .par_chunks_mut(PAR_CHUNK * in_img)
        .zip(grad_output.par_chunks(PAR_CHUNK * out_img))
        .for_each(|(gi, go)| {
            let cs = s.with_batch(gi.len() / in_img);
            conv2d_backward_input(&cs, go, weight, gi);
        });
}

/// `conv2d_backward_filter` with rayon: each chunk of `PAR_CHUNK` images
/// computes its own gradients, which are then summed in chunk order
/// (bit-identical whatever the number of threads).
pub fn conv2d_backward_filter_parallel(
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
        "conv2d_backward_filter_parallel: input length"
    );
    assert_eq!(
        grad_output.len(),
        s.output_len(),
        "conv2d_backward_filter_parallel: grad_output length"
    );
    assert_eq!(
        grad_weight.len(),
        s.weight_len(),
        "conv2d_backward_filter_parallel: grad_weight length"
    );
    assert_eq!(
        grad_bias.len(),
        s.c_out,
        "conv2d_backward_filter_parallel: grad_bias length"
    );
    let Some((in_img, out_img)) = s.image_lens() else {
        return conv2d_backward_filter(s, input, grad_output, grad_weight, grad_bias);
    };
    // One buffer for all chunks' partial gradients (weights then bias per
    // chunk), summed below in chunk order.
    let part_len = s.weight_len() + s.c_out;
    let mut parts = vec![0.0f32; s.batch.div_ceil(PAR_CHUNK) * part_len];
    parts
        .par_chunks_mut(part_len)
        .zip(input.par_chunks(PAR_CHUNK * in_img))
        .zip(grad_output.par_chunks(PAR_CHUNK * out_img))
        .for_each(|((part, inp), go)| {
            let cs = s.with_batch(inp.len() / in_img);
            let (gw, gb) = part.split_at_mut(s.weight_len());
            conv2d_backward_filter(&cs, inp, go, gw, gb);
        });
    grad_weight.fill(0.0);
    grad_bias.fill(0.0);
    for part in parts.chunks_exact(part_len) {
        let (gw, gb) = part.split_at(s.weight_len());
        for (d, v) in grad_weight.iter_mut().zip(gw) {
            *d += v;
        }
        for (d, v) in grad_bias.iter_mut().zip(gb) {
            *d += v;
        }
    }
}
