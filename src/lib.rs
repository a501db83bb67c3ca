//! vcortex: fast CPU reproduction of six classic MNIST experiments.

pub mod bench;
pub mod cli;
pub mod console;
pub mod data;
pub mod error;
pub mod experiments;
pub mod jsonfile;
pub mod model;
pub mod nn;
pub mod plot;
pub mod report;
pub mod train;

pub use vcortex_kernels as kernels;
