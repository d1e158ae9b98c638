//! GPU paths of the commands. Until the GPU model engine is wired in, a request for CUDA says so.

use crate::run_cmd::RunArgs;
use anyhow::{bail, Result};

/// Whether a CUDA device can be used by this binary.
pub fn gpu_usable() -> bool {
    false
}

pub fn run_on_gpu(_args: &RunArgs, _text: &str, ordinal: usize) -> Result<()> {
    bail!("--device cuda:{ordinal}: the GPU model forward is not available in this build; use --device cpu")
}
