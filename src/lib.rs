//! vcortex: fast CPU reproduction of six classic MNIST experiments.

pub mod data;

pub use vcortex_kernels as kernels;
pub mod model;
pub mod nn;
pub mod train;
