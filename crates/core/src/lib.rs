//! MInference semantics with no I/O and no GPU: patterns, shapes, online index estimation,
//! index conversion, per-head configs, coverage accounting, adaptive budgets and the synthetic
//! workload generator. Everything here is the reference the CPU and CUDA backends agree with.

pub mod backend;
pub mod error;
pub mod index;
pub mod pattern;
pub mod shape;
pub mod tensor;

pub use backend::AttentionBackend;
pub use error::{CoreError, Result};
pub use index::{RowBlockIndex, SparseIndex, VsSelection};
pub use pattern::*;
pub use shape::{causal_entries, AttnShape, SeqLen};
pub use tensor::{DType, HostTensor, OwnedTensor};
