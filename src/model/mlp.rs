//! The fully connected classifier: sigmoid hidden layers, softmax output
//! (784-900-625-400-10 in the study), randomly initialised or taken from a
//! pre-trained [`DaeStack`].

use std::ops::Range;

use super::{Classifier, DaeStack};
use crate::bench::profile::{numbered, timed, Phase, FC};
use crate::kernels::gemm::Activation;
use crate::kernels::rng::Rng;
use crate::nn::params::split_two;
use crate::nn::{
    count_correct, init_uniform, sigmoid_bound, softmax_cross_entropy, Dense, Factors, InputList,
    ParamLayout, TensorGrad,
};

/// A multilayer perceptron with sigmoid hidden layers and a softmax output.
#[derive(Clone, Debug)]
pub struct Mlp {
    sizes: Vec<usize>,
    layers: Vec<Dense>,
    /// (weight range, bias range) of each layer in `params`.
    ranges: Vec<(Range<usize>, Range<usize>)>,
    layout: ParamLayout,
    params: Vec<f32>,
}

/// Per-chunk buffers of the MLP.
#[derive(Clone, Debug)]
pub struct MlpWorkspace {
    max_rows: usize,
    x: Vec<f32>,
    /// Output of each layer (the last one holds the logits).
    acts: Vec<Vec<f32>>,
    /// Gradient with respect to each layer's output.
    deltas: Vec<Vec<f32>>,
    probs: Vec<f32>,
    /// The input's non-zeros, for the first layer's sparse weight gradient.
    x_list: InputList,
}

impl Mlp {
    /// `sizes` = [inputs, hidden..., classes]; weights uniform in
    /// +-4*sqrt(6/(n_in+n_out)) for every layer (the Theano tutorial's
    /// sigmoid init, also used for the softmax layer), zero biases, all drawn
    /// in layer order from `seed`. Tensors are `fc{i}.weight` `[n_out, n_in]`
    /// and `fc{i}.bias`, i from 1.
    pub fn new(sizes: &[usize], seed: u64) -> Self {
        assert!(
            sizes.len() >= 2 && sizes.iter().all(|&s| s > 0),
            "Mlp needs at least input and output sizes, all > 0: {sizes:?}"
        );
        let n = sizes.len() - 1;
        let layers: Vec<Dense> = (0..n)
            .map(|i| {
                let act = if i + 1 == n {
                    Activation::Identity
                } else {
                    Activation::Sigmoid
                };
                Dense::new(sizes[i], sizes[i + 1], act)
            })
            .collect();
        let mut layout = ParamLayout::new();
        for (i, d) in layers.iter().enumerate() {
            layout.push(&format!("fc{}.weight", i + 1), &[d.n_out, d.n_in]);
            layout.push(&format!("fc{}.bias", i + 1), &[d.n_out]);
        }
        let mut params = vec![0.0; layout.total()];
        let mut rng = Rng::new(seed);
        for (i, d) in layers.iter().enumerate() {
            let r = layout.range(&format!("fc{}.weight", i + 1));
            init_uniform(&mut rng, &mut params[r], sigmoid_bound(d.n_in, d.n_out));
        }
        let ranges = (1..=n)
            .map(|i| {
                (
                    layout.range(&format!("fc{i}.weight")),
                    layout.range(&format!("fc{i}.bias")),
                )
            })
            .collect();
        Mlp {
            sizes: sizes.to_vec(),
            layers,
            ranges,
            layout,
            params,
        }
    }

    /// The study's classifier on top of a stack: hidden layers copied from the
    /// stack's encoders (weights and hidden biases), a `classes`-way softmax
    /// layer initialised as in [`Mlp::new`] from `seed`.
    pub fn from_dae_stack(stack: &DaeStack, classes: usize, seed: u64) -> Self {
        let mut sizes = stack.sizes().to_vec();
        sizes.push(classes);
        let mut mlp = Mlp::new(&sizes, seed);
        for layer in 1..=stack.layers() {
            for (src, dst) in [
                (format!("dae{layer}.weight"), format!("fc{layer}.weight")),
                (format!("dae{layer}.bias"), format!("fc{layer}.bias")),
            ] {
                let r = mlp.layout.range(&dst);
                mlp.params[r].copy_from_slice(stack.tensor(&src));
            }
        }
        mlp
    }

    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    fn forward(&self, ws: &mut MlpWorkspace, rows: usize) {
        assert!(
            rows <= ws.max_rows,
            "MLP workspace holds {} rows, got {rows}",
            ws.max_rows
        );
        for (i, d) in self.layers.iter().enumerate() {
            let (rw, rb) = &self.ranges[i];
            let (w, b) = (&self.params[rw.clone()], &self.params[rb.clone()]);
            let (before, after) = ws.acts.split_at_mut(i);
            let input: &[f32] = if i == 0 { &ws.x } else { &before[i - 1] };
            // The first layer's input is the images: mostly exact zeros.
            let forward = if i == 0 {
                Dense::forward_sparse_input
            } else {
                Dense::forward
            };
            timed(numbered(&FC, i + 1), Phase::Forward, || {
                forward(
                    d,
                    w,
                    b,
                    &input[..rows * d.n_in],
                    rows,
                    &mut after[0][..rows * d.n_out],
                )
            });
        }
    }

