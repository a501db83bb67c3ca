//! The stacked denoising autoencoder (784-900-625-400 in the study), tied
//! weights, sigmoid on both sides, trained layer by layer in image space.
//!
//! Layers are numbered from 1. Layer k has tensors `dae{k}.weight`
//! `[n_k, n_{k-1}]` (row j = hidden unit j's weights; the decoder uses the
//! transpose), `dae{k}.bias` `[n_k]` and `dae{k}.visible_bias` `[n_{k-1}]`,
//! stored contiguously in that order ([`DaeStack::layer_range`]).
//!
//! Image-space scheme (the study's): when layer k trains, the corrupted image
//! goes up through encoders 1..k, the code h_k comes back down through
//! decoders k..1 (sigmoid at every level), and the cost is the binary
//! cross-entropy of that image against the clean image, summed over pixels.
//! Only layer k's three tensors receive gradients.
//!
//! Layer-local scheme (the classic alternative, for comparison): layer k
//! takes h_{k-1} of the *clean* image, corrupted, and reconstructs that clean
//! h_{k-1} (one decoder, cost at level k-1). Layer 1 is the same in both.

/// How one layer of the stack is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DaeScheme {
    /// The study's scheme: noisy image up to layer k, back down to image
    /// space, cross-entropy against the clean image.
    ImageSpace,
    /// Each layer denoises its own clean input h_{k-1}.
    LayerLocal,
}

use std::ops::Range;

use crate::bench::profile::{numbered, timed, Phase, DAE_DEC, DAE_ENC, W1_PANELS};
use crate::kernels::activation::sigmoid_backward;
use crate::kernels::gemm::Activation;
use crate::kernels::rng::Rng;
use crate::kernels::team::Team;
use crate::nn::{
    column_sums, init_uniform, sigmoid_binary_cross_entropy, sigmoid_bound, Factors, InputList,
    ParamLayout, Sparsity, TensorGrad, TiedAutoencoder, TransposedWeights,
};

/// The stack and its parameters.
#[derive(Clone, Debug)]
pub struct DaeStack {
    sizes: Vec<usize>,
    layers: Vec<TiedAutoencoder>,
    /// (weight, hidden bias, visible bias) ranges of each layer.
    ranges: Vec<[Range<usize>; 3]>,
    layout: ParamLayout,
    params: Vec<f32>,
    /// Layer 1's W^T for its sparse-input encoder while layer 1 is frozen
    /// (training layers 2 and 3), built once per stage; invalidated
    /// whenever layer 1's weights may change.
    enc1_t: TransposedWeights,
}

/// Per-chunk buffers for training or evaluating any layer of a stack.
#[derive(Clone, Debug)]
pub struct DaeWorkspace {
    max_rows: usize,
    /// Clean images (max_rows x n_0), filled by the caller.
    pub clean: Vec<f32>,
    /// Corrupted images, filled by the caller (e.g. with
    /// `kernels::noise::mask_noise`) before a noisy [`DaeStack::encode`].
    pub noisy: Vec<f32>,
    input_noisy: bool,
    /// Set by `encode_local`: the layer-local scheme's forward was run.
    local: bool,
    /// The corrupted h_{k-1} of the layer-local scheme.
    local_noisy: Vec<f32>,
    /// enc[i] = h_{i+1}, the output of encoder i+1.
    enc: Vec<Vec<f32>>,
    /// dec[0] = reconstruction logits at image level; dec[i] (i >= 1) = the
    /// decoded (sigmoid) values at level i.
    dec: Vec<Vec<f32>>,
    recon: Vec<f32>,
    /// dlev[i] = gradient with respect to the logits at level i.
    dlev: Vec<Vec<f32>>,
    dh: Vec<f32>,
    col_sums: Vec<f32>,
    /// Layer 1's input (image pixels) listed by its non-zeros, for the
    /// encoder term's sparse weight gradient.
    input_list: InputList,
}

impl DaeWorkspace {
    /// The column sums written by [`DaeStack::hidden_sums`].
    pub fn col_sums(&self) -> &[f32] {
        &self.col_sums
    }

    /// The input of layer `layer` in the last forward pass: the corrupted
    /// h_{layer-1} in the layer-local scheme, else the (noisy or clean)
    /// image for layer 1 and h_{layer-1} above.
    fn layer_input(&self, layer: usize) -> &[f32] {
        match (self.local, layer, self.input_noisy) {
            (true, _, _) => &self.local_noisy,
            (false, 1, true) => &self.noisy,
            (false, 1, false) => &self.clean,
            _ => &self.enc[layer - 2],
        }
    }

