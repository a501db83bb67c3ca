//! How a dense model's parameter gradients follow from what its backward pass
//! keeps per chunk, for the trainer's fused gradient-and-update phase.
//!
//! Models made of dense layers need not write per-chunk weight gradients: a
//! dense weight's gradient over a chunk is a sum of products `A^T B` of
//! matrices the backward pass keeps anyway (deltas and layer inputs), and a
//! bias's gradient is the column sums of a delta. The trainer computes those
//! products for the whole batch, block of output units by block, right where
//! it applies the optimizer (see `crate::train`).

/// One tensor of the trainable range, in layout order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorGrad {
    /// A weight `[n_out, n_in]` whose gradient over a chunk of `rows`
    /// samples is the sum over `terms` of `a^T b`, with `a` `rows x n_out`
    /// and `b` `rows x n_in`, both row-major (see [`Factors`]).
    Dense {
        n_out: usize,
        n_in: usize,
        terms: usize,
    },
    /// A bias of `len` values whose gradient over a chunk is the column sums
    /// of `a`, `rows x len`.
    Bias { len: usize },
}

impl TensorGrad {
    /// Elements of the tensor.
    pub fn len(&self) -> usize {
        match *self {
            TensorGrad::Dense { n_out, n_in, .. } => n_out * n_in,
            TensorGrad::Bias { len } => len,
        }
    }
    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A chunk's factors of one term of a tensor's gradient (see
/// [`TensorGrad`]); `b` is empty for a bias. The slices may be longer than
/// the chunk's rows need (workspaces are sized for the largest chunk).
#[derive(Clone, Copy, Debug)]
pub struct Factors<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
}
