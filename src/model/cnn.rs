//! The study's CNN: conv -> ReLU -> maxpool -> conv -> ReLU -> maxpool ->
//! dense ReLU -> dense softmax, with any small shape for the tests.

use super::Classifier;
use crate::bench::profile::{timed, Phase};
use crate::kernels::activation::relu_backward;
use crate::kernels::conv::{
    conv2d_backward_from_maxpool2x2_winners, conv2d_backward_from_maxpool2x2_with,
    conv2d_forward_maxpool2x2_with, winners_pay_off, ConvScratch, ConvShape,
};
use crate::kernels::gemm::Activation;
use crate::kernels::rng::Rng;
use crate::nn::params::split_two;
use crate::nn::{
    count_correct, glorot_bound, init_uniform, softmax_cross_entropy, Conv2d, Dense, MaxPool2d,
    ParamLayout,
};

/// Sizes of the CNN. [`CnnShape::STUDY`] is the study's network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CnnShape {
    pub in_h: usize,
    pub in_w: usize,
    /// Filters and square kernel size of the first convolution.
    pub c1: usize,
    pub k1: usize,
    /// Filters and square kernel size of the second convolution.
    pub c2: usize,
    pub k2: usize,
    /// Units of the hidden dense layer.
    pub hidden: usize,
    pub classes: usize,
}

impl CnnShape {
    /// 28x28 -> 15@9x9 -> pool -> 20@5x5 -> pool -> 180 -> 100 -> 10.
    pub const STUDY: CnnShape = CnnShape {
        in_h: 28,
        in_w: 28,
        c1: 15,
        k1: 9,
        c2: 20,
        k2: 5,
        hidden: 100,
        classes: 10,
    };

    fn layers(&self) -> (Conv2d, MaxPool2d, Conv2d, MaxPool2d, Dense, Dense) {
        let conv1 = Conv2d::new(1, self.in_h, self.in_w, self.c1, self.k1, Activation::Relu);
        let (h1, w1) = (conv1.shape.out_h(), conv1.shape.out_w());
        let pool1 = MaxPool2d {
            channels: self.c1,
            h: h1,
            w: w1,
        };
        let conv2 = Conv2d::new(self.c1, h1 / 2, w1 / 2, self.c2, self.k2, Activation::Relu);
        let (h2, w2) = (conv2.shape.out_h(), conv2.shape.out_w());
        let pool2 = MaxPool2d {
            channels: self.c2,
            h: h2,
            w: w2,
        };
        let fc1 = Dense::new(pool2.output_len(), self.hidden, Activation::Relu);
        let fc2 = Dense::new(self.hidden, self.classes, Activation::Identity);
        (conv1, pool1, conv2, pool2, fc1, fc2)
    }

    /// Whether every stage has a non-empty output.
    pub fn is_valid(&self) -> bool {
        if self.k1 == 0 || self.k2 == 0 || self.k1 > self.in_h || self.k1 > self.in_w {
            return false;
        }
        let (h1, w1) = ((self.in_h + 1 - self.k1) / 2, (self.in_w + 1 - self.k1) / 2);
        self.k2 <= h1
            && self.k2 <= w1
            && (h1 + 1 - self.k2) / 2 >= 1
            && (w1 + 1 - self.k2) / 2 >= 1
            && self.c1 * self.c2 * self.hidden * self.classes > 0
    }
}

/// The CNN and its parameters.
#[derive(Clone, Debug)]
pub struct Cnn {
    pub shape: CnnShape,
    conv1: Conv2d,
    pool1: MaxPool2d,
    conv2: Conv2d,
    pool2: MaxPool2d,
    fc1: Dense,
    fc2: Dense,
    layout: ParamLayout,
    params: Vec<f32>,
}

/// Feature maps of a few images, for figures (each `[n, channels, h, w]`).
#[derive(Clone, Debug)]
pub struct CnnFeatures {
    pub conv1: Vec<f32>,
    pub pool1: Vec<f32>,
    pub conv2: Vec<f32>,
    pub pool2: Vec<f32>,
    pub hidden: Vec<f32>,
    pub logits: Vec<f32>,
}

/// Per-chunk buffers of the CNN.
#[derive(Clone, Debug)]
pub struct CnnWorkspace {
    max_rows: usize,
    x: Vec<f32>,
    c1: Vec<f32>,
    p1: Vec<f32>,
    a1: Vec<u32>,
    c2: Vec<f32>,
    p2: Vec<f32>,
    a2: Vec<u32>,
    h: Vec<f32>,
    logits: Vec<f32>,
    probs: Vec<f32>,
    dlogits: Vec<f32>,
    dh: Vec<f32>,
    dp2: Vec<f32>,
    dp1: Vec<f32>,
    /// The conv kernels' packing buffers, grown during the first batch.
    conv_scratch: ConvScratch,
    /// Whether the last forward pass stored the conv outputs `c1`, `c2`
    /// (training and evaluation fuse each conv with its pooling and skip them).
    conv_maps: bool,
}

