//! Multi-GPU prefill and decode on one host (issue 6): tensor parallelism over heads through NCCL.
//!
//! Each GPU runs a `minference_engine_gpu::GpuEngine` on its [`TensorShard`] — its KV heads with
//! their query groups, its slice of the MLP's intermediate dimension, its part of the KV cache —
//! in a thread of its own. The residual stream is summed over the GPUs with an NCCL all-reduce
//! after the attention output projection and after the MLP. MInference patterns are looked up by
//! global head id. [`TpEngine`] drives the threads and implements `PrefillEngine`, so every GPU
//! command takes `--gpus N`.
//!
//! A failing rank (out of memory, bad input, a lost GPU) ends the whole group with that rank's
//! error: the controller aborts every communicator, so ranks waiting in a collective return, and
//! it waits for each rank's next sign of life only up to a deadline.

pub mod error;
pub mod group;
pub mod nccl;
mod worker;

pub use error::{Result, TpError};
pub use group::{TpEngine, TpModel, TpOptions};
pub use minference_engine_gpu::TensorShard;
