//! The model engine: one interface ([`PrefillEngine`]) that the CPU forward here, one GPU
//! (`minference-engine-gpu`) and a tensor-parallel group (`minference-multi-gpu`) implement, the one
//! generate loop over it, the one forward ([`forward`], written once over [`Device`]) with its one
//! [`Observer`], and the pieces of a forward that every device shares (attention plan, RoPE
//! frequencies, sampling, stats).
//!
//! ```no_run
//! use minference_engine::{cpu_engine, generate, AttentionChoice, GenerateOptions, Sampler};
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let model = std::sync::Arc::new(minference_model::Model::load(&minference_model::ensure_default_model()?)?);
//! let tokenizer = model.tokenizer()?;
//! let prompt = tokenizer.encode("The capital of France is")?;
//! let mut engine = cpu_engine(model.clone());
//! let opts = GenerateOptions { max_new_tokens: 8, sampler: Sampler::greedy(), stop_tokens: tokenizer.stop_tokens.clone() };
//! let out = generate(&mut engine, &prompt, &AttentionChoice::Dense, &opts, &mut |_| {}, &mut |_| true)?;
//! # let _ = out; Ok(()) }
//! ```

pub mod attention;
pub mod capture;
pub mod cpu;
mod cpu_device;
pub mod decode_attention;
pub mod decode_profile;
pub mod error;
pub mod forward;
pub mod generate;
pub mod kv_cache;
pub mod lm_head;
pub mod memory;
pub mod observer;
pub mod ops;
pub mod prefill_engine;
pub mod rope;
pub mod sampling;
pub mod stats;
pub mod tokens;

pub use attention::{AttentionChoice, MInferencePlan};
pub use capture::save_qk;
pub use cpu::{cpu_engine, CpuEngine};
pub use decode_profile::{DecodeOp, DecodeProfile};
pub use error::{EngineError, Result};
pub use forward::{forward, Device, Norm, Phase, PrefillProgress, Walk};
pub use generate::{generate, Decoding, GenerateOptions, Generation, StopReason, TextStream};
pub use observer::{AttentionPass, Both, CapturedQk, NoObserver, Observer, QkCapture, ResidualExport};
pub use prefill_engine::PrefillEngine;
pub use sampling::Sampler;
pub use stats::{MemoryPlan, PrefillStats};
pub use tokens::random_tokens;