    /// After [`DaeStack::loss_and_deltas`] for layer `layer`: this chunk's
    /// factors of term `term` of tensor `tensor` of
    /// [`DaeStack::fused_tensors`]. Weight: dz^T x (encoder, term 0) and
    /// h^T da (decoder, term 1); hidden bias: dz; visible bias: da, where dz
    /// is the gradient at the encoder's pre-activation and da at the
    /// reconstruction logits.
    pub fn grad_factors(&self, layer: usize, tensor: usize, term: usize) -> Factors<'_> {
        let (dz, h, da) = (&self.dh, &self.enc[layer - 1], &self.dlev[layer - 1]);
        let (a, b): (&[f32], &[f32]) = match (tensor, term) {
            (0, 0) => (dz, self.layer_input(layer)),
            (0, _) => (h, da),
            (1, _) => (dz, &[]),
            _ => (da, &[]),
        };
        Factors {
            a,
            b,
            // Layer 1's images, listed where sparse enough.
            b_list: if (tensor, term, layer) == (0, 0, 1) {
                self.input_list.get()
            } else {
                None
            },
        }
    }
}

impl DaeStack {
    /// A stack with `sizes` = [visible, hidden_1, ..., hidden_L]; weights
    /// uniform in +-4*sqrt(6/(n_in+n_out)), biases zero, drawn in layer order
    /// from `seed`.
    pub fn new(sizes: &[usize], seed: u64) -> Self {
        assert!(
            sizes.len() >= 2 && sizes.iter().all(|&s| s > 0),
            "DaeStack needs at least one layer and sizes > 0: {sizes:?}"
        );
        let layers: Vec<TiedAutoencoder> = sizes
            .windows(2)
            .map(|w| TiedAutoencoder {
                n_visible: w[0],
                n_hidden: w[1],
            })
            .collect();
        let mut layout = ParamLayout::new();
        let mut ranges = Vec::new();
        for (i, ae) in layers.iter().enumerate() {
            let k = i + 1;
            ranges.push([
                layout.push(&format!("dae{k}.weight"), &[ae.n_hidden, ae.n_visible]),
                layout.push(&format!("dae{k}.bias"), &[ae.n_hidden]),
                layout.push(&format!("dae{k}.visible_bias"), &[ae.n_visible]),
            ]);
        }
        let mut params = vec![0.0; layout.total()];
        let mut rng = Rng::new(seed);
        for (ae, r) in layers.iter().zip(&ranges) {
            init_uniform(
                &mut rng,
                &mut params[r[0].clone()],
                sigmoid_bound(ae.n_visible, ae.n_hidden),
            );
        }
        DaeStack {
            sizes: sizes.to_vec(),
            enc1_t: TransposedWeights::new(sizes[1], sizes[0]),
            layers,
            ranges,
            layout,
            params,
        }
    }

