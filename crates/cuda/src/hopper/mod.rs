//! Launcher of the Hopper-native warp-specialised attention (`kernels/hopper_attention.cu`, mainloop
//! in `kernels/hopper/fa3_sm90.cuh`): CUtensorMaps built with `cuTensorMapEncodeTiled`, passed by
//! value, 384 threads per CTA, one persistent CTA per SM, one launch per sequence.
//!
//! Applies to bf16 or f16 inputs, output in the input dtype or f32, D = 64 or 128, and sequences with `q_len == kv_len`
//! (no q/kv offset); [`attention`](crate::attention()) routes everything else to the mma/wgmma kernels.
//! All-dense layers use the dense producer; any A-shape or index (VS/BS) head selects the mixed
//! producer, which serves every head of the launch in its own pattern. Index heads go through the
//! planner kernel first (`hopper_plan_index`: per 128-row tile, the union of its two 64-row blocks'
//! tiles and columns with each block's own key set as a column mask, so the computed (row, key)
//! pairs are exactly the core's).

use crate::context::Gpu;
use crate::error::{CudaError, Result};
use crate::index::DeviceIndex;
use crate::layout::Meta;
use crate::tensor::DeviceTensor;
use cudarc::driver::sys;
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use minference_core::{AttnShape, DType, HeadPattern};

mod plan;
use plan::{launch_plan, launch_planner, PlanBuffers};
pub use plan::{one_launch_plan_bytes, plan_summary, planned_keys, PlanSummary};

/// Entry points of the `hopper_attention` unit.
pub const ENTRIES: &[&str] = &[
    "hopper_attn_bf16_d64_dense",
    "hopper_attn_bf16_d128_dense",
    "hopper_attn_bf16_d64_mixed",
    "hopper_attn_bf16_d128_mixed",
    "hopper_attn_f16_d64_dense",
    "hopper_attn_f16_d128_dense",
    "hopper_attn_f16_d64_mixed",
    "hopper_attn_f16_d128_mixed",
    "hopper_plan_index",
];

/// Query rows per CTA tile (two consumer warpgroups of 64 rows).
const BM: usize = 128;
const THREADS: u32 = 384;

/// A CUtensorMap as the kernel declares it (`TmaMap`: 128 bytes, 64-byte aligned).
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
struct TmaMap([u64; 16]);

// SAFETY: plain-old-data, the layout of `mi_hopper::TmaMap`.
unsafe impl DeviceRepr for TmaMap {}

/// Mirrors `mi_hopper::Params` (kernels/hopper/fa3_sm90.cuh) field for field.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Params {
    k: u64,
    v: u64,
    lse: u64,
    out32: u64,
    kv_hstride: i64,
    o_hstride: i64,
    cols: u64,
    head_kind: u64,
    head_init: u64,
    head_local: u64,
    tile_chunks: u64,
    chunks: u64,
    tile_counter: u64,
    heads: i32,
    kv_heads: i32,
    n: i32,
    nkv: i32,
    off: i32,
    n_mtiles: i32,
    causal: i32,
    scale_log2: f32,
}

// SAFETY: plain-old-data with the C layout the kernel expects.
unsafe impl DeviceRepr for Params {}

/// Bytes of one planned chunk (`mi_hopper::ChunkMeta`).
const CHUNK_BYTES: usize = 64;

/// Dynamic shared memory of `fa3_fwd_body<D, MI_HOPPER_STAGES, _>` (`Layout<D, S>::alloc` in
/// kernels/hopper/fa3_sm90.cuh: Q, S stages of K and of V, O staging, the barriers, S chunk
/// descriptors and S column lists, 1 KiB to align the base).
pub fn smem_bytes(d: usize) -> usize {
    let stages = crate::kernels::HOPPER_STAGES;
    let tile = BM * d * 2; // Q, one K or V stage, O staging
    let bars = 8 * (2 + 4 * stages);
    tile * (2 + 2 * stages) + bars + 16 + CHUNK_BYTES * stages + 4 * 128 * stages + 1024
}

