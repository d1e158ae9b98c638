//! Linear layers through cuBLASLt: bf16 (or f16, the engine's precision) inputs and outputs, fp32 accumulation, `y = x · Wᵀ (+ y)`
//! with row-major `x [rows, in]`, `W [out, in]`, `y [rows, out]` (any leading dimensions). Plans
//! (layouts + the heuristic's algorithm) are cached per problem shape.

use crate::error::{EngineError, Result};
use crate::precision::Precision;
use crate::view::DeviceView;
use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys;
use cudarc::driver::CudaSlice;
use minference_cuda::Gpu;
use std::collections::HashMap;
use std::ffi::c_void;

/// cuBLASLt workspace recommended for Hopper.
const WORKSPACE_BYTES: usize = 32 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    rows: usize,
    in_dim: usize,
    out_dim: usize,
    ld_x: usize,
    ld_w: usize,
    ld_y: usize,
    accumulate: bool,
    /// Byte alignment of W, x, y (capped at 256): the heuristic's algorithm may assume it.
    align: (u32, u32, u32),
}

/// Largest power of two (≤ 256) dividing `addr`.
fn alignment(addr: u64) -> u32 {
    if addr == 0 {
        256
    } else {
        (1u64 << addr.trailing_zeros().min(8)) as u32
    }
}

struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    c: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: each descriptor was created once by `Gemm::plan` and is destroyed once here.
        unsafe {
            let _ = lt::destroy_matrix_layout(self.a);
            let _ = lt::destroy_matrix_layout(self.b);
            let _ = lt::destroy_matrix_layout(self.c);
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

pub struct Gemm {
    precision: Precision,
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    plans: HashMap<Key, Plan>,
}

// SAFETY: the handle and descriptors are only used through `&mut self` / on the engine's one stream.
unsafe impl Send for Gemm {}

fn blas(context: &str) -> impl FnOnce(lt::CublasError) -> EngineError + '_ {
    move |e| EngineError::Blas { context: context.to_string(), message: format!("{e:?}") }
}

impl Gemm {
    pub fn new(gpu: &Gpu, precision: Precision) -> Result<Gemm> {
        gpu.stream().context().bind_to_thread().map_err(crate::error::driver("binding the context"))?;
        let handle = lt::create_handle().map_err(blas("cublasLtCreate"))?;
        let workspace = gpu.alloc::<u8>(WORKSPACE_BYTES)?;
        Ok(Gemm { precision, handle, workspace, plans: HashMap::new() })
    }

    fn plan(&mut self, key: Key) -> Result<()> {
        if !self.plans.contains_key(&key) {
            let plan = self.make_plan(key)?;
            self.plans.insert(key, plan);
        }
        Ok(())
    }

