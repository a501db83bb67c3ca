//! Layers with explicit forward and backward passes over a block of `rows`
//! samples (one rayon chunk of a minibatch). Parameters, inputs, outputs and
//! gradients are caller-owned slices so that workspaces are allocated once.
//!
//! Conventions: samples are rows; dense weights are `[n_out, n_in]`; image
//! tensors are NCHW. Every `backward` writes (overwrites) its parameter
//! gradients unless it says it accumulates, and takes the gradient with
//! respect to the layer's *output*; the activation's derivative is applied
//! inside, using the stored output.

use crate::kernels::activation::{relu_backward, sigmoid_backward};
use crate::kernels::conv::{
    conv2d_backward_filter, conv2d_backward_filter_with, conv2d_backward_input,
    conv2d_backward_input_with, conv2d_forward, conv2d_forward_with, ConvScratch, ConvShape,
};
use crate::kernels::gemm::{
    sgemm_sparse_input, sgemm_sparse_input_panels, sgemm_with_epilogue, Activation, Bias, Epilogue,
    SparsePanels, Trans,
};
use crate::kernels::pool::{maxpool2x2_backward, maxpool2x2_forward};

/// Applies the derivative of `act` to `grad` in place, given the activation's
/// output `y` (ReLU: grad where y > 0; sigmoid: grad * y * (1 - y)).
pub fn activation_backward(act: Activation, y: &[f32], grad: &mut [f32]) {
    match act {
        Activation::Identity => {}
        Activation::Relu => relu_backward(y, grad),
        Activation::Sigmoid => sigmoid_backward(y, grad),
    }
}

/// `out[j] (+)= sum over rows of g[row, j]`, summed in row order.
pub fn column_sums(g: &[f32], out: &mut [f32], accumulate: bool) {
    if !accumulate {
        out.fill(0.0);
    }
    for row in g.chunks_exact(out.len()) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// Fully connected layer y = act(x W^T + b), W stored `[n_out, n_in]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dense {
    pub n_in: usize,
    pub n_out: usize,
    pub activation: Activation,
}

impl Dense {
    pub fn new(n_in: usize, n_out: usize, activation: Activation) -> Self {
        Dense {
            n_in,
            n_out,
            activation,
        }
    }

    pub fn weight_len(&self) -> usize {
        self.n_in * self.n_out
    }

    /// y[rows, n_out] <- act(x[rows, n_in] W^T + b), bias and activation
    /// fused into the GEMM epilogue.
    pub fn forward(&self, w: &[f32], b: &[f32], x: &[f32], rows: usize, y: &mut [f32]) {
        sgemm_with_epilogue(
            Trans::N,
            Trans::T,
            rows,
            self.n_out,
            self.n_in,
            1.0,
            x,
            self.n_in,
            w,
            self.n_in,
            0.0,
            y,
            self.n_out,
            Epilogue {
                bias: Bias::Col(b),
                activation: self.activation,
            },
        );
    }

    /// [`Dense::forward`] for inputs with many exact zeros (image pixels):
    /// the input columns that are zero in all rows of a small tile of rows
    /// are skipped (see `sgemm_sparse_input`), with the same result up to
    /// summation order for finite weights.
    pub fn forward_sparse_input(
        &self,
        w: &[f32],
        b: &[f32],
        x: &[f32],
        rows: usize,
        y: &mut [f32],
    ) {
        self.forward_sparse_input_with(w, b, x, rows, y, None);
    }

    /// [`Dense::forward_sparse_input`] with W^T taken from `panels` where
    /// given (built from this layer's current W), the same values bit for
    /// bit; `w` is then not read.
    pub fn forward_sparse_input_with(
        &self,
        w: &[f32],
        b: &[f32],
        x: &[f32],
        rows: usize,
        y: &mut [f32],
        panels: Option<&SparsePanels>,
    ) {
        let epilogue = Epilogue {
            bias: Bias::Col(b),
            activation: self.activation,
        };
        let (n_in, n_out) = (self.n_in, self.n_out);
        match panels {
            None => sgemm_sparse_input(rows, n_out, n_in, x, n_in, w, n_in, y, n_out, epilogue),
            Some(panels) => {
                assert_eq!(
                    panels.shape(),
                    (n_out, n_in),
                    "panels of another layer's shape"
                );
                sgemm_sparse_input_panels(rows, x, n_in, panels, y, n_out, epilogue);
            }
        }
    }