/// Whether the Hopper kernel takes this problem (the GPU has it loaded and enabled, and the shape is
/// one it supports); `Err` says why not, for logs and benchmarks.
pub fn applies(gpu: &Gpu, shape: &AttnShape, dtype: DType, out: DType) -> std::result::Result<(), String> {
    gpu.hopper_status()?;
    if dtype != DType::Bf16 && dtype != DType::F16 {
        return Err(format!("{dtype:?} inputs (bf16 or f16 supported)"));
    }
    if out != dtype && out != DType::F32 {
        return Err(format!("{out:?} output for {dtype:?} inputs (the input dtype or f32 supported)"));
    }
    if shape.head_dim != 64 && shape.head_dim != 128 {
        return Err(format!("head_dim {} (64 or 128 supported)", shape.head_dim));
    }
    Ok(())
}

/// The tensor-map element type of a 16-bit dtype (the maps only move bytes; the type keeps the
/// driver's view of the data true).
fn tma_type(dtype: DType) -> sys::CUtensorMapDataType {
    match dtype {
        DType::F16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        _ => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
    }
}

fn encode(
    ptr: u64,
    dtype: DType,
    heads: usize,
    rows: usize,
    d: usize,
    head_stride: usize,
    box_rows: u32,
) -> Result<TmaMap> {
    let dims: [u64; 3] = [d as u64, rows as u64, heads as u64];
    let strides: [u64; 2] = [(d * 2) as u64, (head_stride * 2) as u64];
    let boxes: [u32; 3] = [64, box_rows, 1];
    let es: [u32; 3] = [1, 1, 1];
    let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::zeroed();
    // SAFETY: every pointer argument points at a live array of the rank's length; the map is
    // written by the driver.
    let r = unsafe {
        sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            tma_type(dtype),
            3,
            ptr as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            es.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    if r != sys::CUresult::CUDA_SUCCESS {
        return Err(CudaError::Driver {
            context: format!("cuTensorMapEncodeTiled ({heads} x {rows} x {d}, box {box_rows})"),
            message: format!("{r:?}"),
        });
    }
    // SAFETY: initialised by the successful call above.
    let map = unsafe { map.assume_init() };
    Ok(TmaMap(map.opaque))
}

/// Runs every head of every sequence through the Hopper kernel. The caller checked the problem
/// ([`applies`], `check_problem`, the index's slot count).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    gpu: &Gpu,
    shape: &AttnShape,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    patterns: &[HeadPattern],
    meta: &Meta,
    index: Option<&DeviceIndex>,
    out: &mut DeviceTensor,
) -> Result<()> {
    let d = shape.head_dim;
    let (total_q, total_kv) = (shape.total_q(), shape.total_kv());
    let all_dense = patterns.iter().all(|p| matches!(p, HeadPattern::Dense));
    let needs_index =
        patterns.iter().any(|p| matches!(p, HeadPattern::VerticalSlash { .. } | HeadPattern::BlockSparse { .. }));
    let kind = if all_dense { "dense" } else { "mixed" };
    let dt = if q.dtype == DType::F16 { "f16" } else { "bf16" };
    let name = format!("hopper_attn_{dt}_d{d}_{kind}");
    let f = gpu.func(&name)?;
    let smem = smem_bytes(d);
    if smem > gpu.smem_limit() {
        return Err(CudaError::Invalid(format!(
            "{name} needs {smem} bytes of shared memory, the device allows {}",
            gpu.smem_limit()
        )));
    }
    let out_f32 = out.dtype == DType::F32;
    let (qp, kp, vp, op) = (q.ptr(gpu), k.ptr(gpu), v.ptr(gpu), out.ptr(gpu));

    // Planner buffers (index heads only), reused by every launch (stream order). A layer whose
    // planned chunks would not fit is split into launches over groups of heads (plan.rs).
    let ix = match (needs_index, index) {
        (true, Some(ix)) => Some(ix),
        (true, None) => return Err(CudaError::Invalid("VS/BS heads need a sparse index".into())),
        _ => None,
    };
    let launches = launch_plan(gpu, shape, ix)?;
    let plan = ix.map(|ix| PlanBuffers::new(gpu, shape, ix, launches.chunk_capacity).map(|b| (ix, b))).transpose()?;
    let slot_base = crate::layout::slot_base(shape);
    // One zeroed tile counter per launch: the persistent CTAs take their tiles from it.
    let n_launches: usize = launches.groups.iter().map(Vec::len).sum();
    let counters = gpu.alloc_zeros::<u32>(n_launches.max(1))?;
    let counters_ptr = gpu.ptr(&counters);
    let mut launch = 0usize;

    for (b, seq) in shape.seqs.iter().enumerate() {
        let (n, nkv) = (seq.q_len, seq.kv_len);
        if n == 0 {
            continue;
        }
        let (q0, kv0) = (shape.q_start(b), shape.kv_start(b));
        let m_tiles = n.div_ceil(BM);
        for g in &launches.groups[b] {
            // The group's heads as a problem of their own: every address starts at its first head.
            let q_head = (q0 + g.h0 * total_q) * d * 2;
            let kv_head = (kv0 + g.kv0 * total_kv) * d * 2;
            let qb = qp + q_head as u64;
            let kb = kp + kv_head as u64;
            let vb = vp + kv_head as u64;
            let et = q.dtype;
            let tq = encode(qb, et, g.heads, n, d, total_q * d, BM as u32)?;
            let tk = encode(kb, et, g.kv_heads, nkv, d, total_kv * d, BM as u32)?;
            let tv = encode(vb, et, g.kv_heads, nkv, d, total_kv * d, BM as u32)?;
            let (tk64, tv64) = if all_dense {
                (tk, tv)
            } else {
                (
                    encode(kb, et, g.kv_heads, nkv, d, total_kv * d, 64)?,
                    encode(vb, et, g.kv_heads, nkv, d, total_kv * d, 64)?,
                )
            };
            let to = if out_f32 { tq } else { encode(op + q_head as u64, et, g.heads, n, d, total_q * d, 64)? };
            let mut p = Params {
                k: kb,
                v: vb,
                out32: if out_f32 { op + (2 * q_head) as u64 } else { 0 },
                kv_hstride: (total_kv * d) as i64,
                o_hstride: (total_q * d) as i64,
                heads: g.heads as i32,
                kv_heads: g.kv_heads as i32,
                n: n as i32,
                nkv: nkv as i32,
                off: seq.offset() as i32,
                n_mtiles: m_tiles as i32,
                causal: 1,
                scale_log2: std::f32::consts::LOG2_E / (d as f32).sqrt(),
                tile_counter: counters_ptr + (std::mem::size_of::<u32>() * launch) as u64,
                ..Default::default()
            };
            launch += 1;
            let head_meta = |array: u64| array + (4 * g.h0) as u64;
            if !all_dense {
                p.head_kind = head_meta(meta.head_kind(gpu));
                p.head_init = head_meta(meta.head_init(gpu));
                p.head_local = head_meta(meta.head_local(gpu));
            }
            if let Some((ix, bufs)) = &plan {
                let first_slot = slot_base[b] + (g.h0 * seq.row_blocks()) as u32;
                launch_planner(gpu, ix, head_meta(meta.head_kind(gpu)), bufs, first_slot, *seq, g.heads)?;
                p.tile_chunks = gpu.ptr(&bufs.tile_chunks);
                p.chunks = gpu.ptr(&bufs.chunks);
                p.cols = gpu.ptr(&bufs.mcols);
            }
            let grid = gpu.sm_count().min(g.heads * m_tiles).max(1) as u32;
            let mut lb = gpu.stream().launch_builder(f);
            lb.arg(&tq).arg(&tk).arg(&tv).arg(&to).arg(&tk64).arg(&tv64).arg(&p);
            let cfg =
                LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: smem as u32 };
            // SAFETY: the six maps and `Params` match the kernel's parameters; the maps describe
            // live device buffers of this call, which outlive the kernel (stream order).
            unsafe { lb.launch(cfg) }
                .map_err(|e| CudaError::Driver { context: name.clone(), message: format!("{e:?}") })?;
        }
    }
    // Dropping the planner buffers and counters frees stream-ordered, after the kernels.
    drop(plan);
    drop(counters);
    Ok(())
}
