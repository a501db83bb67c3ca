//! Network building blocks: named flat parameters, layers with explicit
//! forward and backward passes, and losses.

pub mod grad;
pub mod layers;
pub mod loss;
pub mod params;
pub mod transposed;

pub use grad::{Factors, InputList, TensorGrad};
pub use layers::{activation_backward, column_sums, Conv2d, Dense, MaxPool2d, TiedAutoencoder};
pub use loss::{count_correct, sigmoid_binary_cross_entropy, softmax_cross_entropy, Sparsity};
pub use params::{glorot_bound, init_uniform, sigmoid_bound, ParamEntry, ParamLayout};
pub use transposed::TransposedWeights;

/// Converts u8 pixels to f32 in [0, 1] (x / 255), with the SIMD kernel.
pub use crate::kernels::activation::u8_to_unit_f32 as u8_to_unit;