impl Cnn {
    /// A network of `shape` with Glorot-uniform weights (conv fans
    /// c_in*kh*kw and c_out*kh*kw) and zero biases, drawn from `seed`.
    pub fn new(shape: CnnShape, seed: u64) -> Self {
        assert!(shape.is_valid(), "invalid CNN shape {shape:?}");
        let (conv1, pool1, conv2, pool2, fc1, fc2) = shape.layers();
        let mut layout = ParamLayout::new();
        let s1 = conv1.shape;
        let s2 = conv2.shape;
        layout.push("conv1.weight", &[s1.c_out, s1.c_in, s1.kh, s1.kw]);
        layout.push("conv1.bias", &[s1.c_out]);
        layout.push("conv2.weight", &[s2.c_out, s2.c_in, s2.kh, s2.kw]);
        layout.push("conv2.bias", &[s2.c_out]);
        layout.push("fc1.weight", &[fc1.n_out, fc1.n_in]);
        layout.push("fc1.bias", &[fc1.n_out]);
        layout.push("fc2.weight", &[fc2.n_out, fc2.n_in]);
        layout.push("fc2.bias", &[fc2.n_out]);
        let mut params = vec![0.0; layout.total()];
        let mut rng = Rng::new(seed);
        let (fi, fo) = conv1.fans();
        init_uniform(
            &mut rng,
            &mut params[layout.range("conv1.weight")],
            glorot_bound(fi, fo),
        );
        let (fi, fo) = conv2.fans();
        init_uniform(
            &mut rng,
            &mut params[layout.range("conv2.weight")],
            glorot_bound(fi, fo),
        );
        for (name, d) in [("fc1.weight", fc1), ("fc2.weight", fc2)] {
            init_uniform(
                &mut rng,
                &mut params[layout.range(name)],
                glorot_bound(d.n_in, d.n_out),
            );
        }
        Cnn {
            shape,
            conv1,
            pool1,
            conv2,
            pool2,
            fc1,
            fc2,
            layout,
            params,
        }
    }

    /// The study's network.
    pub fn study(seed: u64) -> Self {
        Cnn::new(CnnShape::STUDY, seed)
    }

    fn p(&self, name: &str) -> &[f32] {
        &self.params[self.layout.range(name)]
    }

    /// Forward over `rows` inputs. Without `keep_conv_maps`, each convolution
    /// is fused with its ReLU and pooling (the kernels give the same pooled
    /// values and argmax bit for bit) and `c1`, `c2` are not written.
    fn forward(&self, ws: &mut CnnWorkspace, rows: usize, keep_conv_maps: bool) {
        assert!(
            rows <= ws.max_rows,
            "CNN workspace holds {} rows, got {rows}",
            ws.max_rows
        );
        let (c1n, p1n) = (self.conv1.output_len(), self.pool1.output_len());
        let (c2n, p2n) = (self.conv2.output_len(), self.pool2.output_len());
        let x = &ws.x[..rows * self.conv1.input_len()];
        let f = Phase::Forward;
        ws.conv_maps = keep_conv_maps;
        if !keep_conv_maps {
            // Profiled under the conv's name: the pooling happens inside it.
            timed("conv1", f, || {
                conv2d_forward_maxpool2x2_with(
                    &self.conv1.shape.with_batch(rows),
                    x,
                    self.p("conv1.weight"),
                    self.p("conv1.bias"),
                    self.conv1.activation,
                    &mut ws.p1[..rows * p1n],
                    &mut ws.a1[..rows * p1n],
                    &mut ws.conv_scratch,
                )
            });
            timed("conv2", f, || {
                conv2d_forward_maxpool2x2_with(
                    &self.conv2.shape.with_batch(rows),
                    &ws.p1[..rows * p1n],
                    self.p("conv2.weight"),
                    self.p("conv2.bias"),
                    self.conv2.activation,
                    &mut ws.p2[..rows * p2n],
                    &mut ws.a2[..rows * p2n],
                    &mut ws.conv_scratch,
                )
            });
        } else {
            timed("conv1", f, || {
                self.conv1.forward_with(
                    self.p("conv1.weight"),
                    self.p("conv1.bias"),
                    x,
                    rows,
                    &mut ws.c1[..rows * c1n],
                    &mut ws.conv_scratch,
                )
            });
            timed("pool1", f, || {
                self.pool1
                    .forward(&ws.c1, rows, &mut ws.p1[..rows * p1n], &mut ws.a1)
            });
            timed("conv2", f, || {
                self.conv2.forward_with(
                    self.p("conv2.weight"),
                    self.p("conv2.bias"),
                    &ws.p1[..rows * p1n],
                    rows,
                    &mut ws.c2[..rows * c2n],
                    &mut ws.conv_scratch,
                )
            });
            timed("pool2", f, || {
                self.pool2
                    .forward(&ws.c2, rows, &mut ws.p2[..rows * p2n], &mut ws.a2)
            });
        }
        timed("fc1", f, || {
            self.fc1.forward(
                self.p("fc1.weight"),
                self.p("fc1.bias"),
                &ws.p2[..rows * p2n],
                rows,
                &mut ws.h[..rows * self.fc1.n_out],
            )
        });
        timed("fc2", f, || {
            self.fc2.forward(
                self.p("fc2.weight"),
                self.p("fc2.bias"),
                &ws.h[..rows * self.fc1.n_out],
                rows,
                &mut ws.logits[..rows * self.fc2.n_out],
            )
        });
    }

