use minference_model::ModelError;
use thiserror::Error;

/// Why a prefill or decode step failed, on any device. Device errors keep their source.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("not enough memory: {0}")]
    OutOfMemory(String),
    #[error("invalid input: {0}")]
    Input(String),
    /// The device's own failure (CUDA driver, cuBLASLt, NCCL, a GPU of a group).
    #[error(transparent)]
    Device(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl EngineError {
    pub fn device(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        EngineError::Device(Box::new(e))
    }

    /// Out of host or device memory: the request may succeed with a shorter prompt.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, EngineError::OutOfMemory(_) | EngineError::Model(ModelError::OutOfMemory(_)))
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;
