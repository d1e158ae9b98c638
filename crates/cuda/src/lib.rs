//! CUDA (Hopper, sm_90a) backend of MInference: one FA2-style attention mainloop with pluggable
//! key-tile producers (dense, A-shape, CSR sparse index), VS estimation and index conversion on the
//! GPU, Block-Sparse estimation, all heads of a layer per launch.
//!
//! Entry points: [`CudaBackend`] (the shared [`minference_core::AttentionBackend`] on host tensors)
//! and the device-resident API ([`Gpu`], [`DeviceTensor`], [`layer_attention`], [`fill_normal`]) for
//! the model engine and the benchmarks (`minference-bench`: `minference bench attention`). Without a
//! GPU everything returns [`CudaError::NoGpu`].

pub mod attention;
pub mod backend;
pub mod build_index;
pub mod context;
pub mod error;
pub mod estimate;
pub mod fill;
pub mod hopper;
pub mod index;
pub mod kernels;
pub mod layer;
pub mod layout;
mod pool;
pub mod search_score;
pub mod tensor;

pub use attention::attention;
pub use backend::CudaBackend;
pub use build_index::build_index;
pub use context::{Arg, Gpu};
pub use error::{CudaError, Result};
pub use estimate::{estimate_vs, estimate_vs_scores, DeviceVsSelection};
pub use fill::fill_normal;
pub use index::DeviceIndex;
pub use layer::{layer_attention, LayerTimings};
pub use search_score::{DeviceHead, HeadSlice};
pub use tensor::DeviceTensor;
