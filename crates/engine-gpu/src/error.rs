use minference_cuda::CudaError;
use minference_model::ModelError;
use thiserror::Error;

/// Errors of the GPU engine; nothing panics on bad input, a missing GPU or too little memory.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Cuda(#[from] CudaError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("CUDA driver error in {context}: {message}")]
    Driver { context: String, message: String },
    #[error("cuBLASLt error in {context}: {message}")]
    Blas { context: String, message: String },
    #[error("not enough GPU memory: {0}")]
    OutOfMemory(String),
    #[error("invalid input: {0}")]
    Input(String),
    /// A multi-GPU group's failure, naming the GPU that failed.
    #[error("{0}")]
    Group(String),
    /// A kernel wrapper's views do not fit the kernel (a bug of its caller, caught before launch).
    #[error("kernel `{kernel}`: {message}")]
    Shape { kernel: &'static str, message: String },
    #[error("GPU engine kernels: {0}")]
    KernelLoad(String),
    /// An error of the device-independent engine layer (a group's rank, the trait's callers).
    #[error(transparent)]
    Engine(#[from] minference_engine::EngineError),
}

impl From<EngineError> for minference_engine::EngineError {
    fn from(e: EngineError) -> Self {
        use minference_engine::EngineError as E;
        match e {
            EngineError::Engine(inner) => inner,
            EngineError::Model(m) => E::Model(m),
            EngineError::OutOfMemory(m) => E::OutOfMemory(m),
            EngineError::Cuda(c @ CudaError::OutOfMemory { .. }) => E::OutOfMemory(c.to_string()),
            EngineError::Input(m) => E::Input(m),
            other => E::device(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;

pub(crate) fn driver(context: &str) -> impl FnOnce(cudarc::driver::DriverError) -> EngineError + '_ {
    move |e| EngineError::Driver { context: context.to_string(), message: format!("{e:?}") }
}
