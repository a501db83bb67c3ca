//! The study's models: the CNN ([`Cnn`]), the stacked denoising autoencoder
//! ([`DaeStack`]) and the five-layer sigmoid classifier ([`Mlp`]).
//!
//! Every model owns its parameters in one flat `Vec<f32>` described by a
//! [`ParamLayout`] (named tensors, see [`Classifier::named_params`]). Training
//! runs on per-chunk *workspaces*: all activations, argmax indices and deltas
//! for up to `max_rows` samples, allocated once per run.

mod cnn;
mod dae;
mod mlp;

pub use cnn::{Cnn, CnnFeatures, CnnShape, CnnWorkspace};
pub use dae::{DaeScheme, DaeStack, DaeWorkspace};
pub use mlp::{Mlp, MlpWorkspace};

use crate::nn::{Factors, ParamLayout, TensorGrad};

/// A model that maps images to class scores, trained with softmax
/// cross-entropy by [`crate::train::train_classifier`].
pub trait Classifier: Send + Sync {
    /// Per-chunk buffers; one per rayon chunk, reused for every batch.
    type Workspace: Send;

    /// Short model name stored in checkpoints and `summary.json` ("cnn", "mlp").
    fn kind(&self) -> &'static str;
    fn layout(&self) -> &ParamLayout;
    fn params(&self) -> &[f32];
    fn params_mut(&mut self) -> &mut [f32];
    /// Values per input image (rows * cols).
    fn input_len(&self) -> usize;
    fn classes(&self) -> usize;

    /// Buffers for up to `max_rows` samples.
    fn workspace(&self, max_rows: usize) -> Self::Workspace;
    /// The input buffer (max_rows x input_len) the caller fills before
    /// [`Classifier::loss_and_gradient`] or [`Classifier::evaluate`].
    fn input_mut<'a>(&self, ws: &'a mut Self::Workspace) -> &'a mut [f32];

    /// Forward and backward over the first `labels.len()` inputs of `ws`.
    /// Writes (overwrites) the gradient of `grad_scale * summed loss` into
    /// `grads` (layout-sized) and returns the summed (unscaled) loss.
    fn loss_and_gradient(
        &self,
        ws: &mut Self::Workspace,
        labels: &[u8],
        grad_scale: f32,
        grads: &mut [f32],
    ) -> f64;

    /// The trainable tensors, in layout order, as the fused update sees them
    /// (see [`crate::nn::TensorGrad`]), for models made of dense layers; `None`
    /// (the default) trains with per-chunk gradients from
    /// [`Classifier::loss_and_gradient`].
    fn fused_tensors(&self) -> Option<Vec<TensorGrad>> {
        None
    }

    /// For models with [`Classifier::fused_tensors`]: forward and backward
    /// over the first `labels.len()` inputs of `ws` like
    /// [`Classifier::loss_and_gradient`], but keeping the deltas (scaled by
    /// `grad_scale`) in `ws` instead of writing parameter gradients.
    fn loss_and_deltas(&self, _ws: &mut Self::Workspace, _labels: &[u8], _grad_scale: f32) -> f64 {
        unreachable!("{} has no fused update", self.kind())
    }

    /// For models with [`Classifier::fused_tensors`], after
    /// [`Classifier::loss_and_deltas`]: this chunk's factors of term `term`
    /// of trainable tensor `tensor`. An associated function, so the trainer
    /// can read workspaces while it updates the model's parameters.
    fn grad_factors(_ws: &Self::Workspace, _tensor: usize, _term: usize) -> Factors<'_> {
        unreachable!("this model has no fused update")
    }

    /// Forward only: (summed cross-entropy, number classified correctly).
    fn evaluate(&self, ws: &mut Self::Workspace, labels: &[u8]) -> (f64, usize);

    /// After a forward pass on `ws` (the first `rows` samples): the first
    /// layer, in forward order, whose output holds a NaN or infinity. Used to
    /// name the layer when training diverges.
    fn first_non_finite_layer(&self, ws: &Self::Workspace, rows: usize) -> Option<String>;

    /// The parameter tensors by name, with their shapes.
    fn named_params(&self) -> Vec<(&str, &[f32], &[usize])> {
        let p = self.params();
        self.layout()
            .entries()
            .iter()
            .map(|e| (e.name.as_str(), &p[e.range()], e.shape.as_slice()))
            .collect()
    }
}
