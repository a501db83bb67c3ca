//! How a dense model's parameter gradients follow from what its backward pass
//! keeps per chunk, for the trainer's fused gradient-and-update phase.
//!
//! Models made of dense layers need not write per-chunk weight gradients: a
//! dense weight's gradient over a chunk is a sum of products `A^T B` of
//! matrices the backward pass keeps anyway (deltas and layer inputs), and a
//! bias's gradient is the column sums of a delta. The trainer computes those
//! products for the whole batch, block of output units by block, right where
//! it applies the optimizer (see `crate::train`).

use crate::kernels::sparse_grad::Csc;

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
/// `b_list`, where given, lists `b`'s non-zeros (an [`InputList`] of image
/// pixels): the product then runs the sparse weight gradient.
#[derive(Clone, Copy, Debug)]
pub struct Factors<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub b_list: Option<&'a Csc>,
}

impl<'a> Factors<'a> {
    /// Factors without a list of `b`'s non-zeros.
    pub fn dense(a: &'a [f32], b: &'a [f32]) -> Self {
        Factors { a, b, b_list: None }
    }
}

/// Up to this share of non-zeros, a chunk's input takes the sparse weight
/// gradient ([`sgemm_tn_sparse_sum`]): its work follows the non-zeros, and
/// at MNIST's 18% it took 260-285 us against the dense product's 520-600 us
/// for a 456 x 784 block of two 64-row chunks (`cargo run --release -p
/// vcortex-kernels --example sparse_grad_timing`), and at 36% (`FILL_IN=0.25`)
/// still 478 against 620 us, so 30% leaves a margin; denser inputs
/// (Fashion-MNIST's ~50%) stay dense.
///
/// [`sgemm_tn_sparse_sum`]: crate::kernels::sparse_grad::sgemm_tn_sparse_sum
const SPARSE_INPUT_MAX_DENSITY: f64 = 0.3;

/// A chunk's layer input listed by columns for the sparse weight gradient,
/// when it is sparse enough to pay (at most 30% non-zero).
#[derive(Clone, Debug, Default)]
pub struct InputList {
    list: Csc,
    sparse: bool,
}

impl InputList {
    /// Lists the `rows x cols` row-major `x` if it is sparse enough (a
    /// denser one is only counted).
    pub fn update(&mut self, x: &[f32], rows: usize, cols: usize) {
        let max_nnz = (SPARSE_INPUT_MAX_DENSITY * (rows * cols) as f64) as usize;
        self.sparse = self.list.fill_up_to(x, rows, cols, cols, max_nnz);
    }

    /// The list, if the input was sparse enough.
    pub fn get(&self) -> Option<&Csc> {
        self.sparse.then_some(&self.list)
    }
}
