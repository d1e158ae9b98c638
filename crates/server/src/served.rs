//! What the server knows of the model its engines run: the config (context length, vocabulary)
//! and the tokenizer, when there is one.

use minference_model::{Model, ModelConfig, Tokenizer};
use std::sync::Arc;

/// The served model. Without a tokenizer (random weights) prompts are token ids and answers are
/// token ids (docs/server.md).
#[derive(Debug, Clone)]
pub enum ServedModel {
    /// A loaded model; its tokenizer may be missing (a random-weight host model).
    Loaded(Arc<Model>),
    /// Only the config: the engines hold the weights (random weights generated on the GPU).
    Config(ModelConfig),
}

impl ServedModel {
    pub fn config(&self) -> &ModelConfig {
        match self {
            ServedModel::Loaded(m) => m.config(),
            ServedModel::Config(c) => c,
        }
    }

    /// The tokenizer, or `None` when the model has none.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        match self {
            ServedModel::Loaded(m) => m.tokenizer().ok(),
            ServedModel::Config(_) => None,
        }
    }
}

impl From<Arc<Model>> for ServedModel {
    fn from(m: Arc<Model>) -> Self {
        ServedModel::Loaded(m)
    }
}