    /// Feature maps and logits of `images` (n x in_h*in_w, values in [0, 1]).
    pub fn features(&self, images: &[f32]) -> CnnFeatures {
        let n = images.len() / self.input_len();
        let mut ws = self.workspace(n.max(1));
        ws.x[..images.len()].copy_from_slice(images);
        self.forward(&mut ws, n, true);
        CnnFeatures {
            conv1: ws.c1[..n * self.conv1.output_len()].to_vec(),
            pool1: ws.p1[..n * self.pool1.output_len()].to_vec(),
            conv2: ws.c2[..n * self.conv2.output_len()].to_vec(),
            pool2: ws.p2[..n * self.pool2.output_len()].to_vec(),
            hidden: ws.h[..n * self.fc1.n_out].to_vec(),
            logits: ws.logits[..n * self.fc2.n_out].to_vec(),
        }
    }
}

impl Classifier for Cnn {
    type Workspace = CnnWorkspace;

    fn kind(&self) -> &'static str {
        "cnn"
    }
    fn layout(&self) -> &ParamLayout {
        &self.layout
    }
    fn params(&self) -> &[f32] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }
    fn input_len(&self) -> usize {
        self.shape.in_h * self.shape.in_w
    }
    fn classes(&self) -> usize {
        self.shape.classes
    }

    fn workspace(&self, max_rows: usize) -> CnnWorkspace {
        let r = max_rows;
        let z = |n: usize| vec![0.0f32; r * n];
        CnnWorkspace {
            max_rows: r,
            x: z(self.conv1.input_len()),
            c1: z(self.conv1.output_len()),
            p1: z(self.pool1.output_len()),
            a1: vec![0; r * self.pool1.output_len()],
            c2: z(self.conv2.output_len()),
            p2: z(self.pool2.output_len()),
            a2: vec![0; r * self.pool2.output_len()],
            h: z(self.fc1.n_out),
            logits: z(self.fc2.n_out),
            probs: z(self.fc2.n_out),
            dlogits: z(self.fc2.n_out),
            dh: z(self.fc1.n_out),
            dp2: z(self.pool2.output_len()),
            dp1: z(self.pool1.output_len()),
            conv_scratch: ConvScratch::default(),
            conv_maps: false,
        }
    }

    fn input_mut<'a>(&self, ws: &'a mut CnnWorkspace) -> &'a mut [f32] {
        &mut ws.x
    }

    fn loss_and_gradient(
        &self,
        ws: &mut CnnWorkspace,
        labels: &[u8],
        grad_scale: f32,
        grads: &mut [f32],
    ) -> f64 {
        let rows = labels.len();
        self.forward(ws, rows, false);
        let l = &self.layout;
        let classes = self.fc2.n_out;
        let loss = timed("loss", Phase::Forward, || {
            softmax_cross_entropy(
                &ws.logits,
                labels,
                classes,
                &mut ws.probs,
                &mut ws.dlogits,
                grad_scale,
            )
        });
        let (p1n, p2n) = (self.pool1.output_len(), self.pool2.output_len());
        let hn = self.fc1.n_out;
        let bw = Phase::Backward;
        // fc2 (identity): dW, db, dh.
        timed("fc2", bw, || {
            let (dw, db) = split_two(grads, l.range("fc2.weight"), l.range("fc2.bias"));
            self.fc2.backward(
                self.p("fc2.weight"),
                &ws.h[..rows * hn],
                &ws.logits,
                &mut ws.dlogits,
                rows,
                dw,
                db,
                Some(&mut ws.dh[..rows * hn]),
            );
        });
        // fc1 (ReLU applied inside from h): dW, db, d(pool2 output).
        timed("fc1", bw, || {
            let (dw, db) = split_two(grads, l.range("fc1.weight"), l.range("fc1.bias"));
            self.fc1.backward(
                self.p("fc1.weight"),
                &ws.p2[..rows * p2n],
                &ws.h,
                &mut ws.dh,
                rows,
                dw,
                db,
                Some(&mut ws.dp2[..rows * p2n]),
            );
        });
        // Each pooling's backward is fused into its conv's backward: ReLU's
        // derivative on the pooled gradient (the argmax element is the pooled
        // value), then both gradients straight from the pooled gradient and
        // the argmax (`backward_from_pooled`).
        timed("pool2", bw, || {
            relu_backward(&ws.p2[..rows * p2n], &mut ws.dp2[..rows * p2n])
        });
        timed("conv2", bw, || {
            let (dw, db) = split_two(grads, l.range("conv2.weight"), l.range("conv2.bias"));
            backward_from_pooled(&self.conv2.shape)(
                &self.conv2.shape.with_batch(rows),
                &ws.p1[..rows * p1n],
                self.p("conv2.weight"),
                &ws.dp2[..rows * p2n],
                &ws.a2[..rows * p2n],
                dw,
                db,
                Some(&mut ws.dp1[..rows * p1n]),
                &mut ws.conv_scratch,
            );
        });
        timed("pool1", bw, || {
            relu_backward(&ws.p1[..rows * p1n], &mut ws.dp1[..rows * p1n])
        });
        timed("conv1", bw, || {
            let (dw, db) = split_two(grads, l.range("conv1.weight"), l.range("conv1.bias"));
            backward_from_pooled(&self.conv1.shape)(
                &self.conv1.shape.with_batch(rows),
                &ws.x[..rows * self.conv1.input_len()],
                self.p("conv1.weight"),
                &ws.dp1[..rows * p1n],
                &ws.a1[..rows * p1n],
                dw,
                db,
                None,
                &mut ws.conv_scratch,
            );
        });
        loss
    }

    fn first_non_finite_layer(&self, ws: &CnnWorkspace, rows: usize) -> Option<String> {
        let (p1n, p2n) = (self.pool1.output_len(), self.pool2.output_len());
        // A fused pass stores no conv output: each conv layer's output is
        // then its pooled one.
        let (c1, c1n, c2, c2n) = if ws.conv_maps {
            (
                &ws.c1,
                self.conv1.output_len(),
                &ws.c2,
                self.conv2.output_len(),
            )
        } else {
            (&ws.p1, p1n, &ws.p2, p2n)
        };
        let stages: [(&str, &[f32], usize); 6] = [
            ("conv1", c1, c1n),
            ("pool1", &ws.p1, p1n),
            ("conv2", c2, c2n),
            ("pool2", &ws.p2, p2n),
            ("fc1", &ws.h, self.fc1.n_out),
            ("fc2", &ws.logits, self.fc2.n_out),
        ];
        stages
            .iter()
            .find(|(_, v, n)| v[..rows * n].iter().any(|x| !x.is_finite()))
            .map(|(name, _, _)| name.to_string())
    }

    fn evaluate(&self, ws: &mut CnnWorkspace, labels: &[u8]) -> (f64, usize) {
        let rows = labels.len();
        self.forward(ws, rows, false);
        let classes = self.fc2.n_out;
        let n = rows * classes;
        timed("loss", Phase::Forward, || {
            let loss = softmax_cross_entropy(
                &ws.logits[..n],
                labels,
                classes,
                &mut ws.probs,
                &mut ws.dlogits,
                0.0,
            );
            (loss, count_correct(&ws.logits[..n], labels, classes))
        })
    }
}

/// The backward pass from a pooled gradient that is faster on shape `s`: the
/// winners' pass (a quarter of the multiply-adds, one load each; conv2) or
/// the dense fused tiles (conv1, whose 9-tap kernel rows fill 9 of 16 lanes
/// on AVX-512). See `conv::winners_pay_off`.
type BackwardFromPooled = fn(
    &ConvShape,
    &[f32],
    &[f32],
    &[f32],
    &[u32],
    &mut [f32],
    &mut [f32],
    Option<&mut [f32]>,
    &mut ConvScratch,
);

fn backward_from_pooled(s: &ConvShape) -> BackwardFromPooled {
    if winners_pay_off(s) {
        conv2d_backward_from_maxpool2x2_winners
    } else {
        conv2d_backward_from_maxpool2x2_with
    }
}
