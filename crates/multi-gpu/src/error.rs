use minference_cuda::CudaError;
use minference_engine_gpu::EngineError;
use thiserror::Error;

/// Errors of a tensor-parallel group. A failure on one rank ends the whole group with that
/// rank's error; nothing hangs (collectives are aborted, replies have a deadline).
#[derive(Debug, Error)]
pub enum TpError {
    #[error("NCCL: {0}")]
    Nccl(String),
    #[error("GPU {rank} (device {ordinal}): {source}")]
    Rank {
        rank: usize,
        ordinal: usize,
        #[source]
        source: EngineError,
    },
    #[error("GPU {rank} (device {ordinal}) gave no sign of progress for {seconds} s; the group was stopped")]
    Timeout { rank: usize, ordinal: usize, seconds: u64 },
    #[error("the tensor-parallel group was stopped after an earlier failure")]
    Aborted,
    #[error("GPU {ordinal}: {source}")]
    Open {
        ordinal: usize,
        #[source]
        source: CudaError,
    },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("a GPU worker thread ended unexpectedly: {0}")]
    Worker(String),
}

pub type Result<T> = std::result::Result<T, TpError>;

impl From<TpError> for minference_engine::EngineError {
    fn from(e: TpError) -> Self {
        match e {
            TpError::Input(m) => minference_engine::EngineError::Input(m),
            other => minference_engine::EngineError::device(other),
        }
    }
}
