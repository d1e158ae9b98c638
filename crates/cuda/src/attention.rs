//! Launch of the attention kernels (one launch for all heads and sequences of a layer).

use crate::context::Gpu;
use crate::error::{CudaError, Result};
use crate::index::DeviceIndex;
use crate::kernels::{AttnParams, HEAD_ASHAPE, HEAD_DENSE, HEAD_INDEX};
use crate::layout::{check_patterns, dtype_suffix, Meta};
use crate::tensor::DeviceTensor;
use minference_core::{AttnShape, DType, HeadPattern};

/// CTA shape for the dense and A-shape heads (index heads always use 64-row blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseVariant {
    /// 64 rows, 4 warps x 16 rows.
    Rows64,
    /// 128 rows, 4 warps x 32 rows.
    Rows128Warps4,
    /// 128 rows, 8 warps x 16 rows (default: fastest measured, bench/NOTES.md v3).
    Rows128Warps8,
}

impl DenseVariant {
    /// `MINFERENCE_DENSE_VARIANT` = `m64` | `m128` | `m128w8` (for benchmarking the variants).
    pub fn from_env() -> DenseVariant {
        match std::env::var("MINFERENCE_DENSE_VARIANT").as_deref() {
            Ok("m64") => DenseVariant::Rows64,
            Ok("m128") => DenseVariant::Rows128Warps4,
            _ => DenseVariant::Rows128Warps8,
        }
    }
}

/// Kernel choices read from the environment once, when the GPU is opened (A/B benchmarking only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSwitches {
    /// `MINFERENCE_DENSE_VARIANT`.
    pub dense_variant: DenseVariant,
    /// `MINFERENCE_WGMMA=0` selects the mma.sync kernels instead of wgmma.
    pub wgmma: bool,
    /// `MINFERENCE_WG_PIPE=0` selects the plain wgmma loop instead of the pipelined one.
    pub wg_pipe: bool,
}

impl KernelSwitches {
    pub fn from_env() -> KernelSwitches {
        let on = |name: &str| std::env::var(name).map_or(true, |v| v != "0");
        KernelSwitches {
            dense_variant: DenseVariant::from_env(),
            wgmma: on("MINFERENCE_WGMMA"),
            wg_pipe: on("MINFERENCE_WG_PIPE"),
        }
    }

    /// Whether the wgmma (Hopper warpgroup MMA) kernels are used: D = 64 or 128, unless switched off.
    pub fn use_wgmma(&self, head_dim: usize) -> bool {
        (head_dim == 64 || head_dim == 128) && self.wgmma
    }
}

