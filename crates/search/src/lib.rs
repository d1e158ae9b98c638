//! Offline kernel-aware pattern search (spec §3, issue 5), the seeded synthetic KV-retrieval
//! calibration prompt, and attention pictures.
//!
//! * [`head::search_head`]: one head's Q/K/V → every candidate scored against exact dense attention
//!   (computed in 64-row blocks, never `N × N`).
//! * [`candidates`]: presets (paper Table 7, the released code) and kernel-aware candidates fitted
//!   to a target kernel cost on the head's actual indices (core coverage accounting).
//! * [`driver::search_model`]: runs a model densely on a calibration prompt and searches every
//!   (layer, head); the result is MInference's JSON config.
//! * [`gpu::search_model_gpu`]: the same search with the forward and the candidate scoring on the
//!   GPU (candidates are still built on the host, so both paths choose among the same masks).
//! * [`budget::allocate`]: one candidate per head under a global mean kernel-density target, by
//!   marginal loss decrease per unit of density (`ModelSearch::allocate_density`).
//! * [`multi`]: several calibration documents (code, prose, retrieval prompts), each head's
//!   patterns scored on all of them and averaged.
//! * [`details`]: every head's scored candidates as TSV and back (re-allocation without the model).
//! * [`kv_prompt`]: InfiniteBench-style kv_retrieval prompt to a token budget.
//! * [`viz`]: attention heat maps with the chosen pattern's kernel mask, as PNG.

pub mod budget;
pub mod calibration;
pub mod candidates;
pub mod capture;
pub mod dense;
pub mod details;
pub mod driver;
pub mod error;
pub mod gpu;
pub mod gpu_score;
pub mod head;
pub mod kv_prompt;
pub mod mask;
pub mod multi;
pub mod objective;
pub mod residual;
pub mod sensitivity;
pub mod viz;

pub use budget::{allocate, CostPoint};
pub use candidates::{Candidate, CandidateSpace, HeadCandidates, Preset, TargetCost};
pub use dense::{dense_output, HeadInputs};
pub use driver::{search_model, search_model_with, HeadExtras, HeadReport, ModelSearch};
pub use error::{Result, SearchError};
pub use gpu::{search_head_gpu, search_model_gpu, search_model_gpu_with, GpuSearchError};
pub use head::{search_head, CandidateScore, HeadSearch, SearchOptions};
pub use kv_prompt::{kv_retrieval_prompt, KvPrompt};
pub use mask::HeadMask;
pub use multi::{extras_of, merge_searches};
pub use objective::Objective;
pub use residual::ResidualWeight;
