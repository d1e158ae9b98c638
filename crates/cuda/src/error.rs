use minference_core::{CoreError, DType};
use thiserror::Error;

/// Errors of the CUDA backend. Every failure is reported; nothing panics on bad input or a missing GPU.
#[derive(Debug, Error)]
pub enum CudaError {
    /// No driver, no device, or a device these kernels cannot run on: callers fall back to the CPU.
    #[error("no usable GPU: {0}")]
    NoGpu(String),
    #[error("unsupported head_dim {0}: supported head dims are 64, 96 and 128")]
    UnsupportedHeadDim(usize),
    #[error("unsupported dtype {0:?}: supported input dtypes are bf16 and f16 (f32 runs on a slow exact path)")]
    UnsupportedDType(DType),
    #[error("out of GPU memory: asked for {asked} bytes, {free} bytes free of {total}")]
    OutOfMemory { asked: usize, free: usize, total: usize },
    #[error("no GPU kernels: {0}")]
    KernelLoad(String),
    #[error("CUDA driver error in {context}: {message}")]
    Driver { context: String, message: String },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error(transparent)]
    Core(#[from] CoreError),
}

pub type Result<T> = std::result::Result<T, CudaError>;

/// Adds the call site to a driver error.
pub(crate) trait DriverContext<T> {
    fn ctx(self, what: &str) -> Result<T>;
}

impl<T> DriverContext<T> for std::result::Result<T, cudarc::driver::DriverError> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| CudaError::Driver { context: what.to_string(), message: format!("{e:?}") })
    }
}