    /// Backward pass. `dy` holds dL/dy on entry and dL/d(pre-activation) on
    /// return. Writes dW, db and, if given, dx (overwriting all three).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        w: &[f32],
        x: &[f32],
        y: &[f32],
        dy: &mut [f32],
        rows: usize,
        dw: &mut [f32],
        db: &mut [f32],
        dx: Option<&mut [f32]>,
    ) {
        self.backward_delta(w, y, dy, rows, dx);
        let dz = &dy[..rows * self.n_out];
        // dW[n_out, n_in] = dz^T x
        sgemm_with_epilogue(
            Trans::T,
            Trans::N,
            self.n_out,
            self.n_in,
            rows,
            1.0,
            dz,
            self.n_out,
            x,
            self.n_in,
            0.0,
            dw,
            self.n_in,
            Epilogue::NONE,
        );
        column_sums(dz, db, false);
    }

    /// Backward pass without parameter gradients (the trainer's fused update
    /// computes them later from the kept `dy` and `x`, see
    /// [`crate::nn::TensorGrad`]). `dy` holds dL/dy on entry and
    /// dL/d(pre-activation) on return; writes dx if given.
    pub fn backward_delta(
        &self,
        w: &[f32],
        y: &[f32],
        dy: &mut [f32],
        rows: usize,
        dx: Option<&mut [f32]>,
    ) {
        let n = rows * self.n_out;
        activation_backward(self.activation, &y[..n], &mut dy[..n]);
        if let Some(dx) = dx {
            self.input_gradient(w, &dy[..n], rows, dx);
        }
    }

    /// dx[rows, n_in] <- dz W.
    fn input_gradient(&self, w: &[f32], dz: &[f32], rows: usize, dx: &mut [f32]) {
        sgemm_with_epilogue(
            Trans::N,
            Trans::N,
            rows,
            self.n_in,
            self.n_out,
            1.0,
            dz,
            self.n_out,
            w,
            self.n_in,
            0.0,
            dx,
            self.n_in,
            Epilogue::NONE,
        );
    }
}

/// Valid, stride-1 convolution with a fused activation (ReLU or identity).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// The shape of one image (`batch` is ignored; each call sets it).
    pub shape: ConvShape,
    pub activation: Activation,
}

impl Conv2d {
    pub fn new(c_in: usize, h: usize, w: usize, c_out: usize, k: usize, act: Activation) -> Self {
        Conv2d {
            shape: ConvShape {
                batch: 1,
                c_in,
                h,
                w,
                c_out,
                kh: k,
                kw: k,
            },
            activation: act,
        }
    }
    pub fn input_len(&self) -> usize {
        self.shape.with_batch(1).input_len()
    }
    pub fn output_len(&self) -> usize {
        self.shape.with_batch(1).output_len()
    }
    pub fn weight_len(&self) -> usize {
        self.shape.weight_len()
    }
    /// Glorot fans as the assignment's code computes them for a conv layer.
    pub fn fans(&self) -> (usize, usize) {
        let k = self.shape.kh * self.shape.kw;
        (self.shape.c_in * k, self.shape.c_out * k)
    }

    /// y <- act(conv(x, W) + b) for `rows` images.
    pub fn forward(&self, w: &[f32], b: &[f32], x: &[f32], rows: usize, y: &mut [f32]) {
        let s = self.shape.with_batch(rows);
        conv2d_forward(
            &s,
            &x[..s.input_len()],
            w,
            b,
            &mut y[..s.output_len()],
            self.activation,
        );
    }