    /// Forward, loss and backward; with `grads`, writes every layer's
    /// parameter gradients, else keeps only the deltas (for the fused update).
    fn loss_backward(
        &self,
        ws: &mut MlpWorkspace,
        labels: &[u8],
        grad_scale: f32,
        mut grads: Option<&mut [f32]>,
    ) -> f64 {
        let rows = labels.len();
        self.forward(ws, rows);
        let last = self.layers.len() - 1;
        let classes = self.classes();
        let loss = timed("loss", Phase::Forward, || {
            softmax_cross_entropy(
                &ws.acts[last],
                labels,
                classes,
                &mut ws.probs,
                &mut ws.deltas[last],
                grad_scale,
            )
        });
        for (i, d) in self.layers.iter().enumerate().rev() {
            let (rw, rb) = &self.ranges[i];
            let w = &self.params[rw.clone()];
            let input: &[f32] = if i == 0 { &ws.x } else { &ws.acts[i - 1] };
            let (lower, upper) = ws.deltas.split_at_mut(i);
            let dx = if i == 0 {
                None
            } else {
                Some(&mut lower[i - 1][..rows * d.n_in])
            };
            let dy = &mut upper[0];
            timed(numbered(&FC, i + 1), Phase::Backward, || match grads {
                Some(ref mut g) => {
                    let (dw, db) = split_two(g, rw.clone(), rb.clone());
                    d.backward(w, input, &ws.acts[i], dy, rows, dw, db, dx)
                }
                None => d.backward_delta(w, &ws.acts[i], dy, rows, dx),
            });
        }
        loss
    }

    /// Every layer's output for `images` (n x inputs): hidden activations,
    /// then the logits last.
    pub fn activations(&self, images: &[f32]) -> Vec<Vec<f32>> {
        let n = images.len() / self.sizes[0];
        let mut ws = self.workspace(n.max(1));
        ws.x[..images.len()].copy_from_slice(images);
        self.forward(&mut ws, n);
        ws.acts
            .iter()
            .zip(&self.layers)
            .map(|(a, d)| a[..n * d.n_out].to_vec())
            .collect()
    }
}

impl Classifier for Mlp {
    type Workspace = MlpWorkspace;

    fn kind(&self) -> &'static str {
        "mlp"
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
        self.sizes[0]
    }
    fn classes(&self) -> usize {
        *self.sizes.last().unwrap()
    }

    fn workspace(&self, max_rows: usize) -> MlpWorkspace {
        let per_layer = || {
            self.layers
                .iter()
                .map(|d| vec![0.0f32; max_rows * d.n_out])
                .collect::<Vec<_>>()
        };
        MlpWorkspace {
            max_rows,
            x: vec![0.0; max_rows * self.sizes[0]],
            acts: per_layer(),
            deltas: per_layer(),
            probs: vec![0.0; max_rows * self.classes()],
            x_list: InputList::default(),
        }
    }

    fn input_mut<'a>(&self, ws: &'a mut MlpWorkspace) -> &'a mut [f32] {
        &mut ws.x
    }

    fn loss_and_gradient(
        &self,
        ws: &mut MlpWorkspace,
        labels: &[u8],
        grad_scale: f32,
        grads: &mut [f32],
    ) -> f64 {
        self.loss_backward(ws, labels, grad_scale, Some(grads))
    }

    fn fused_tensors(&self) -> Option<Vec<TensorGrad>> {
        let tensors = self.layers.iter().flat_map(|d| {
            [
                TensorGrad::Dense {
                    n_out: d.n_out,
                    n_in: d.n_in,
                    terms: 1,
                },
                TensorGrad::Bias { len: d.n_out },
            ]
        });
        Some(tensors.collect())
    }

    fn loss_and_deltas(&self, ws: &mut MlpWorkspace, labels: &[u8], grad_scale: f32) -> f64 {
        let loss = self.loss_backward(ws, labels, grad_scale, None);
        let (rows, n_in) = (labels.len(), self.sizes[0]);
        timed(numbered(&FC, 1), Phase::Backward, || {
            ws.x_list.update(&ws.x[..rows * n_in], rows, n_in)
        });
        loss
    }

    /// Layer i's weight (tensor 2i) is dz_i^T x_i, its bias (2i + 1) the
    /// column sums of dz_i.
    fn grad_factors(ws: &MlpWorkspace, tensor: usize, _term: usize) -> Factors<'_> {
        let i = tensor / 2;
        let b: &[f32] = match (tensor % 2, i) {
            (1, _) => &[],
            (_, 0) => &ws.x,
            _ => &ws.acts[i - 1],
        };
        Factors {
            a: &ws.deltas[i],
            b,
            // The images' non-zeros, where sparse enough.
            b_list: if tensor == 0 { ws.x_list.get() } else { None },
        }
    }

    fn first_non_finite_layer(&self, ws: &MlpWorkspace, rows: usize) -> Option<String> {
        (0..self.layers.len())
            .find(|&i| {
                ws.acts[i][..rows * self.layers[i].n_out]
                    .iter()
                    .any(|x| !x.is_finite())
            })
            .map(|i| format!("fc{}", i + 1))
    }

    fn evaluate(&self, ws: &mut MlpWorkspace, labels: &[u8]) -> (f64, usize) {
        let rows = labels.len();
        self.forward(ws, rows);
        let last = self.layers.len() - 1;
        let classes = self.classes();
        let n = rows * classes;
        let loss = softmax_cross_entropy(
            &ws.acts[last][..n],
            labels,
            classes,
            &mut ws.probs,
            &mut ws.deltas[last],
            0.0,
        );
        (loss, count_correct(&ws.acts[last][..n], labels, classes))
    }
}
