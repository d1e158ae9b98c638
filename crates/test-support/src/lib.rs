//! The one place where a test decides between running and skipping.
//!
//! Without hardware or files a test prints `SKIPPED: <why>` and returns, so the CPU-only CI stays
//! green. On the GPU machine `scripts/gpu-tests.sh` sets `MINFERENCE_REQUIRE_GPU=1`: every skip
//! (no GPU, no model file) becomes a failure, so a test can no longer "pass" by not running. A test
//! that needs more GPUs than the machine has still skips, unless `MINFERENCE_REQUIRE_GPUS=N` with
//! N at least the number it needs.
//!
//! [`agreement`] is the one measure of how closely two engines' outputs agree.

use std::fmt::Display;
use std::path::PathBuf;

pub mod agreement;
pub use agreement::{agreement, assert_logits_close, Agreement};

/// `MINFERENCE_REQUIRE_GPU=1`: skips are failures.
pub fn gpu_required() -> bool {
    std::env::var("MINFERENCE_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// `MINFERENCE_REQUIRE_GPUS=N`: tests needing up to N GPUs must run.
pub fn gpus_required() -> usize {
    std::env::var("MINFERENCE_REQUIRE_GPUS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Records a skip; panics instead when skips are failures here.
#[track_caller]
pub fn skip(reason: impl Display) {
    if gpu_required() {
        panic!("MINFERENCE_REQUIRE_GPU=1 but this test would skip: {reason}");
    }
    println!("SKIPPED: {reason}");
}

/// A test that needs `needed` GPUs and found fewer: a skip, a failure only when
/// `MINFERENCE_REQUIRE_GPUS` asks for at least `needed`.
#[track_caller]
pub fn skip_for_gpus(needed: usize, reason: impl Display) {
    if gpus_required() >= needed {
        panic!("MINFERENCE_REQUIRE_GPUS={} but this {needed}-GPU test would skip: {reason}", gpus_required());
    }
    println!("SKIPPED: needs {needed} GPUs ({reason})");
}

/// The calling test crate's folder: nextest sets `CARGO_MANIFEST_DIR` at run time to the remapped
/// checkout (archives run on another machine, where the build-time path does not exist); `cargo
/// test` sets the same folder it was built in. `built_in` is the caller's `env!("CARGO_MANIFEST_DIR")`.
pub fn crate_dir(built_in: &str) -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| built_in.into(), Into::into)
}

/// The default model file (SmolLM2-135M-Instruct GGUF) when it is on disk; otherwise a skip.
#[track_caller]
pub fn default_model() -> Option<PathBuf> {
    let path = minference_model::local_default_model_path();
    if path.is_file() {
        Some(path)
    } else {
        skip(format!("{} not found; run scripts/fetch-model.sh or set MINFERENCE_MODEL", path.display()));
        None
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    use super::{skip, skip_for_gpus};
    use minference_cuda::{CudaBackend, CudaError, Gpu};
    use std::sync::Arc;

    /// GPU 0, or a skip where no usable GPU exists. A GPU whose kernels fail to load is a failure.
    #[track_caller]
    pub fn gpu() -> Option<Arc<Gpu>> {
        match Gpu::open(0) {
            Ok(g) => Some(Arc::new(g)),
            Err(CudaError::NoGpu(why)) => {
                skip(format!("no usable GPU ({why})"));
                None
            }
            Err(e) => panic!("a GPU is present but could not be opened: {e}"),
        }
    }

    /// GPUs 0..n, or a skip (see [`skip_for_gpus`]) where fewer exist.
    #[track_caller]
    pub fn gpus(n: usize) -> Option<Vec<Arc<Gpu>>> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            match Gpu::open(i) {
                Ok(g) => out.push(Arc::new(g)),
                Err(CudaError::NoGpu(why)) => {
                    if i == 0 {
                        skip(format!("no usable GPU ({why})"));
                    } else {
                        skip_for_gpus(n, why);
                    }
                    return None;
                }
                Err(e) => panic!("GPU {i} is present but could not be opened: {e}"),
            }
        }
        Some(out)
    }

    /// GPU 0 with the Hopper kernel in use, or a skip where no GPU exists or (unless a GPU is
    /// required) where the card cannot run it.
    #[track_caller]
    pub fn hopper_gpu() -> Option<Arc<Gpu>> {
        let gpu = gpu()?;
        if let Err(why) = gpu.hopper_status() {
            if super::gpu_required() {
                panic!("Hopper kernel not in use: {why}");
            }
            skip(format!("Hopper kernel not in use: {why}"));
            return None;
        }
        Some(gpu)
    }

    /// The CUDA attention backend on GPU 0, or a skip.
    #[track_caller]
    pub fn cuda_backend() -> Option<CudaBackend> {
        match CudaBackend::new() {
            Ok(b) => Some(b),
            Err(CudaError::NoGpu(why)) => {
                skip(format!("no usable GPU ({why})"));
                None
            }
            Err(e) => panic!("a GPU is present but the CUDA backend failed: {e}"),
        }
    }
}

#[cfg(feature = "cuda")]
pub use gpu::{cuda_backend, gpu, gpus, hopper_gpu};
