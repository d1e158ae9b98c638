//! The embedded kernels (cubins from build.rs, or flattened sources for NVRTC) and the parameter
//! block of the attention kernels.

use crate::error::{CudaError, Result};
use cudarc::driver::{CudaContext, CudaModule, DeviceRepr};
use cudarc::nvrtc::{CompileOptions, Ptx};
use std::sync::Arc;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// Kernel modules: the file stems of `kernels/*.cu`, plus the variants build.rs compiles with
/// defines (`model_ops_f16`).
pub const UNITS: [&str; 10] = [
    "attention",
    "attention_f32",
    "estimate",
    "adaptive",
    "index",
    "fill",
    "search_score",
    HOPPER_UNIT,
    "model_ops",
    "model_ops_f16",
];

/// The Hopper warp-specialised attention (TMA, wgmma, setmaxnreg): built as a cubin by nvcc; its
/// NVRTC fallback is best effort (see [`check_nvrtc_sources`]).
pub const HOPPER_UNIT: &str = "hopper_attention";

/// Whether build.rs embedded a cubin for every unit.
pub fn has_cubins() -> bool {
    UNITS.iter().all(|u| has_cubin(u))
}

/// Whether build.rs embedded a cubin for `unit`.
pub fn has_cubin(unit: &str) -> bool {
    generated::CUBINS.iter().any(|(n, _)| *n == unit)
}

/// Loads one unit: the embedded sm_90a cubin, else NVRTC on the embedded source.
pub fn load_unit(ctx: &Arc<CudaContext>, unit: &str) -> Result<Arc<CudaModule>> {
    if let Some((_, bytes)) = generated::CUBINS.iter().find(|(n, _)| *n == unit) {
        return ctx
            .load_module(Ptx::from_binary(bytes.to_vec()))
            .map_err(|e| CudaError::KernelLoad(format!("loading the embedded cubin `{unit}` failed: {e:?}")));
    }
    let (_, src, defines) = generated::SOURCES
        .iter()
        .find(|(n, _, _)| *n == unit)
        .ok_or_else(|| CudaError::KernelLoad(format!("kernel unit `{unit}` is not embedded")))?;
    // SAFETY: only checks whether the NVRTC shared library can be opened.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(CudaError::KernelLoad(format!(
            "no cubin for `{unit}` was built (nvcc missing at build time) and libnvrtc is not available at run time; \
             rebuild with nvcc on PATH or NVCC set, or install libnvrtc"
        )));
    }
    let opts = CompileOptions {
        arch: Some("sm_90a"),
        options: ["-std=c++17", "-lineinfo", "-default-device"]
            .iter()
            .chain(defines.iter())
            .map(|o| o.to_string())
            .collect(),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(*src, opts)
        .map_err(|e| CudaError::KernelLoad(format!("NVRTC failed on `{unit}`: {e:?}")))?;
    ctx.load_module(ptx).map_err(|e| CudaError::KernelLoad(format!("loading NVRTC output of `{unit}` failed: {e:?}")))
}

/// NVRTC options: `base`, the unit's defines, and the CUDA include folder for the toolkit headers
/// some units use (`cuda_bf16.h`): `$CUDA_HOME/include`, `$CUDA_PATH/include` or
/// `/usr/local/cuda/include`, the first that exists.
fn nvrtc_options(base: &[&str], defines: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = base.iter().chain(defines).map(|o| o.to_string()).collect();
    let candidates = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(|v| std::env::var_os(v).map(|p| std::path::PathBuf::from(p).join("include")))
        .chain(std::iter::once(std::path::PathBuf::from("/usr/local/cuda/include")));
    if let Some(dir) = candidates.into_iter().find(|d| d.join("cuda_bf16.h").is_file()) {
        out.push(format!("--include-path={}", dir.display()));
    }
    out
}

/// Parameter block of the attention kernels; must match `AttnParams` in kernels/tiles.cuh (both
/// sides assert its size against kernels/abi.cuh at build time).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AttnParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub out: u64,
    pub seqs: u64,
    pub head_kind: u64,
    pub head_init: u64,
    pub head_local: u64,
    pub slot_base: u64,
    pub tile_ptr: u64,
    pub tile_start: u64,
    pub col_ptr: u64,
    pub col_index: u64,
    pub heads: i32,
    pub kv_heads: i32,
    pub total_q: i32,
    pub total_kv: i32,
    pub out_f32: i32,
    pub scale_log2: f32,
    /// Bit mask of head kinds (1 << HEAD_*) this launch computes.
    pub kinds: i32,
    pub pad1: i32,
}

// SAFETY: plain-old-data with the C layout the kernel expects.
unsafe impl DeviceRepr for AttnParams {}

/// Head kinds of kernels/abi.cuh (read from it by build.rs).
pub use generated::{BS_ROWS, BS_SPAN, HEAD_ASHAPE, HEAD_DENSE, HEAD_INDEX, HOPPER_STAGES, VS_RED_STRIDE};

// The kernels assert the same size (static_assert in kernels/tiles.cuh, MI_ATTN_PARAMS_BYTES).
const _: () = assert!(std::mem::size_of::<AttnParams>() == generated::ATTN_PARAMS_BYTES);

/// Compiles every embedded source with NVRTC (no GPU needed); returns each unit's PTX size.
/// Used by a test so that the fallback path cannot rot; `Ok(None)` when libnvrtc is absent.
pub fn check_nvrtc_sources() -> Result<Option<Vec<(String, usize)>>> {
    check_nvrtc_sources_except(&[])
}

/// [`check_nvrtc_sources`] without the units in `skip` (the Hopper unit is cubin-first: its
/// NVRTC compile is checked separately and may fail without failing the fallback).
pub fn check_nvrtc_sources_except(skip: &[&str]) -> Result<Option<Vec<(String, usize)>>> {
    // SAFETY: only checks whether the NVRTC shared library can be opened.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Ok(None);
    }
    let mut out = Vec::new();
    for (unit, src, defines) in generated::SOURCES.iter().filter(|(u, _, _)| !skip.contains(u)) {
        let opts = CompileOptions {
            arch: Some("sm_90a"),
            options: nvrtc_options(&["-std=c++17", "-default-device"], defines),
            ..Default::default()
        };
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(*src, opts)
            .map_err(|e| CudaError::KernelLoad(format!("NVRTC failed on `{unit}`: {e:?}")))?;
        out.push((unit.to_string(), ptx.to_src().len()));
    }
    Ok(Some(out))
}
