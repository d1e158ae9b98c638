//! `CpuBackend`: the `AttentionBackend` implementation on the CPU.

use crate::attention::{run, DensePlan};
use crate::error::{CpuError, CpuResult};
use crate::kernels::Isa;
use crate::sparse::{check_index, SparsePlan};
use crate::staging::{check_qk, check_qkv};
use std::sync::Arc;

use minference_core::{
    AttentionBackend, AttnShape, BackendTransfer, HeadPattern, HostTensor, OwnedTensor, SparseIndex, VsSelection,
};

/// Multi-threaded CPU attention (rayon's global pool unless [`CpuBackend::with_threads`]). Inputs
/// with NaN/Inf are rejected with [`CpuError::NonFinite`] rather than propagated.
#[derive(Debug, Clone, Default)]
pub struct CpuBackend {
    portable_only: bool,
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl CpuBackend {
    /// Uses the AVX-512 micro-kernels when the CPU has them (and `head_dim % 16 == 0`).
    pub fn new() -> Self {
        CpuBackend { portable_only: false, pool: None }
    }

    /// Always uses the portable micro-kernels (`matrixmultiply` sgemm): for testing that path and
    /// for comparing the two.
    pub fn portable() -> Self {
        CpuBackend { portable_only: true, pool: None }
    }

    /// Runs on a dedicated pool of `threads` workers instead of rayon's global pool.
    pub fn with_threads(self, threads: usize) -> CpuResult<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| CpuError::ThreadPool(e.to_string()))?;
        Ok(CpuBackend { pool: Some(Arc::new(pool)), ..self })
    }

    fn threads(&self) -> usize {
        self.pool.as_ref().map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }

    /// Runs `f` on this backend's pool.
    fn install<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
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
    type Input<'t> = HostTensor<'t>;
    type Output = Vec<f32>;
    type Selection = Vec<VsSelection>;
    type Index = SparseIndex;

    fn name(&self) -> String {
        let kernels = match Isa::detect(64, self.portable_only) {
            Isa::Avx512 => "AVX-512 kernels",
            Isa::Portable => "portable kernels",
        };
        format!("CPU ({} threads, {kernels})", self.threads())
    }

    fn output(&self, _shape: &AttnShape) -> CpuResult<Vec<f32>> {
        Ok(Vec::new())
    }

    fn estimate(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        patterns: &[HeadPattern],
    ) -> CpuResult<Vec<VsSelection>> {
        check_qk(shape, &q, &k)?;
        check_patterns(shape, patterns)?;
        self.install(|| crate::estimate::estimate_vs_all(shape, q, k, patterns))
    }

    fn index(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        patterns: &[HeadPattern],
        vs: &Vec<VsSelection>,
    ) -> CpuResult<SparseIndex> {
        check_qk(shape, &q, &k)?;
        check_patterns(shape, patterns)?;
        self.install(|| crate::estimate::build_index_all(shape, q, k, patterns, vs))
    }

    /// Dense heads only (no index) run the dense plan; otherwise every head runs its pattern.
    fn attend(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        v: HostTensor,
        patterns: &[HeadPattern],
        index: Option<&SparseIndex>,
        out: &mut Vec<f32>,
    ) -> CpuResult<()> {
        check_qkv(shape, &q, &k, &v)?;
        check_patterns(shape, patterns)?;
        let isa = self.isa(shape.head_dim);
        *out = match index {
            None if patterns.iter().all(|p| *p == HeadPattern::Dense) => {
                self.install(|| run(shape, q, k, v, &DensePlan, isa))
            }
            None if patterns.iter().any(HeadPattern::reads_index) => return Err(CpuError::MissingIndex),
            None => {
                let empty = SparseIndex::empty(shape);
                self.install(|| run(shape, q, k, v, &SparsePlan { shape, patterns, index: &empty }, isa))
            }
            Some(index) => {
                check_index(shape, index)?;
                self.install(|| run(shape, q, k, v, &SparsePlan { shape, patterns, index }, isa))
            }
        };
        Ok(())
    }
}

impl BackendTransfer for CpuBackend {
    type Owned = OwnedTensor;

    fn upload(&self, t: HostTensor<'_>) -> CpuResult<OwnedTensor> {
        Ok(OwnedTensor::copy_of(t))
    }
    fn input<'t>(&self, t: &'t OwnedTensor) -> HostTensor<'t> {
        t.view()
    }
    fn output_to_host(&self, out: &Vec<f32>) -> CpuResult<Vec<f32>> {
        Ok(out.clone())
    }
    fn selection_to_host(&self, _: &AttnShape, s: &Vec<VsSelection>) -> CpuResult<Vec<VsSelection>> {
        Ok(s.clone())
    }
    fn selection_from_host(&self, _: &AttnShape, _: &[HeadPattern], s: &[VsSelection]) -> CpuResult<Vec<VsSelection>> {
        Ok(s.to_vec())
    }
    fn index_to_host(&self, _: &AttnShape, index: &SparseIndex) -> CpuResult<SparseIndex> {
        Ok(index.clone())
    }
    fn index_from_host(&self, _: &AttnShape, index: &SparseIndex) -> CpuResult<SparseIndex> {
        Ok(index.clone())
    }
}
