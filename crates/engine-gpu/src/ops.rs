//! The engine's small kernels (`model_ops` of the one kernel build, crates/cuda/kernels/model_ops.cu):
//! loading, and launch wrappers over typed views (their checks and argument lists are
//! `kernel_args.rs`).

use crate::error::{EngineError, Result};
pub use crate::kernel_args::DECODE_CHUNK;
use crate::kernel_args::{DecodeKv, Launch, Plans, RopeDst};
use crate::precision::Precision;
use crate::view::{DeviceSlice, DeviceView};
use cudarc::driver::{CudaFunction, CudaModule, LaunchConfig};
use minference_cuda::Gpu;
use std::collections::HashMap;
use std::sync::Arc;

const ENTRIES: &[&str] = &[
    "init_uniform",
    "embed_rows",
    "rms_norm_rows",
    "rms_norm_f32out",
    "qkv_rope_scatter",
    "swiglu",
    "heads_to_rows",
    "gemv_rows_f32",
    "decode_attn_partial",
    "decode_attn_combine",
    "add_update_to_residual",
];

pub struct Ops {
    _module: Arc<CudaModule>,
    funcs: HashMap<&'static str, CudaFunction>,
    plans: Plans,
}

impl Ops {
    /// Loads the module of `precision` (embedded cubin, else NVRTC on the embedded source).
    pub fn load(gpu: &Gpu, precision: Precision) -> Result<Ops> {
        let unit = match precision {
            Precision::Bf16 => "model_ops",
            Precision::F16 => "model_ops_f16",
        };
        let module = minference_cuda::kernels::load_unit(gpu.stream().context(), unit)?;
        let mut funcs = HashMap::new();
        for &name in ENTRIES {
            let f = module
                .load_function(name)
                .map_err(|e| EngineError::KernelLoad(format!("kernel `{name}` missing: {e:?}")))?;
            funcs.insert(name, f);
        }
        Ok(Ops { _module: module, funcs, plans: Plans { dtype: precision.dtype() } })
    }

    /// The storage type of the unit (bf16 or f16).
    pub(crate) fn dtype(&self) -> minference_core::DType {
        self.plans.dtype
    }

    fn launch(&self, gpu: &Gpu, l: Launch) -> Result<()> {
        let name = l.name;
        let f = self.funcs.get(name).ok_or_else(|| EngineError::KernelLoad(format!("kernel `{name}` not loaded")))?;
        let cfg = LaunchConfig { grid_dim: (l.grid, 1, 1), block_dim: (l.block, 1, 1), shared_mem_bytes: l.smem };
        // SAFETY: every plan of kernel_args.rs passes the argument list of its kernel in
        // kernels/model_ops.cu, over views it checked against the kernel's shapes.
        unsafe { gpu.launch_function(f, name, cfg, &l.args) }?;
        Ok(())
    }

    /// Fills the whole of `out` with uniform values in [-scale, scale) from `seed`.
    pub(crate) fn init_uniform(&self, gpu: &Gpu, out: DeviceView, seed: u64, scale: f32) -> Result<()> {
        self.launch(gpu, self.plans.init_uniform(out, seed, scale)?)
    }

    pub(crate) fn embed(&self, gpu: &Gpu, tokens: DeviceSlice<i32>, table: DeviceView, out: DeviceView) -> Result<()> {
        self.launch(gpu, self.plans.embed(tokens, table, out)?)
    }

    /// `x += p`: f32 residual rows `x`, bf16/f16 update rows `p`.
    pub(crate) fn add_to_residual(&self, gpu: &Gpu, x: DeviceView, p: DeviceView) -> Result<()> {
        self.launch(gpu, self.plans.add_to_residual(x, p)?)
    }

    /// RMSNorm of f32 residual rows `x` into bf16/f16 rows `out`.
    pub(crate) fn rms_norm(
        &self,
        gpu: &Gpu,
        x: DeviceView,
        w: DeviceSlice<f32>,
        out: DeviceView,
        eps: f32,
    ) -> Result<()> {
        self.launch(gpu, self.plans.rms_norm(x, w, out, eps)?)
    }

    pub(crate) fn rms_norm_f32out(
        &self,
        gpu: &Gpu,
        x: DeviceView,
        w: DeviceSlice<f32>,
        out: DeviceSlice<f32>,
        eps: f32,
    ) -> Result<()> {
        self.launch(gpu, self.plans.rms_norm_f32out(x, w, out, eps)?)
    }

    pub(crate) fn qkv_rope_scatter(
        &self,
        gpu: &Gpu,
        qkv: DeviceView,
        bias: Option<DeviceView>,
        inv_freq: DeviceSlice<f64>,
        dst: RopeDst,
        gs: usize,
    ) -> Result<()> {
        self.launch(gpu, self.plans.qkv_rope_scatter(qkv, bias, inv_freq, dst, gs)?)
    }

    pub(crate) fn swiglu(&self, gpu: &Gpu, gate_up: DeviceView, out: DeviceView) -> Result<()> {
        self.launch(gpu, self.plans.swiglu(gate_up, out)?)
    }

    /// Head-major `src` (heads of `[n, D]`) into the token rows `dst`.
    pub(crate) fn heads_to_rows(&self, gpu: &Gpu, src: DeviceView, dst: DeviceView, head_dim: usize) -> Result<()> {
        self.launch(gpu, self.plans.heads_to_rows(src, dst, head_dim)?)
    }

    pub(crate) fn gemv_rows(&self, gpu: &Gpu, w: DeviceView, x: DeviceSlice<f32>, out: DeviceSlice<f32>) -> Result<()> {
        self.launch(gpu, self.plans.gemv_rows(w, x, out)?)
    }

    /// Dense decode attention of one KV-head group (split-K partials in `part`, then the combine).
    pub(crate) fn decode_attention(
        &self,
        gpu: &Gpu,
        q: DeviceView,
        kv: DecodeKv,
        n_keys: usize,
        part: DeviceSlice<f32>,
        out: DeviceView,
    ) -> Result<()> {
        let [partial, combine] = self.plans.decode_attention(q, kv, n_keys, part, out)?;
        self.launch(gpu, partial)?;
        self.launch(gpu, combine)
    }
}
