//! vcortex: fast CPU reproduction of six classic MNIST experiments.

pub use vcortex_kernels as kernels;
