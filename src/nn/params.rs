//! Named parameter tensors stored in one flat `f32` buffer.
//!
//! Every model keeps all its parameters in a single `Vec<f32>` described by a
//! [`ParamLayout`]; gradients and optimizer state use the same layout, so the
//! optimizer, the chunk-gradient reduction and checkpoints work on whole
//! buffers while figures and tests address tensors by name.

use std::ops::Range;

use crate::kernels::rng::Rng;

/// One named tensor inside a flat parameter buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamEntry {
    /// Dotted name, e.g. `conv1.weight`, `fc2.bias`, `dae1.visible_bias`.
    pub name: String,
    /// Row-major shape (conv weights `[c_out, c_in, kh, kw]`, dense weights
    /// `[n_out, n_in]` so that row `j` is unit `j`'s incoming weights).
    pub shape: Vec<usize>,
    /// Offset of the first element in the flat buffer.
    pub offset: usize,
}

impl ParamEntry {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Element range inside the flat buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The ordered list of tensors of a model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamLayout {
    entries: Vec<ParamEntry>,
    total: usize,
}

impl ParamLayout {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a tensor and returns its range.
    pub fn push(&mut self, name: &str, shape: &[usize]) -> Range<usize> {
        let entry = ParamEntry {
            name: name.to_string(),
            shape: shape.to_vec(),
            offset: self.total,
        };
        self.total += entry.len();
        let range = entry.range();
        self.entries.push(entry);
        range
    }

    /// Total number of `f32` values.
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// The entry called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The range of tensor `name`; panics on an unknown name (a programming
    /// error: names are fixed by the model code).
    pub fn range(&self, name: &str) -> Range<usize> {
        self.get(name)
            .unwrap_or_else(|| panic!("unknown parameter tensor {name}"))
            .range()
    }

    /// `name=shape` pairs joined, a fingerprint of the architecture used to
    /// refuse checkpoints from another model.
    pub fn signature(&self) -> String {
        self.entries
            .iter()
            .map(|e| {
                let dims: Vec<String> = e.shape.iter().map(|d| d.to_string()).collect();
                format!("{}={}", e.name, dims.join("x"))
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The first tensor (in layer order) holding a NaN or infinity.
    pub fn first_non_finite<'a>(&'a self, params: &[f32]) -> Option<&'a str> {
        self.entries
            .iter()
            .find(|e| params[e.range()].iter().any(|v| !v.is_finite()))
            .map(|e| e.name.as_str())
    }
}

/// Glorot-uniform bound sqrt(6 / (fan_in + fan_out)), as the CNN uses.
pub fn glorot_bound(fan_in: usize, fan_out: usize) -> f32 {
    (6.0 / (fan_in + fan_out) as f64).sqrt() as f32
}

/// The bound 4 * sqrt(6 / (n_in + n_out)) used for sigmoid layers (and the
/// softmax layer on top of them) by the Theano tutorial code.
pub fn sigmoid_bound(n_in: usize, n_out: usize) -> f32 {
    4.0 * glorot_bound(n_in, n_out)
}

/// Fills `w` with uniform draws in [-bound, bound).
pub fn init_uniform(rng: &mut Rng, w: &mut [f32], bound: f32) {
    rng.fill_uniform(w, -bound, bound);
}

/// Two disjoint mutable sub-slices of one buffer (`first` must end at or
/// before `second` starts), e.g. a weight gradient and its bias gradient.
pub fn split_two(
    buf: &mut [f32],
    first: Range<usize>,
    second: Range<usize>,
) -> (&mut [f32], &mut [f32]) {
    assert!(
        first.end <= second.start,
        "split_two: ranges overlap or are out of order"
    );
    let (lo, hi) = buf.split_at_mut(second.start);
    (&mut lo[first], &mut hi[..second.end - second.start])
}