    /// `forward` with caller-owned kernel scratch (no allocation once grown).
    pub fn forward_with(
        &self,
        w: &[f32],
        b: &[f32],
        x: &[f32],
        rows: usize,
        y: &mut [f32],
        scratch: &mut ConvScratch,
    ) {
        let s = self.shape.with_batch(rows);
        conv2d_forward_with(
            &s,
            &x[..s.input_len()],
            w,
            b,
            &mut y[..s.output_len()],
            self.activation,
            scratch,
        );
    }

    /// `backward` with caller-owned kernel scratch, after the activation's
    /// derivative has been applied to `dy` (e.g. folded into a max-pool
    /// backward).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_with(
        &self,
        w: &[f32],
        x: &[f32],
        dy: &[f32],
        rows: usize,
        dw: &mut [f32],
        db: &mut [f32],
        dx: Option<&mut [f32]>,
        scratch: &mut ConvScratch,
    ) {
        let s = self.shape.with_batch(rows);
        let n = s.output_len();
        conv2d_backward_filter_with(&s, &x[..s.input_len()], &dy[..n], dw, db, scratch);
        if let Some(dx) = dx {
            conv2d_backward_input_with(&s, &dy[..n], w, &mut dx[..s.input_len()], scratch);
        }
    }

    /// `dy` holds dL/dy on entry; unless `activation_done` (the caller already
    /// applied the activation's derivative, e.g. folded into a max-pool
    /// backward), the derivative is applied here using `y`. Writes dW, db and,
    /// if given, dx.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        w: &[f32],
        x: &[f32],
        y: &[f32],
        dy: &mut [f32],
        activation_done: bool,
        rows: usize,
        dw: &mut [f32],
        db: &mut [f32],
        dx: Option<&mut [f32]>,
    ) {
        let s = self.shape.with_batch(rows);
        let n = s.output_len();
        if !activation_done {
            activation_backward(self.activation, &y[..n], &mut dy[..n]);
        }
        conv2d_backward_filter(&s, &x[..s.input_len()], &dy[..n], dw, db);
        if let Some(dx) = dx {
            conv2d_backward_input(&s, &dy[..n], w, &mut dx[..s.input_len()]);
        }
    }
}

/// 2x2, stride-2 max pooling over `channels` planes of `h x w` per image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2d {
    pub channels: usize,
    pub h: usize,
    pub w: usize,
}

impl MaxPool2d {
    pub fn input_len(&self) -> usize {
        self.channels * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.channels * (self.h / 2) * (self.w / 2)
    }
    pub fn forward(&self, x: &[f32], rows: usize, y: &mut [f32], argmax: &mut [u32]) {
        let (ni, no) = (rows * self.input_len(), rows * self.output_len());
        maxpool2x2_forward(
            rows * self.channels,
            self.h,
            self.w,
            &x[..ni],
            &mut y[..no],
            &mut argmax[..no],
        );
    }

    /// dx <- dy scattered to the argmax (overwrites dx).
    ///
    /// If `relu_below` is set, the pool's input came from a ReLU and `dy` is
    /// first zeroed where the pooled output `y` is <= 0: the argmax element
    /// *is* the pooled value, so this applies the ReLU derivative on the 4x
    /// smaller tensor (non-argmax inputs get zero either way).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        y: &[f32],
        dy: &mut [f32],
        argmax: &[u32],
        relu_below: bool,
        rows: usize,
        dx: &mut [f32],
    ) {
        let (ni, no) = (rows * self.input_len(), rows * self.output_len());
        if relu_below {
            relu_backward(&y[..no], &mut dy[..no]);
        }
        maxpool2x2_backward(
            rows * self.channels,
            self.h,
            self.w,
            &dy[..no],
            &argmax[..no],
            &mut dx[..ni],
        );
    }
}

/// A tied-weight autoencoder layer: h = sigmoid(x W^T + b) with W
/// `[n_hidden, n_visible]`, reconstruction logits a = h W + b_vis (the decoder
/// uses W^T in the textbook's `[n_visible, n_hidden]` convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TiedAutoencoder {
    pub n_visible: usize,
    pub n_hidden: usize,
}