/// `out = attention(q, k, v)` with each head's pattern; VS/BS heads read `index`.
/// `out` is f32 or the input dtype (f32 inputs need an f32 output).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    gpu: &Gpu,
    shape: &AttnShape,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    patterns: &[HeadPattern],
    index: Option<&DeviceIndex>,
    out: &mut DeviceTensor,
) -> Result<()> {
    crate::layout::check_problem(shape, (q.dtype, q.len), (k.dtype, k.len), Some((v.dtype, v.len)))?;
    check_patterns(shape, patterns)?;
    if out.len != shape.q_elems() {
        return Err(CudaError::Invalid(format!("output has {} elements, shape needs {}", out.len, shape.q_elems())));
    }
    if out.dtype != DType::F32 && out.dtype != q.dtype {
        return Err(CudaError::Invalid(format!("output dtype {:?} must be f32 or the input dtype", out.dtype)));
    }
    let needs_index = patterns.iter().any(HeadPattern::reads_index);
    let meta = Meta::new(gpu, shape, patterns)?;
    let empty = gpu.alloc_zeros::<u32>(1)?;
    let (tile_ptr, tile_start, col_ptr, col_index) = match index {
        Some(ix) => {
            if ix.n_slots != meta.n_slots {
                return Err(CudaError::Invalid(format!(
                    "index has {} slots, shape needs {}",
                    ix.n_slots, meta.n_slots
                )));
            }
            (gpu.ptr(&ix.tile_ptr), gpu.ptr(&ix.tile_start), gpu.ptr(&ix.col_ptr), gpu.ptr(&ix.col_index))
        }
        None if needs_index => return Err(CudaError::Invalid("VS/BS heads need a sparse index".into())),
        None => {
            let e = gpu.ptr(&empty);
            (e, e, e, e)
        }
    };
    // The Hopper warp-specialised kernel takes bf16/f16, D = 64/128, q_len == kv_len (hopper.rs).
    if crate::hopper::applies(gpu, shape, q.dtype, out.dtype).is_ok() {
        // The kernels see only the kind of a head; an adaptive VS head reads the index like a VS head.
        let kinds: Vec<HeadPattern> = patterns.iter().map(kernel_kind).collect();
        return crate::hopper::attention(gpu, shape, q, k, v, &kinds, &meta, index, out);
    }
    let d = shape.head_dim;
    let params = AttnParams {
        q: q.ptr(gpu),
        k: k.ptr(gpu),
        v: v.ptr(gpu),
        out: out.ptr(gpu),
        seqs: meta.seqs(gpu),
        head_kind: meta.head_kind(gpu),
        head_init: meta.head_init(gpu),
        head_local: meta.head_local(gpu),
        slot_base: meta.slot_base(gpu),
        tile_ptr,
        tile_start,
        col_ptr,
        col_index,
        heads: shape.heads as i32,
        kv_heads: shape.kv_heads as i32,
        total_q: shape.total_q() as i32,
        total_kv: shape.total_kv() as i32,
        out_f32: (out.dtype == DType::F32) as i32,
        scale_log2: std::f32::consts::LOG2_E / (d as f32).sqrt(),
        kinds: 0b111,
        pad1: 0,
    };
    let (b, h) = (shape.seqs.len() as u32, shape.heads as u32);
    let rows = |bm: usize| shape.seqs.iter().map(|s| s.q_len.div_ceil(bm)).max().unwrap_or(0) as u32;
    if q.dtype == DType::F32 {
        if out.dtype != DType::F32 {
            return Err(CudaError::Invalid("f32 inputs need an f32 output".into()));
        }
        let smem = 3 * 64 * (d + 1) * 4;
        gpu.launch_attn(&format!("attn_f32_d{d}"), (rows(64), h, b), 64, smem, &params)?;
    } else {
        // Dense and A-shape heads in 128-row blocks; index heads need the index's 64-row blocks.
        // wgmma kernels (`_wg`) exist for D = 64 and 128; 1 KiB extra lets the kernel align its tiles.
        let name = format!("attn_{}_d{d}", dtype_suffix(q.dtype));
        let switches = gpu.switches();
        let wg = switches.use_wgmma(d);
        // The pipelined wgmma loop (a third K/V stage) is the default since it was measured
        // (+6 % dense on an H200, same results); MINFERENCE_WG_PIPE=0 selects the plain loop.
        let pipe = wg && switches.wg_pipe;
        let wg_suffix = match (wg, pipe) {
            (true, true) => "_wgp",
            (true, false) => "_wg",
            _ => "",
        };
        let align = if wg { 1024 } else { 0 };
        let kv_stages = if pipe { 3 } else { 2 };
        let has_analytic = patterns.iter().any(|p| matches!(p, HeadPattern::Dense | HeadPattern::AShape { .. }));
        if has_analytic {
            let kinds = (1 << HEAD_DENSE) | (1 << HEAD_ASHAPE);
            let p2 = AttnParams { kinds, ..params };
            match switches.dense_variant {
                DenseVariant::Rows64 => {
                    gpu.launch_attn(
                        &format!("{name}{wg_suffix}"),
                        (rows(64), h, b),
                        128,
                        (1 + 2 * kv_stages) * 64 * d * 2 + align,
                        &p2,
                    )?;
                }
                DenseVariant::Rows128Warps4 => {
                    gpu.launch_attn(&format!("{name}_m128"), (rows(128), h, b), 128, 6 * 64 * d * 2, &p2)?;
                }
                DenseVariant::Rows128Warps8 => {
                    let smem = (2 + 2 * kv_stages) * 64 * d * 2 + align;
                    gpu.launch_attn(&format!("{name}_m128w8{wg_suffix}"), (rows(128), h, b), 256, smem, &p2)?;
                }
            }
        }
        if needs_index {
            let p64 = AttnParams { kinds: 1 << HEAD_INDEX, ..params };
            gpu.launch_attn(
                &format!("{name}{wg_suffix}"),
                (rows(64), h, b),
                128,
                (1 + 2 * kv_stages) * 64 * d * 2 + align,
                &p64,
            )?;
        }
    }
    // Dropping `meta` frees stream-ordered, after the kernel.
    drop(meta);
    Ok(())
}

/// `p` as the attention kernels see it: an adaptive VS head is a VS head (its budgets only shaped
/// the index it reads).
fn kernel_kind(p: &HeadPattern) -> HeadPattern {
    match *p {
        HeadPattern::AdaptiveVs { max_v, max_s, .. } => HeadPattern::VerticalSlash { k_v: max_v, k_s: max_s },
        other => other,
    }
}
