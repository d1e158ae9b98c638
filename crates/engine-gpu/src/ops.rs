//! The engine's small kernels (`model_ops` of the one kernel build, crates/cuda/kernels/model_ops.cu):
//! loading and typed launch wrappers.

use crate::error::{driver, EngineError, Result};
use crate::precision::Precision;
use crate::view::DeviceView;
use cudarc::driver::{CudaFunction, CudaModule, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use minference_core::DType;
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

/// Keys per block of the decode attention (DECODE_CHUNK in the kernel).
pub const DECODE_CHUNK: usize = 256;

/// A kernel argument passed by value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    P(u64),
    I(i32),
    L(i64),
    U(u64),
    F(f32),
}

/// Blocks of 256 threads for a grid-stride kernel over `items`: one item per thread, at most
/// 65,536 blocks (the kernel loops over the rest), at least one.
fn grid_stride_blocks(items: usize) -> u32 {
    items.div_ceil(256).clamp(1, 65_536) as u32
}

/// Device address of a slice (the engine orders everything on the Gpu's one stream).
pub(crate) fn dptr<T>(gpu: &Gpu, s: &CudaSlice<T>) -> u64 {
    let (p, _sync) = s.device_ptr(gpu.stream());
    p
}

pub struct Ops {
    _module: Arc<CudaModule>,
    funcs: HashMap<&'static str, CudaFunction>,
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
        Ok(Ops { _module: module, funcs })
    }

    pub(crate) fn launch(&self, gpu: &Gpu, name: &str, grid: u32, block: u32, smem: u32, args: &[Arg]) -> Result<()> {
        if grid == 0 {
            return Ok(());
        }
        let f = self.funcs.get(name).ok_or_else(|| EngineError::KernelLoad(format!("kernel `{name}` not loaded")))?;
        let mut b = gpu.stream().launch_builder(f);
        for a in args {
            match a {
                Arg::P(p) => b.arg(p),
                Arg::I(i) => b.arg(i),
                Arg::L(l) => b.arg(l),
                Arg::U(u) => b.arg(u),
                Arg::F(x) => b.arg(x),
            };
        }
        let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: smem };
        // SAFETY: every wrapper below passes the argument list of its kernel in kernels/model_ops.cu.
        unsafe { b.launch(cfg) }.map_err(driver(name))?;
        Ok(())
    }

    /// Fills `n` bf16 values at `ptr` with uniform values in [-scale, scale) from `seed`.
    pub(crate) fn init_uniform(&self, gpu: &Gpu, ptr: u64, n: usize, seed: u64, scale: f32) -> Result<()> {
        let grid = grid_stride_blocks(n);
        self.launch(gpu, "init_uniform", grid, 256, 0, &[Arg::P(ptr), Arg::L(n as i64), Arg::U(seed), Arg::F(scale)])
    }

    pub(crate) fn embed(&self, gpu: &Gpu, tokens: u64, table: u64, out: u64, n: usize, hidden: usize) -> Result<()> {
        self.launch(
            gpu,
            "embed_rows",
            n as u32,
            256,
            0,
            &[Arg::P(tokens), Arg::P(table), Arg::P(out), Arg::I(hidden as i32)],
        )
    }

    /// `x[i] += p[i]` for `n` values: f32 residual `x`, bf16 update `p`.
    pub(crate) fn add_to_residual(&self, gpu: &Gpu, x: u64, p: u64, n: usize) -> Result<()> {
        let grid = grid_stride_blocks(n);
        self.launch(gpu, "add_update_to_residual", grid, 256, 0, &[Arg::P(x), Arg::P(p), Arg::L(n as i64)])
    }

    /// RMSNorm of `rows` f32 residual rows at `x` into bf16 rows at `out`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rms_norm(
        &self,
        gpu: &Gpu,
        x: u64,
        w: u64,
        out: u64,
        rows: usize,
        width: usize,
        eps: f32,
    ) -> Result<()> {
        let args = [Arg::P(x), Arg::P(w), Arg::P(out), Arg::I(width as i32), Arg::F(eps)];
        self.launch(gpu, "rms_norm_rows", rows as u32, 256, 0, &args)
    }

    pub(crate) fn rms_norm_f32out(&self, gpu: &Gpu, x: u64, w: u64, out: u64, width: usize, eps: f32) -> Result<()> {
        let args = [Arg::P(x), Arg::P(w), Arg::P(out), Arg::I(width as i32), Arg::F(eps)];
        self.launch(gpu, "rms_norm_f32out", 1, 256, 0, &args)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn qkv_rope_scatter(
        &self,
        gpu: &Gpu,
        (qkv, in_stride): (u64, usize),
        bias: u64,
        inv_freq: u64,
        (q_out, k_out, v_out): (u64, u64, u64),
        tokens: usize,
        gs: usize,
        head_dim: usize,
        (q_rows, q_row0, kv_row0, pos0): (usize, usize, usize, usize),
    ) -> Result<()> {
        let args = [
            Arg::P(qkv),
            Arg::P(bias),
            Arg::P(inv_freq),
            Arg::P(q_out),
            Arg::P(k_out),
            Arg::P(v_out),
            Arg::I(gs as i32),
            Arg::I(head_dim as i32),
            Arg::L(q_rows as i64),
            Arg::L(q_row0 as i64),
            Arg::L(kv_row0 as i64),
            Arg::L(pos0 as i64),
            Arg::I(in_stride as i32),
        ];
        self.launch(gpu, "qkv_rope_scatter", tokens as u32, (head_dim / 2) as u32, 0, &args)
    }

    pub(crate) fn swiglu(&self, gpu: &Gpu, gate_up: u64, out: u64, rows: usize, inter: usize) -> Result<()> {
        let grid = grid_stride_blocks(rows * inter);
        self.launch(
            gpu,
            "swiglu",
            grid,
            256,
            0,
            &[Arg::P(gate_up), Arg::P(out), Arg::L(rows as i64), Arg::I(inter as i32)],
        )
    }

    /// Head-major `[gs, n, D]` at `src` → rows of `row_stride` elements at `dst` (columns `0..gs*D`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn heads_to_rows(
        &self,
        gpu: &Gpu,
        src: u64,
        dst: u64,
        n: usize,
        gs: usize,
        head_dim: usize,
        row_stride: usize,
    ) -> Result<()> {
        // One thread per 8 elements (a 16-byte vector).
        let grid = grid_stride_blocks(n * gs * head_dim / 8);
        let args = [
            Arg::P(src),
            Arg::P(dst),
            Arg::L(n as i64),
            Arg::I(gs as i32),
            Arg::I(head_dim as i32),
            Arg::I(row_stride as i32),
        ];
        self.launch(gpu, "heads_to_rows", grid, 256, 0, &args)
    }

    pub(crate) fn gemv_rows(&self, gpu: &Gpu, w: u64, x: u64, out: u64, rows: usize, cols: usize) -> Result<()> {
        let grid = (rows * 32).div_ceil(256) as u32;
        self.launch(
            gpu,
            "gemv_rows_f32",
            grid,
            256,
            0,
            &[Arg::P(w), Arg::P(x), Arg::P(out), Arg::I(rows as i32), Arg::I(cols as i32)],
        )
    }

    /// Dense decode attention of one KV-head group; `part` holds `splits * gs * (head_dim + 2)` floats.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decode_attention(
        &self,
        gpu: &Gpu,
        q: u64,
        (k_pre, v_pre, k_tail, v_tail): (u64, u64, u64, u64),
        n_pre: usize,
        n_keys: usize,
        gs: usize,
        head_dim: usize,
        part: u64,
        out: u64,
    ) -> Result<()> {
        let splits = n_keys.div_ceil(DECODE_CHUNK);
        // Three f32 arrays back to back: maxima and sums `[splits * gs]`, accumulators
        // `[splits * gs, head_dim]`; as rows of `splits * gs` they start at rows 0, 1 and 2.
        let partials = DeviceView::new(part, DType::F32, head_dim + 2, splits * gs);
        let (part_m, part_l, part_acc) = (partials.row_ptr(0), partials.row_ptr(1), partials.row_ptr(2));
        let scale = 1.0 / (head_dim as f32).sqrt();
        let smem = (4 * gs * (head_dim + DECODE_CHUNK)) as u32;
        let args = [
            Arg::P(q),
            Arg::P(k_pre),
            Arg::P(v_pre),
            Arg::P(k_tail),
            Arg::P(v_tail),
            Arg::I(n_pre as i32),
            Arg::I(n_keys as i32),
            Arg::I(gs as i32),
            Arg::I(head_dim as i32),
            Arg::F(scale),
            Arg::P(part_m),
            Arg::P(part_l),
            Arg::P(part_acc),
        ];
        self.launch(gpu, "decode_attn_partial", splits as u32, DECODE_CHUNK as u32, smem, &args)?;
        let args = [
            Arg::P(part_m),
            Arg::P(part_l),
            Arg::P(part_acc),
            Arg::I(splits as i32),
            Arg::I(gs as i32),
            Arg::I(head_dim as i32),
            Arg::P(out),
        ];
        self.launch(gpu, "decode_attn_combine", gs as u32, head_dim as u32, 0, &args)
    }
}

#[cfg(test)]
mod tests {
    use super::grid_stride_blocks;

    #[test]
    fn grid_stride_blocks_cover_every_item_up_to_the_block_cap() {
        assert_eq!(grid_stride_blocks(0), 1);
        assert_eq!(grid_stride_blocks(256), 1);
        assert_eq!(grid_stride_blocks(257), 2);
        assert_eq!(grid_stride_blocks(256 * 65_536), 65_536);
        assert_eq!(grid_stride_blocks(usize::MAX / 2), 65_536);
    }
}
