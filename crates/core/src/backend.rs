//! The one backend interface. The CPU backend (oracle) and the CUDA backend implement it, and one
//! test suite (`minference-cpu`'s `backend_suite`) runs against both.

use crate::index::{SparseIndex, VsSelection};
use crate::pattern::HeadPattern;
use crate::shape::AttnShape;
use crate::tensor::HostTensor;

pub trait AttentionBackend {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Human-readable device name ("CPU (2 threads)", "NVIDIA H100 80GB HBM3").
    fn name(&self) -> String;

    /// Dense causal attention; returns `O` as f32 in the shared layout.
    fn dense(&self, shape: &AttnShape, q: HostTensor, k: HostTensor, v: HostTensor) -> Result<Vec<f32>, Self::Error>;

    /// VS online estimation (spec §1.3.2) for every (sequence, head) whose pattern is VS; other
    /// heads get an empty selection. Result order: `b * heads + h`.
    fn estimate_vs(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        patterns: &[HeadPattern],
    ) -> Result<Vec<VsSelection>, Self::Error>;

    /// Index building for all heads: VS selections converted (spec §1.3.5/§1.3.6), BS blocks
    /// estimated (spec §1.4), dense / A-shape slots left empty (they are analytic).
    fn build_index(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        patterns: &[HeadPattern],
        vs: &[VsSelection],
    ) -> Result<SparseIndex, Self::Error>;

    /// Attention for all heads with each head's pattern; VS/BS heads read `index`.
    fn sparse(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        v: HostTensor,
        patterns: &[HeadPattern],
        index: &SparseIndex,
    ) -> Result<Vec<f32>, Self::Error>;
}
