use thiserror::Error;

/// Errors of the core crate. Every invalid input maps to one of these; nothing panics.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CoreError {
    #[error("invalid shape: {0}")]
    Shape(String),
    #[error("invalid budget: {0}")]
    Budget(String),
    #[error("unknown pattern name `{0}` (expected vertical_and_slash, adaptive_vertical_and_slash, stream_llm, block_sparse or dense)")]
    UnknownPattern(String),
    #[error("config {file}: {location}: {message}")]
    Config { file: String, location: String, message: String },
    #[error("non-finite value in {0}")]
    NonFinite(String),
    #[error("index too large: {0}")]
    Overflow(String),
}

pub type Result<T> = std::result::Result<T, CoreError>;
