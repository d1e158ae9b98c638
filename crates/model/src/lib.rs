//! Llama-family models: GGUF / safetensors loading (dequantization, the Llama/Mistral/Qwen2 tensor
//! layouts), the model config, the tokenizer with chat templates, and fetching the default model.
//! The forward passes live in `minference-engine`.

pub mod chat;
pub mod config;
pub mod error;
pub mod fetch;
pub mod gguf;
pub mod model;
pub mod source;
pub mod structured;
pub mod tokenizer;
pub mod weights;

pub use chat::ChatTemplate;
pub use config::{Architecture, ModelConfig, RopeScaling};
pub use error::{ModelError, Result};
pub use fetch::{
    ensure_default_model, ensure_default_model_in, ensure_default_model_with, local_default_model_path,
    DEFAULT_MODEL_FILE,
};
pub use model::Model;
pub use structured::StructuredAttention;
pub use tokenizer::Tokenizer;
