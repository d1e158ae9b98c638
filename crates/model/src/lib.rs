//! Llama-family model engine: GGUF / safetensors loading, tokenizer, CPU forward with MInference
//! prefill through any `AttentionBackend`, decode over a KV cache, sampling, and a memory plan.
//!
//! ```no_run
//! use minference_model::{AttentionChoice, Engine, Model};
//! # fn run<B: minference_core::AttentionBackend>(backend: B) -> minference_model::Result<()> {
//! let model = Model::load(&minference_model::ensure_default_model()?)?;
//! let prompt = model.tokenizer()?.encode("The capital of France is")?;
//! let mut engine = Engine::new(model, backend);
//! let (logits, stats) = engine.prefill(&prompt, &AttentionChoice::Dense, &mut |_| {})?;
//! # let _ = (logits, stats); Ok(()) }
//! ```

pub mod attention;
pub mod capture;
pub mod chat;
pub mod config;
pub mod engine;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod kv_cache;
pub mod lm_head;
pub mod memory;
pub mod model;
pub mod ops;
pub mod rope;
pub mod sampling;
pub mod source;
pub mod tokenizer;
pub mod weights;

pub use attention::{AttentionChoice, MInferencePlan};
pub use capture::save_qk;
pub use chat::ChatTemplate;
pub use config::{Architecture, ModelConfig, RopeScaling};
pub use engine::{CapturedQk, Engine, PrefillProgress, PrefillStats};
pub use error::{ModelError, Result};
pub use fetch::{
    ensure_default_model, ensure_default_model_in, ensure_default_model_with, local_default_model_path,
    DEFAULT_MODEL_FILE,
};
pub use generate::{GenerateOptions, Generation, StopReason, TextStream};
pub use model::Model;
pub use sampling::Sampler;
pub use tokenizer::Tokenizer;