impl TiedAutoencoder {
    pub fn encoder(&self) -> Dense {
        Dense::new(self.n_visible, self.n_hidden, Activation::Sigmoid)
    }

    /// h <- sigmoid(x W^T + b).
    pub fn encode(&self, w: &[f32], b: &[f32], x: &[f32], rows: usize, h: &mut [f32]) {
        self.encoder().forward(w, b, x, rows, h);
    }

    /// [`TiedAutoencoder::encode`] of images (many exact zeros; see
    /// [`Dense::forward_sparse_input_with`]), reading W^T from `panels`
    /// where given (built from the current W).
    pub fn encode_sparse_input(
        &self,
        w: &[f32],
        b: &[f32],
        x: &[f32],
        rows: usize,
        h: &mut [f32],
        panels: Option<&SparsePanels>,
    ) {
        self.encoder()
            .forward_sparse_input_with(w, b, x, rows, h, panels);
    }

    /// out <- act(h W + b_vis): `Identity` gives the logits (for the loss),
    /// `Sigmoid` the reconstruction.
    #[allow(clippy::too_many_arguments)]
    pub fn decode(
        &self,
        w: &[f32],
        b_vis: &[f32],
        h: &[f32],
        rows: usize,
        out: &mut [f32],
        act: Activation,
    ) {
        sgemm_with_epilogue(
            Trans::N,
            Trans::N,
            rows,
            self.n_visible,
            self.n_hidden,
            1.0,
            h,
            self.n_hidden,
            w,
            self.n_visible,
            0.0,
            out,
            self.n_visible,
            Epilogue {
                bias: Bias::Col(b_vis),
                activation: act,
            },
        );
    }

    /// Decoder backward from `da` = dL/d(logits). With `grads` =
    /// `(dW, db_vis, accumulate)`: dW `[n_hidden, n_visible]` gets h^T da and
    /// db_vis the column sums of da (added if `accumulate`, else written);
    /// dh (if given) <- da W^T.
    #[allow(clippy::too_many_arguments)]
    pub fn decode_backward(
        &self,
        w: &[f32],
        h: &[f32],
        da: &[f32],
        rows: usize,
        grads: Option<(&mut [f32], &mut [f32], bool)>,
        dh: Option<&mut [f32]>,
    ) {
        let da = &da[..rows * self.n_visible];
        if let Some((dw, db_vis, accumulate)) = grads {
            sgemm_with_epilogue(
                Trans::T,
                Trans::N,
                self.n_hidden,
                self.n_visible,
                rows,
                1.0,
                h,
                self.n_hidden,
                da,
                self.n_visible,
                if accumulate { 1.0 } else { 0.0 },
                dw,
                self.n_visible,
                Epilogue::NONE,
            );
            column_sums(da, db_vis, accumulate);
        }
        if let Some(dh) = dh {
            sgemm_with_epilogue(
                Trans::N,
                Trans::T,
                rows,
                self.n_hidden,
                self.n_visible,
                1.0,
                da,
                self.n_visible,
                w,
                self.n_visible,
                0.0,
                dh,
                self.n_hidden,
                Epilogue::NONE,
            );
        }
    }

    /// Encoder backward: `dh` holds dL/dh on entry, dL/d(pre-activation) on
    /// return; dW (+)= dz^T x, db (+)= column sums of dz.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_backward(
        &self,
        x: &[f32],
        h: &[f32],
        dh: &mut [f32],
        rows: usize,
        dw: &mut [f32],
        db: &mut [f32],
        accumulate: bool,
    ) {
        let n = rows * self.n_hidden;
        sigmoid_backward(&h[..n], &mut dh[..n]);
        sgemm_with_epilogue(
            Trans::T,
            Trans::N,
            self.n_hidden,
            self.n_visible,
            rows,
            1.0,
            &dh[..n],
            self.n_hidden,
            x,
            self.n_visible,
            if accumulate { 1.0 } else { 0.0 },
            dw,
            self.n_visible,
            Epilogue::NONE,
        );
        column_sums(&dh[..n], db, accumulate);
    }
}
