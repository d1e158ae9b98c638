//! The one backend interface, over tensors where the backend computes: host views on the CPU,
//! device buffers on a GPU. The CPU backend (oracle), the CUDA backend and the engines' wrappers
//! implement [`AttentionBackend`]; the CPU engine runs on any [`HostBackend`], the GPU engine on
//! the CUDA backend. [`HostRoundTrip`] (upload, run, download) is the test adapter that lets one
//! suite (`minference-backend-suite`) check every backend on host inputs.

use crate::index::{SparseIndex, VsSelection};
use crate::pattern::HeadPattern;
use crate::shape::AttnShape;
use crate::tensor::HostTensor;

pub trait AttentionBackend {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Q, K or V as the backend reads it (`HostTensor` on the CPU, `&DeviceTensor` on a GPU).
    type Input<'t>: Copy;
    /// An attention output in the shared `[heads][rows][head_dim]` layout, where it is computed.
    type Output;
    /// VS selections (spec §1.3.2) where the backend keeps them.
    type Selection;
    /// A layer's sparse index where the backend keeps it.
    type Index;

    /// Human-readable device name ("CPU (2 threads)", "NVIDIA H100 80GB HBM3").
    fn name(&self) -> String;

    /// An f32 output for `shape`, to pass to [`AttentionBackend::attend`].
    fn output(&self, shape: &AttnShape) -> Result<Self::Output, Self::Error>;

    /// VS online estimation for every (sequence, head) whose pattern is VS; other heads get an
    /// empty selection.
    fn estimate(
        &self,
        shape: &AttnShape,
        q: Self::Input<'_>,
        k: Self::Input<'_>,
        patterns: &[HeadPattern],
    ) -> Result<Self::Selection, Self::Error>;

    /// Index building for all heads: VS selections converted (spec §1.3.5/§1.3.6), BS blocks
    /// estimated (spec §1.4), dense / A-shape slots left empty (they are analytic).
    fn index(
        &self,
        shape: &AttnShape,
        q: Self::Input<'_>,
        k: Self::Input<'_>,
        patterns: &[HeadPattern],
        vs: &Self::Selection,
    ) -> Result<Self::Index, Self::Error>;

    /// Attention of every head in its pattern into `out`; VS/BS heads read `index` (which may be
    /// `None` only when no head does).
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        shape: &AttnShape,
        q: Self::Input<'_>,
        k: Self::Input<'_>,
        v: Self::Input<'_>,
        patterns: &[HeadPattern],
        index: Option<&Self::Index>,
        out: &mut Self::Output,
    ) -> Result<(), Self::Error>;
}

/// A backend that computes on host memory (the CPU backend and wrappers of it): what the CPU
/// engine, its observers and the CPU search run on.
pub trait HostBackend:
    for<'t> AttentionBackend<
    Input<'t> = HostTensor<'t>,
    Output = Vec<f32>,
    Selection = Vec<VsSelection>,
    Index = SparseIndex,
>
{
}

impl<B> HostBackend for B where
    B: for<'t> AttentionBackend<
        Input<'t> = HostTensor<'t>,
        Output = Vec<f32>,
        Selection = Vec<VsSelection>,
        Index = SparseIndex,
    >
{
}

/// Moving a backend's tensors, selections and indices to and from the host (tests, benchmarks'
/// exports, the round-trip adapter).
pub trait BackendTransfer: AttentionBackend {
    /// An input the backend owns (what [`BackendTransfer::upload`] makes).
    type Owned;

    fn upload(&self, t: HostTensor<'_>) -> Result<Self::Owned, Self::Error>;
    fn input<'t>(&self, t: &'t Self::Owned) -> Self::Input<'t>;
    fn output_to_host(&self, out: &Self::Output) -> Result<Vec<f32>, Self::Error>;
    /// In the order `b * heads + h`.
    fn selection_to_host(&self, shape: &AttnShape, s: &Self::Selection) -> Result<Vec<VsSelection>, Self::Error>;
    fn selection_from_host(
        &self,
        shape: &AttnShape,
        patterns: &[HeadPattern],
        s: &[VsSelection],
    ) -> Result<Self::Selection, Self::Error>;
    fn index_to_host(&self, shape: &AttnShape, index: &Self::Index) -> Result<SparseIndex, Self::Error>;
    fn index_from_host(&self, shape: &AttnShape, index: &SparseIndex) -> Result<Self::Index, Self::Error>;
}

/// The host round trip of any backend: host inputs uploaded, one operation run, the result
/// brought back. The test adapter: one suite checks every backend through it.
pub trait HostRoundTrip: BackendTransfer {
    /// Dense causal attention; `O` as f32 in the shared layout.
    fn dense(&self, shape: &AttnShape, q: HostTensor, k: HostTensor, v: HostTensor) -> Result<Vec<f32>, Self::Error> {
        self.run(shape, q, k, v, &vec![HeadPattern::Dense; shape.heads], None)
    }

    /// [`AttentionBackend::estimate`] on host inputs; result order `b * heads + h`.
    fn estimate_vs(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        patterns: &[HeadPattern],
    ) -> Result<Vec<VsSelection>, Self::Error> {
        let (q, k) = (self.upload(q)?, self.upload(k)?);
        let s = self.estimate(shape, self.input(&q), self.input(&k), patterns)?;
        self.selection_to_host(shape, &s)
    }

    /// [`AttentionBackend::index`] on host inputs and selections.
    fn build_index(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        patterns: &[HeadPattern],
        vs: &[VsSelection],
    ) -> Result<SparseIndex, Self::Error> {
        let (q, k) = (self.upload(q)?, self.upload(k)?);
        let sel = self.selection_from_host(shape, patterns, vs)?;
        let index = self.index(shape, self.input(&q), self.input(&k), patterns, &sel)?;
        self.index_to_host(shape, &index)
    }

    /// Attention for all heads with each head's pattern; VS/BS heads read `index`.
    fn sparse(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        v: HostTensor,
        patterns: &[HeadPattern],
        index: &SparseIndex,
    ) -> Result<Vec<f32>, Self::Error> {
        self.run(shape, q, k, v, patterns, Some(index))
    }

    #[doc(hidden)]
    fn run(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        v: HostTensor,
        patterns: &[HeadPattern],
        index: Option<&SparseIndex>,
    ) -> Result<Vec<f32>, Self::Error> {
        let (q, k, v) = (self.upload(q)?, self.upload(k)?, self.upload(v)?);
        let index = index.map(|ix| self.index_from_host(shape, ix)).transpose()?;
        let mut out = self.output(shape)?;
        self.attend(shape, self.input(&q), self.input(&k), self.input(&v), patterns, index.as_ref(), &mut out)?;
        self.output_to_host(&out)
    }
}

impl<B: BackendTransfer + ?Sized> HostRoundTrip for B {}
