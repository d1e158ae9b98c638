//! `CpuBackend`: the `AttentionBackend` implementation on the CPU.

use crate::attention::{run, DensePlan};
use crate::error::{CpuError, CpuResult};
use crate::kernels::Isa;
use crate::sparse::{check_index, SparsePlan};
use crate::staging::{check_qk, check_qkv};
use minference_core::{AttentionBackend, AttnShape, HeadPattern, HostTensor, SparseIndex, VsSelection};

/// Multi-threaded CPU attention (rayon's global pool). Inputs with NaN/Inf are rejected with
/// [`CpuError::NonFinite`] rather than propagated.
#[derive(Debug, Clone, Default)]
pub struct CpuBackend {
    portable_only: bool,
}

impl CpuBackend {
    /// Uses the AVX-512 micro-kernels when the CPU has them (and `head_dim % 16 == 0`).
    pub fn new() -> Self {
        CpuBackend { portable_only: false }
    }

    /// Always uses the portable micro-kernels (`matrixmultiply` sgemm): for testing that path and
    /// for comparing the two.
    pub fn portable() -> Self {
        CpuBackend { portable_only: true }
    }

    fn isa(&self, head_dim: usize) -> Isa {
        Isa::detect(head_dim, self.portable_only)
    }
}

fn check_patterns(shape: &AttnShape, patterns: &[HeadPattern]) -> CpuResult<()> {
    if patterns.len() != shape.heads {
        return Err(CpuError::PatternCount { patterns: patterns.len(), heads: shape.heads });
    }
    Ok(())
}

impl AttentionBackend for CpuBackend {
    type Error = CpuError;

    fn name(&self) -> String {
        let kernels = match Isa::detect(64, self.portable_only) {
            Isa::Avx512 => "AVX-512 kernels",
            Isa::Portable => "portable kernels",
        };
        format!("CPU ({} threads, {kernels})", rayon::current_num_threads())
    }

    fn dense(&self, shape: &AttnShape, q: HostTensor, k: HostTensor, v: HostTensor) -> CpuResult<Vec<f32>> {
        check_qkv(shape, &q, &k, &v)?;
        Ok(run(shape, q, k, v, &DensePlan, self.isa(shape.head_dim)))
    }

    fn estimate_vs(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        patterns: &[HeadPattern],
    ) -> CpuResult<Vec<VsSelection>> {
        check_qk(shape, &q, &k)?;
        check_patterns(shape, patterns)?;
        crate::estimate::estimate_vs_all(shape, q, k, patterns)
    }

    fn build_index(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        patterns: &[HeadPattern],
        vs: &[VsSelection],
    ) -> CpuResult<SparseIndex> {
        check_qk(shape, &q, &k)?;
        check_patterns(shape, patterns)?;
        crate::estimate::build_index_all(shape, q, k, patterns, vs)
    }

    fn sparse(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        v: HostTensor,
        patterns: &[HeadPattern],
        index: &SparseIndex,
    ) -> CpuResult<Vec<f32>> {
        check_qkv(shape, &q, &k, &v)?;
        check_patterns(shape, patterns)?;
        check_index(shape, index)?;
        Ok(run(shape, q, k, v, &SparsePlan { shape, patterns, index }, self.isa(shape.head_dim)))
    }
}
