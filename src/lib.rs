//! vcortex: fast CPU reproduction of six classic MNIST experiments.

pub mod data;
pub mod plot;
pub mod report;

pub use vcortex_kernels as kernels;
pub mod model;
pub mod nn;
pub mod train;