    /// The study's 784-900-625-400 stack.
    pub fn study(seed: u64) -> Self {
        DaeStack::new(&[784, 900, 625, 400], seed)
    }

    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }
    /// Number of autoencoder layers.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }
    pub fn params(&self) -> &[f32] {
        &self.params
    }
    pub fn params_mut(&mut self) -> &mut [f32] {
        self.enc1_t.invalidate();
        &mut self.params
    }
    /// Layer `layer`'s parameters ([`DaeStack::layer_range`]), for its
    /// update: unlike [`DaeStack::params_mut`], training layer 2 or 3 keeps
    /// layer 1's transposed weight.
    pub fn layer_params_mut(&mut self, layer: usize) -> &mut [f32] {
        if layer == 1 {
            self.enc1_t.invalidate();
        }
        let range = self.layer_range(layer);
        &mut self.params[range]
    }
    /// Before a batch of training layer `layer`'s forward passes, on
    /// `team`'s threads: with layer 1 frozen (layer 2 or 3 training), builds
    /// layer 1's transposed weight if stale, once per stage, so the
    /// first encoder reads it instead of transposing W1 on every call
    /// (`vcortex bench --only dae2,dae3`, 2 threads, 4 alternating runs:
    /// encoder 1 0.209 -> 0.158 s per thread and epoch in dae2). Training layer 1
    /// itself, W1 changes every step: rebuilt per step (a team phase of
    /// 0.096 s per epoch) it made the epoch slower, 1.353 -> 1.481 s, so
    /// the encoder transposes W1 per call there, as before.
    pub fn prepare_batch(&mut self, layer: usize, team: &Team) {
        if layer >= 2 && self.enc1_t.get().is_none() {
            let w = &self.params[self.ranges[0][0].clone()];
            timed(W1_PANELS, Phase::Pool, || self.enc1_t.rebuild(team, w));
        }
    }

    /// Whether layer 1's forward passes read its transposed weight (built
    /// by [`DaeStack::prepare_batch`] and not invalidated since); for tests.
    #[doc(hidden)]
    pub fn layer1_transposed_is_current(&self) -> bool {
        self.enc1_t.get().is_some()
    }

    /// h <- encoder k of x (`rows` rows): layer 1 skips the images' zero
    /// pixels, reading its transposed weight when it is current.
    fn encode_layer(&self, k: usize, x: &[f32], rows: usize, h: &mut [f32]) {
        let ae = &self.layers[k - 1];
        if k == 1 {
            ae.encode_sparse_input(self.w(1), self.b(1), x, rows, h, self.enc1_t.get());
        } else {
            ae.encode(self.w(k), self.b(k), x, rows, h);
        }
    }
    /// The tensor called `name` (panics on an unknown name).
    pub fn tensor(&self, name: &str) -> &[f32] {
        &self.params[self.layout.range(name)]
    }
    /// Parameter tensors by name, with shapes.
    pub fn named_params(&self) -> Vec<(&str, &[f32], &[usize])> {
        self.layout
            .entries()
            .iter()
            .map(|e| (e.name.as_str(), &self.params[e.range()], e.shape.as_slice()))
            .collect()
    }
    /// The contiguous range of layer `layer`'s weight, hidden bias and
    /// visible bias in [`DaeStack::params`].
    pub fn layer_range(&self, layer: usize) -> Range<usize> {
        self.check_layer(layer);
        let r = &self.ranges[layer - 1];
        r[0].start..r[2].end
    }

    fn check_layer(&self, layer: usize) {
        assert!(
            (1..=self.layers.len()).contains(&layer),
            "DAE layer {layer} not in 1..={}",
            self.layers.len()
        );
    }

    fn w(&self, layer: usize) -> &[f32] {
        &self.params[self.ranges[layer - 1][0].clone()]
    }
    fn b(&self, layer: usize) -> &[f32] {
        &self.params[self.ranges[layer - 1][1].clone()]
    }
    fn bv(&self, layer: usize) -> &[f32] {
        &self.params[self.ranges[layer - 1][2].clone()]
    }

    /// Buffers for up to `max_rows` images, for every layer.
    pub fn workspace(&self, max_rows: usize) -> DaeWorkspace {
        let z = |n: usize| vec![0.0f32; max_rows * n];
        let max_hidden = *self.sizes[1..].iter().max().unwrap();
        let max_visible = *self.sizes[..self.sizes.len() - 1].iter().max().unwrap();
        DaeWorkspace {
            max_rows,
            clean: z(self.sizes[0]),
            noisy: z(self.sizes[0]),
            input_noisy: false,
            local: false,
            local_noisy: z(max_visible),
            enc: self.sizes[1..].iter().map(|&n| z(n)).collect(),
            dec: self.sizes[..self.sizes.len() - 1]
                .iter()
                .map(|&n| z(n))
                .collect(),
            recon: z(max_visible),
            dlev: self.sizes[..self.sizes.len() - 1]
                .iter()
                .map(|&n| z(n))
                .collect(),
            dh: z(max_hidden),
            col_sums: vec![0.0; max_hidden],
            input_list: InputList::default(),
        }
    }

    /// h_1..h_layer of the first `rows` images, from `ws.noisy` if `noisy`,
    /// else from `ws.clean`.
    pub fn encode(&self, layer: usize, ws: &mut DaeWorkspace, rows: usize, noisy: bool) {
        self.check_layer(layer);
        assert!(
            rows <= ws.max_rows,
            "DAE workspace holds {} rows, got {rows}",
            ws.max_rows
        );
        ws.input_noisy = noisy;
        ws.local = false;
        for k in 1..=layer {
            let ae = &self.layers[k - 1];
            let (below, here) = ws.enc.split_at_mut(k - 1);
            let x: &[f32] = match (k, noisy) {
                (1, true) => &ws.noisy,
                (1, false) => &ws.clean,
                _ => &below[k - 2],
            };
            timed(numbered(&DAE_ENC, k), Phase::Forward, || {
                self.encode_layer(
                    k,
                    &x[..rows * ae.n_visible],
                    rows,
                    &mut here[0][..rows * ae.n_hidden],
                )
            });
        }
    }

    /// Layer-local forward: h_1..h_{layer-1} of `ws.clean`, then
    /// `corrupt(row, clean h_{layer-1} row, noisy row)` for each row, then
    /// h_layer of the corrupted rows. Follow with
    /// [`DaeStack::loss_and_gradient`], which then uses the layer-local cost.
    pub fn encode_local(
        &self,
        layer: usize,
        ws: &mut DaeWorkspace,
        rows: usize,
        mut corrupt: impl FnMut(usize, &[f32], &mut [f32]),
    ) {
        self.check_layer(layer);
        if layer > 1 {
            self.encode(layer - 1, ws, rows, false);
        }
        let ae = &self.layers[layer - 1];
        let nv = ae.n_visible;
        let src: &[f32] = if layer == 1 {
            &ws.clean
        } else {
            &ws.enc[layer - 2]
        };
        for r in 0..rows {
            corrupt(
                r,
                &src[r * nv..(r + 1) * nv],
                &mut ws.local_noisy[r * nv..(r + 1) * nv],
            );
        }
        self.encode_layer(
            layer,
            &ws.local_noisy[..rows * nv],
            rows,
            &mut ws.enc[layer - 1][..rows * ae.n_hidden],
        );
        ws.local = true;
    }

    /// Sums over the first `rows` images of h_layer per unit (after
    /// [`DaeStack::encode`]), into `ws.col_sums()[..n_layer]`. The trainer adds
    /// the chunks' sums in chunk order and divides by the batch size to get
    /// the minibatch mean activation for the KL penalty.
    pub fn hidden_sums(&self, layer: usize, ws: &mut DaeWorkspace, rows: usize) {
        let n = self.sizes[layer];
        column_sums(&ws.enc[layer - 1][..rows * n], &mut ws.col_sums[..n], false);
    }

    /// Decodes h_layer down to image logits in `ws.dec[0]`.
    fn decode_to_image(&self, layer: usize, ws: &mut DaeWorkspace, rows: usize) {
        for k in (1..=layer).rev() {
            let ae = &self.layers[k - 1];
            let (lower, upper) = ws.dec.split_at_mut(k);
            let h: &[f32] = if k == layer {
                &ws.enc[layer - 1]
            } else {
                &upper[0]
            };
            let act = if k == 1 {
                Activation::Identity
            } else {
                Activation::Sigmoid
            };
            timed(numbered(&DAE_DEC, k), Phase::Forward, || {
                ae.decode(
                    self.w(k),
                    self.bv(k),
                    &h[..rows * ae.n_hidden],
                    rows,
                    &mut lower[k - 1][..rows * ae.n_visible],
                    act,
                )
            });
        }
    }

    /// After [`DaeStack::encode`]: decodes h_layer to image space, returns the
    /// summed cross-entropy against `ws.clean` and writes into `grads`
    /// (length `layer_range(layer).len()`, overwritten) the gradient of
    /// `grad_scale * summed cross-entropy`, plus, with `sparsity` = (penalty,
    /// minibatch mean activations, minibatch size), the gradient of the KL
    /// penalty's share of this chunk's rows.
    pub fn loss_and_gradient(
        &self,
        layer: usize,
        ws: &mut DaeWorkspace,
        rows: usize,
        grad_scale: f32,
        sparsity: Option<(Sparsity, &[f32], usize)>,
        grads: &mut [f32],
    ) -> f64 {
        self.loss_backward(layer, ws, rows, grad_scale, sparsity, Some(grads))
    }

    /// [`DaeStack::loss_and_gradient`] without the parameter gradients: keeps
    /// the deltas in `ws` for the trainer's fused update, which reads them
    /// through [`DaeWorkspace::grad_factors`] (tensors as
    /// [`DaeStack::fused_tensors`] lists them).
    pub fn loss_and_deltas(
        &self,
        layer: usize,
        ws: &mut DaeWorkspace,
        rows: usize,
        grad_scale: f32,
        sparsity: Option<(Sparsity, &[f32], usize)>,
    ) -> f64 {
        let loss = self.loss_backward(layer, ws, rows, grad_scale, sparsity, None);
        if layer == 1 {
            let n_in = self.layers[0].n_visible;
            timed(numbered(&DAE_ENC, 1), Phase::Backward, || {
                // Out of the workspace while it reads the input beside it.
                let mut list = std::mem::take(&mut ws.input_list);
                list.update(&ws.layer_input(1)[..rows * n_in], rows, n_in);
                ws.input_list = list;
            });
        }
        loss
    }

    /// Layer `layer`'s tensors (weight, hidden bias, visible bias) as the
    /// fused update sees them: the tied weight has an encoder and a decoder
    /// term.
    pub fn fused_tensors(&self, layer: usize) -> Vec<TensorGrad> {
        self.check_layer(layer);
        let ae = &self.layers[layer - 1];
        vec![
            TensorGrad::Dense {
                n_out: ae.n_hidden,
                n_in: ae.n_visible,
                terms: 2,
            },
            TensorGrad::Bias { len: ae.n_hidden },
            TensorGrad::Bias { len: ae.n_visible },
        ]
    }

    fn loss_backward(
        &self,
        layer: usize,
        ws: &mut DaeWorkspace,
        rows: usize,
        grad_scale: f32,
        sparsity: Option<(Sparsity, &[f32], usize)>,
        grads: Option<&mut [f32]>,
    ) -> f64 {
        self.check_layer(layer);
        // The loss and its gradient at layer `layer`'s reconstruction logits
        // (dlev[layer-1]): the layer-local scheme decodes one level, else
        // down to the image and back up through the fixed decoders.
        let loss = if ws.local {
            self.local_decode_cost(layer, ws, rows, grad_scale)
        } else {
            self.image_decode_cost(layer, ws, rows, grad_scale)
        };
        let ae = &self.layers[layer - 1];
        let (nh, nv) = (ae.n_hidden, ae.n_visible);
        let mut grads = grads.map(|g| {
            assert_eq!(g.len(), nh * nv + nh + nv, "DAE layer gradient length");
            let (dw, rest) = g.split_at_mut(nh * nv);
            let (db, dbv) = rest.split_at_mut(nh);
            (dw, db, dbv)
        });
        let h = &ws.enc[layer - 1][..rows * nh];
        let dh = &mut ws.dh[..rows * nh];
        timed(numbered(&DAE_DEC, layer), Phase::Backward, || {
            ae.decode_backward(
                self.w(layer),
                h,
                &ws.dlev[layer - 1],
                rows,
                grads
                    .as_mut()
                    .map(|(dw, _, dbv)| (&mut **dw, &mut **dbv, false)),
                Some(&mut *dh),
            )
        });
        if let Some((penalty, rho_hat, batch_rows)) = sparsity {
            timed("sparsity", Phase::Backward, || {
                penalty.backward(dh, &rho_hat[..nh], batch_rows)
            });
        }
        // As [`DaeWorkspace::layer_input`] (a call would borrow all of `ws`
        // while `dh` is borrowed mutably).
        let x: &[f32] = match (ws.local, layer, ws.input_noisy) {
            (true, _, _) => &ws.local_noisy,
            (false, 1, true) => &ws.noisy,
            (false, 1, false) => &ws.clean,
            _ => &ws.enc[layer - 2],
        };
        timed(numbered(&DAE_ENC, layer), Phase::Backward, || match grads {
            Some((dw, db, _)) => {
                db.fill(0.0);
                ae.encode_backward(&x[..rows * nv], h, dh, rows, dw, db, true)
            }
            None => sigmoid_backward(h, dh),
        });
        loss
    }

    /// Decodes h_layer down to the image and returns the summed
    /// cross-entropy against the clean image, its gradient backed up through
    /// the fixed decoders 1..layer-1 into dlev[layer-1].
    fn image_decode_cost(
        &self,
        layer: usize,
        ws: &mut DaeWorkspace,
        rows: usize,
        grad_scale: f32,
    ) -> f64 {
        let n0 = self.sizes[0];
        self.decode_to_image(layer, ws, rows);
        let loss = timed("loss", Phase::Forward, || {
            sigmoid_binary_cross_entropy(
                &ws.dec[0][..rows * n0],
                &ws.clean[..rows * n0],
                &mut ws.recon,
                &mut ws.dlev[0],
                grad_scale,
            )
        });
        for k in 1..layer {
            let ae = &self.layers[k - 1];
            let (lower, upper) = ws.dlev.split_at_mut(k);
            let dv = &mut upper[0][..rows * ae.n_hidden];
            timed(numbered(&DAE_DEC, k), Phase::Backward, || {
                ae.decode_backward(self.w(k), &ws.dec[k], &lower[k - 1], rows, None, Some(dv));
                sigmoid_backward(&ws.dec[k][..rows * ae.n_hidden], dv);
            });
        }
        loss
    }

    /// Decodes h_layer one level and returns the summed cross-entropy
    /// against the clean h_{layer-1} (or image), gradient into dlev[layer-1].
    fn local_decode_cost(
        &self,
        layer: usize,
        ws: &mut DaeWorkspace,
        rows: usize,
        grad_scale: f32,
    ) -> f64 {
        let ae = &self.layers[layer - 1];
        let (nh, nv) = (ae.n_hidden, ae.n_visible);
        ae.decode(
            self.w(layer),
            self.bv(layer),
            &ws.enc[layer - 1][..rows * nh],
            rows,
            &mut ws.dec[layer - 1][..rows * nv],
            Activation::Identity,
        );
        let target: &[f32] = if layer == 1 {
            &ws.clean
        } else {
            &ws.enc[layer - 2]
        };
        sigmoid_binary_cross_entropy(
            &ws.dec[layer - 1][..rows * nv],
            &target[..rows * nv],
            &mut ws.recon,
            &mut ws.dlev[layer - 1],
            grad_scale,
        )
    }

    /// Layer-local test cost: clean h_{layer-1} through layer `layer` and
    /// back one level, summed cross-entropy against itself (no noise).
    pub fn local_reconstruction_cost(
        &self,
        layer: usize,
        ws: &mut DaeWorkspace,
        rows: usize,
    ) -> f64 {
        self.encode(layer, ws, rows, false);
        self.local_decode_cost(layer, ws, rows, 0.0)
    }

    /// Summed cross-entropy of the clean images in `ws.clean` reconstructed
    /// through layers 1..layer and back (no noise, no penalty).
    pub fn reconstruction_cost(&self, layer: usize, ws: &mut DaeWorkspace, rows: usize) -> f64 {
        self.encode(layer, ws, rows, false);
        self.decode_to_image(layer, ws, rows);
        let n0 = self.sizes[0];
        sigmoid_binary_cross_entropy(
            &ws.dec[0][..rows * n0],
            &ws.clean[..rows * n0],
            &mut ws.recon,
            &mut ws.dlev[0],
            0.0,
        )
    }

    /// After a training pass on `ws`: the first encoder output h_1..h_layer
    /// holding a NaN or infinity, as `dae{k}`.
    pub fn first_non_finite_layer(
        &self,
        layer: usize,
        ws: &DaeWorkspace,
        rows: usize,
    ) -> Option<String> {
        (1..=layer)
            .find(|&k| {
                ws.enc[k - 1][..rows * self.sizes[k]]
                    .iter()
                    .any(|x| !x.is_finite())
            })
            .map(|k| format!("dae{k}"))
    }

    /// h_layer of `images` (n x n_0, values in [0, 1]), for figures.
    pub fn hidden(&self, layer: usize, images: &[f32]) -> Vec<f32> {
        let n = images.len() / self.sizes[0];
        let mut ws = self.workspace(n.max(1));
        ws.clean[..images.len()].copy_from_slice(images);
        self.encode(layer, &mut ws, n, false);
        ws.enc[layer - 1][..n * self.sizes[layer]].to_vec()
    }

    /// Images reconstructed through layers 1..layer and back down (sigmoid
    /// outputs, n x n_0), for figures.
    pub fn reconstruct(&self, layer: usize, images: &[f32]) -> Vec<f32> {
        let n = images.len() / self.sizes[0];
        let mut ws = self.workspace(n.max(1));
        ws.clean[..images.len()].copy_from_slice(images);
        self.reconstruction_cost(layer, &mut ws, n);
        ws.recon[..images.len()].to_vec()
    }
}
