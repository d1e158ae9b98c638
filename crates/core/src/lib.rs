//! MInference semantics with no I/O and no GPU: patterns, shapes, online index estimation,
//! index conversion, per-head configs, coverage accounting, adaptive budgets and the synthetic
//! workload generator. Everything here is the reference the CPU and CUDA backends agree with.

pub mod adaptive;
pub mod ashape;
pub mod backend;
pub mod bs_estimate;
pub mod config;
pub mod coverage;
pub mod error;
pub mod hf_config;
pub mod index;
pub mod mask;
pub mod pattern;
pub mod rng;
pub mod shape;
pub mod synth;
pub mod tensor;
pub mod topk;
pub mod vs_convert;
pub mod vs_estimate;

pub use adaptive::{adaptive_vs_budget, select_vs_pattern, vs_budget_of, AdaptiveBudget};
pub use ashape::{ashape_entries, ashape_keep, ashape_key_ranges};
pub use backend::{AttentionBackend, BackendTransfer, HostBackend, HostRoundTrip};
pub use bs_estimate::estimate_bs_head;
pub use config::{HeadEntry, LayerPatterns, ModelPatternConfig};
pub use coverage::{attention_recall, head_coverage, index_head_coverage, Coverage};
pub use error::{CoreError, Result};
pub use hf_config::{is_hf_config, read_hf_config, write_hf_config, HfSparseAttention};
pub use index::{RowBlockIndex, SparseIndex, VsSelection};
pub use mask::kernel_mask_keep;
pub use pattern::*;
pub use shape::{causal_entries, AttnShape, SeqLen};
pub use synth::{generate_qkv, SynthConfig, SynthMode};
pub use tensor::{DType, HostTensor, OwnedTensor};
pub use vs_convert::convert_vs_head;
pub use vs_estimate::{clamp_vs_budget, estimate_vs_head, gather_last_q, select_vs, vs_scores, VsScores};
