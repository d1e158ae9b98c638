//! GPU forward of the Llama-family model engine (issue 4 §3–§5, issue 7 §2).
//!
//! * [`GpuEngine`]: weights in bf16 on the device (uploaded from a `minference_model::Model`, or
//!   random weights of a named shape generated on the device), prefill with dense or MInference
//!   attention per layer and head, dense decode over the device KV cache.
//! * [`plan_gpu_memory`]: the bytes a prefill needs, and which KV layers go to pinned host memory.
//!
//! The layer walk is `minference_engine::forward`, the same as the CPU's; this crate supplies the
//! GPU's operations (`engine/device.rs`). Linear layers run through cuBLASLt (bf16, fp32
//! accumulation); norms, RoPE, SwiGLU, embedding, decode attention are small kernels in
//! `crates/cuda/kernels/model_ops.cu`; prefill attention is `minference_cuda::layer_attention`, per
//! layer or one KV-head group at a time.

pub mod engine;
pub mod error;
pub mod gemm;
mod kernel_args;
pub mod kv;
pub mod ops;
pub mod plan;
pub mod precision;
pub mod prefill_engine;
pub mod shard;
pub mod structured;
pub mod timing;
pub mod view;
pub mod weights;

pub use engine::{AttentionPass, EngineSetup, GpuEngine, PassObserver, DEFAULT_CHUNK_TOKENS, DEFAULT_MAX_NEW_TOKENS};
pub use error::{EngineError, Result};
pub use plan::{plan_gpu_memory, AttentionGrouping, PlanInput};
pub use precision::Precision;
pub use shard::{Collective, TensorShard};
pub use view::DeviceView;
