//! CPU backend and correctness oracle for MInference attention.
//!
//! * [`CpuBackend`] implements [`minference_core::AttentionBackend`]: one tiled flash-style mainloop
//!   (64-row query blocks × 64-key tiles, base-2 online softmax in f32, `matrixmultiply` sgemm for
//!   Q·Kᵀ and P·V) fed by pluggable key-tile iterators (dense, A-shape, sparse index).
//! * [`reference`]: f64 masked attention, the ground truth of every test.
//!
//! The property checks every backend runs live in the `minference-backend-suite` test crate, the
//! CPU attention benchmark in `minference-bench`.

mod attention;
mod backend;
mod error;
mod estimate;
mod exp2;
pub mod gemm;
mod kernels;
mod mainloop;
pub mod reference;
pub mod rng;
mod sparse;
mod staging;
pub mod tiles;

pub use backend::CpuBackend;
pub use error::{CpuError, CpuResult};
