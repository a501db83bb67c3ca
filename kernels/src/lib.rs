//! Hand-written f32 SIMD kernels for vcortex.
//!
//! Every public function is safe: it checks shapes and slice lengths once and
//! then runs an inner loop that may use `unsafe` (each block carries a
//! `// SAFETY:` comment; the one exception is [`alloc::LargeBlocksAligned`], whose
//! methods are the unsafe `GlobalAlloc` trait's). Tensors are dense,
//! row-major; image tensors are NCHW.
//! Functions are single-threaded unless their name ends in `_parallel`: the
//! trainer parallelises over the batch itself, one coarse chunk per core.
//!
//! `reference` holds plain, obviously-correct implementations of every kernel;
//! the property tests compare each fast kernel against them.

pub mod activation;
pub mod alloc;
pub mod conv;
pub mod gemm;
pub mod lanes;
pub mod loss;
pub mod noise;
pub mod optim;
pub mod peak;
pub mod pool;
pub mod reference;
pub mod rng;
pub mod simd;
pub mod sparse_grad;
pub mod team;
pub mod vmath;

pub use simd::{flush_subnormals_on_this_thread, SIMD_LEVEL};
