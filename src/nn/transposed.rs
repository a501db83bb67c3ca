//! A first layer's W^T, kept in the sparse-input product's panels.
//!
//! The sparse-input product (`sgemm_sparse_input`, the first layer's
//! forward pass over image pixels) transposes the rows of W its tiles use on
//! every call, and with the batch split across threads every thread does so
//! for its own rows: about a quarter of that pass (leaving it out, a timing
//! hack: 0.204 -> 0.151 s per thread and epoch on the DAE's first layer).
//! Where W stays fixed over many steps (layer 1 of the stack while layers 2
//! and 3 train), W^T is built once, its blocks shared out among the team's
//! threads, and every chunk's forward pass reads it. The owner invalidates
//! it whenever the weights may have changed; a pass that finds it stale
//! transposes W itself, as before. Either way the values are the same, bit
//! for bit.

use crate::kernels::gemm::SparsePanels;
use crate::kernels::team::Team;

/// W^T of an `n_out x n_in` weight and whether it matches W.
#[derive(Clone, Debug)]
pub struct TransposedWeights {
    panels: SparsePanels,
    fresh: bool,
}

impl TransposedWeights {
    /// Panels for an `n_out x n_in` weight, stale until the first rebuild.
    pub fn new(n_out: usize, n_in: usize) -> Self {
        TransposedWeights {
            panels: SparsePanels::new(n_out, n_in),
            fresh: false,
        }
    }

    /// W may have changed: stop using the panels until the next rebuild.
    pub fn invalidate(&mut self) {
        self.fresh = false;
    }

    /// Rebuilds the panels from `w` (`n_out x n_in`, row-major), each of
    /// `team`'s threads taking blocks of outputs from a shared counter.
    pub fn rebuild(&mut self, team: &Team, w: &[f32]) {
        let (_, n_in) = self.panels.shape();
        let (layout, blocks) = self.panels.parts_mut();
        team.for_each_mut(blocks, |_, block| layout.fill(block, w, n_in));
        self.fresh = true;
    }

    /// The panels, if they match W.
    pub fn get(&self) -> Option<&SparsePanels> {
        self.fresh.then_some(&self.panels)
    }
}
