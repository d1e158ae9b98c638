//! Kernel density of real prefills: an `AttentionBackend` wrapper that adds up, from the indices
//! the wrapped backend actually receives, how many causal (query, key) pairs each call computes
//! (`minference_core::coverage`). Dense calls count every causal pair.

use minference_core::coverage::{head_coverage, index_head_coverage, Coverage};
use minference_core::{AttentionBackend, AttnShape, HeadPattern, HostTensor, SparseIndex, VsSelection};
use minference_cpu::CpuBackend;
use minference_engine::CpuEngine;
use minference_model::Model;
use std::sync::{Arc, Mutex};

/// The CPU engine with a recording backend: prefills as usual and measures the kernel density of
/// each call (`engine.backend().take()`).
pub fn coverage_cpu_engine(model: impl Into<Arc<Model>>) -> CpuEngine<CoverageRecorder<CpuBackend>> {
    CpuEngine::new(model, CoverageRecorder::new(CpuBackend::new()))
}

pub struct CoverageRecorder<B> {
    inner: B,
    total: Mutex<Coverage>,
}

impl<B: AttentionBackend> CoverageRecorder<B> {
    pub fn new(inner: B) -> Self {
        CoverageRecorder { inner, total: Mutex::new(Coverage::default()) }
    }

    /// The coverage summed since the last `take`, then cleared.
    pub fn take(&self) -> Coverage {
        std::mem::take(&mut *self.total.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn add(&self, cov: Coverage) {
        self.total.lock().unwrap_or_else(|e| e.into_inner()).add(&cov);
    }

    /// Adds every head of every sequence. The wrapped backend has already validated the shape, so
    /// an accounting error here can only mean an index it accepted but core cannot read: those
    /// heads are left out rather than failing a finished attention call.
    fn record(&self, shape: &AttnShape, patterns: &[HeadPattern], index: Option<&SparseIndex>) {
        for (b, seq) in shape.seqs.iter().enumerate() {
            for h in 0..shape.heads {
                let pattern = patterns.get(h).copied().unwrap_or(HeadPattern::Dense);
                let cov = match index {
                    Some(idx) if pattern.reads_index() => index_head_coverage(&pattern, idx, shape, b, h),
                    _ => head_coverage(&pattern, &[], *seq),
                };
                if let Ok(c) = cov {
                    self.add(c);
                }
            }
        }
    }
}

impl<B: AttentionBackend> AttentionBackend for CoverageRecorder<B> {
    type Error = B::Error;

    fn name(&self) -> String {
        self.inner.name()
    }

    fn dense(&self, shape: &AttnShape, q: HostTensor, k: HostTensor, v: HostTensor) -> Result<Vec<f32>, Self::Error> {
        let out = self.inner.dense(shape, q, k, v)?;
        self.record(shape, &[], None);
        Ok(out)
    }

    fn estimate_vs(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        patterns: &[HeadPattern],
    ) -> Result<Vec<VsSelection>, Self::Error> {
        self.inner.estimate_vs(shape, q, k, patterns)
    }

    fn build_index(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        patterns: &[HeadPattern],
        vs: &[VsSelection],
    ) -> Result<SparseIndex, Self::Error> {
        self.inner.build_index(shape, q, k, patterns, vs)
    }

    fn sparse(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        v: HostTensor,
        patterns: &[HeadPattern],
        index: &SparseIndex,
    ) -> Result<Vec<f32>, Self::Error> {
        let out = self.inner.sparse(shape, q, k, v, patterns, index)?;
        self.record(shape, patterns, Some(index));
        Ok(out)
    }
}
