use thiserror::Error;

/// Every way loading or running a model can fail. Each variant names what is wrong so that the
/// message alone tells a user what to fix.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed GGUF: {0}")]
    Gguf(String),
    #[error("malformed safetensors model: {0}")]
    Safetensors(String),
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("unknown architecture `{0}` (supported: llama, mistral, qwen2)")]
    UnknownArchitecture(String),
    #[error("unsupported tensor type {kind} for tensor `{tensor}` (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)")]
    UnsupportedQuantization { tensor: String, kind: String },
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    TensorShape { name: String, expected: Vec<usize>, actual: Vec<usize> },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("prompt has {tokens} tokens but the model's context is {context} tokens")]
    ContextOverflow { tokens: usize, context: usize },
    #[error("not enough memory: {0}")]
    OutOfMemory(String),
    #[error("attention backend error: {0}")]
    Backend(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("fetching the default model failed: {0}")]
    Fetch(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ModelError::Io { path: path.display().to_string(), source }
    }
}
