//! Shared helpers of the GPU tests: open the GPU or skip cleanly.

use minference_cuda::{CudaBackend, CudaError};

/// The CUDA backend, or `None` (after printing "no GPU, skipped") where there is no usable GPU.
/// A GPU whose kernels fail to load is a test failure, not a skip.
pub fn gpu_backend() -> Option<CudaBackend> {
    match CudaBackend::new() {
        Ok(b) => Some(b),
        Err(CudaError::NoGpu(msg)) => {
            println!("no GPU, skipped ({msg})");
            None
        }
        Err(e) => panic!("a GPU is present but the CUDA backend failed: {e}"),
    }
}
