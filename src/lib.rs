//! vcortex: fast CPU reproduction of six classic MNIST experiments.

pub mod data;

pub use vcortex_kernels as kernels;
pub mod cli;
pub mod error;