    fn make_plan(&self, k: Key) -> Result<Plan> {
        let bf = match self.precision {
            Precision::Bf16 => sys::cudaDataType_t::CUDA_R_16BF,
            Precision::F16 => sys::cudaDataType_t::CUDA_R_16F,
        };
        // Column-major view: yᵀ [out, rows] = W [in, out]ᵀ-stored · xᵀ [in, rows].
        let a =
            lt::create_matrix_layout(bf, k.in_dim as u64, k.out_dim as u64, k.ld_w as i64).map_err(blas("layout W"))?;
        let b =
            lt::create_matrix_layout(bf, k.in_dim as u64, k.rows as u64, k.ld_x as i64).map_err(blas("layout x"))?;
        let c =
            lt::create_matrix_layout(bf, k.out_dim as u64, k.rows as u64, k.ld_y as i64).map_err(blas("layout y"))?;
        let desc =
            lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, sys::cudaDataType_t::CUDA_R_32F)
                .map_err(blas("matmul desc"))?;
        let mut plan = Plan { desc, a, b, c, algo: unsafe { std::mem::zeroed() } };
        let trans: i32 = 1; // CUBLAS_OP_T
                            // SAFETY: descriptors are live; attribute buffers have the documented sizes.
        unsafe {
            lt::set_matmul_desc_attribute(
                desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                &trans as *const i32 as *const c_void,
                std::mem::size_of::<i32>(),
            )
            .map_err(blas("transa"))?;
            let pref = lt::create_matmul_pref().map_err(blas("preference"))?;
            let ws = WORKSPACE_BYTES;
            let set = lt::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const usize as *const c_void,
                std::mem::size_of::<usize>(),
            );
            // cuBLASLt assumes 256-byte aligned pointers unless told otherwise; group column
            // offsets (e.g. W_o of one KV group) can be less aligned.
            let mut set = set;
            for (attr, bytes) in [
                (sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, k.align.0),
                (sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, k.align.1),
                (sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, k.align.2),
                (sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, k.align.2),
            ] {
                set = set.and_then(|_| {
                    lt::set_matmul_pref_attribute(
                        pref,
                        attr,
                        &bytes as *const u32 as *const c_void,
                        std::mem::size_of::<u32>(),
                    )
                });
            }
            let heur = set.and_then(|_| lt::get_matmul_algo_heuristic(self.handle, desc, a, b, c, c, pref));
            let _ = lt::destroy_matmul_pref(pref);
            let heur = heur.map_err(|e| EngineError::Blas {
                context: format!("no cuBLASLt algorithm for rows={} in={} out={}", k.rows, k.in_dim, k.out_dim),
                message: format!("{e:?}"),
            })?;
            plan.algo = heur.algo;
        }
        Ok(plan)
    }

    /// `y = x · Wᵀ`, or `y += x · Wᵀ` with `accumulate` (in place, fp32 accumulation then 16-bit):
    /// the rows of `x` (its width is the input dimension, of which `w` uses its first columns)
    /// into the rows of `y` (its width is the output dimension, `w`'s row count).
    pub fn linear(&mut self, gpu: &Gpu, x: DeviceView, w: DeviceView, y: DeviceView, accumulate: bool) -> Result<()> {
        let (rows, in_dim, out_dim) = (x.rows_len(), x.width(), y.width());
        let dtype = self.precision.dtype();
        if [x.dtype(), w.dtype(), y.dtype()].iter().any(|t| *t != dtype) {
            return Err(EngineError::Shape {
                kernel: "cublasLtMatmul",
                message: format!("{x:?} · {w:?} → {y:?} in {dtype:?}"),
            });
        }
        if w.width() < in_dim || w.rows_len() != out_dim || y.rows_len() != rows {
            return Err(EngineError::Shape {
                kernel: "cublasLtMatmul",
                message: format!(
                    "x {rows} x {in_dim}, W {} x {}, y {} x {out_dim}",
                    w.rows_len(),
                    w.width(),
                    y.rows_len()
                ),
            });
        }
        let ((x, ld_x), (w, ld_w), (y, ld_y)) = (x.ld(), w.ld(), y.ld());
        if rows == 0 {
            return Ok(());
        }
        if ld_x < in_dim || ld_w < in_dim || ld_y < out_dim {
            return Err(EngineError::Input(format!(
                "GEMM leading dimensions {ld_x}/{ld_w}/{ld_y} below in {in_dim} / out {out_dim}"
            )));
        }
        let key = Key {
            rows,
            in_dim,
            out_dim,
            ld_x,
            ld_w,
            ld_y,
            accumulate,
            align: (alignment(w), alignment(x), alignment(y)),
        };
        let handle = self.handle;
        self.plan(key)?;
        let plan = self.plans.get(&key).ok_or_else(|| EngineError::Input("GEMM plan cache".into()))?;
        let (ws_ptr, _sync) = cudarc::driver::DevicePtr::device_ptr(&self.workspace, gpu.stream());
        let stream = gpu.stream().cu_stream();
        let alpha: f32 = 1.0;
        let beta: f32 = if accumulate { 1.0 } else { 0.0 };
        // SAFETY: pointers address live device buffers of at least the sizes the layouts describe
        // (callers size them from the model config); everything is ordered on `stream`.
        unsafe {
            lt::matmul(
                handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                w as *const c_void,
                plan.a,
                x as *const c_void,
                plan.b,
                y as *const c_void,
                plan.c,
                y as *mut c_void,
                plan.c,
                &plan.algo,
                ws_ptr as *mut c_void,
                WORKSPACE_BYTES,
                stream as *mut _,
            )
        }
        .map_err(blas("cublasLtMatmul"))
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        self.plans.clear();
        // SAFETY: created in `new`, destroyed once.
        unsafe {
            let _ = lt::destroy_handle(self.handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::alignment;

    #[test]
    fn alignment_is_the_lowest_set_bit_capped_at_256() {
        assert_eq!(alignment(0x7f00_0000_0000), 256);
        assert_eq!(alignment(0x7f00_0000_0180), 128);
        assert_eq!(alignment(0x7f00_0000_0002), 2);
        assert_eq!(alignment(0), 256);
    }
}
