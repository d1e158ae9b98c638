//! Errors of the evaluations.

use minference_core::CoreError;
use minference_model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Bad user input (files, lengths, depths, budgets).
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The model engine's failure, on whichever device it runs.
    #[error(transparent)]
    Engine(#[from] minference_engine::EngineError),
    #[error(transparent)]
    Picture(#[from] minference_picture::PictureError),
}

impl EvalError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        EvalError::Io { path: path.display().to_string(), source }
    }
}

pub type Result<T> = std::result::Result<T, EvalError>;
