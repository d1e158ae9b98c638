//! A dense attention backend that hands every KV group's Q/K/V to a visitor during a model's
//! forward pass. The engine calls `dense` once per (layer, KV group) in order, so call `c` is layer
//! `c / kv_heads`, group `c % kv_heads`; Q holds that group's query heads `[group, n, D]`.

use crate::error::{Result, SearchError};
use minference_core::{AttentionBackend, AttnShape, HeadPattern, HostTensor, SparseIndex, VsSelection};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One KV group's attention inputs, f32, head-major.
pub struct GroupInputs<'a> {
    pub layer: usize,
    pub kv_group: usize,
    /// Query heads of the group: global head ids `kv_group * group + 0..group`.
    pub group: usize,
    pub n: usize,
    pub head_dim: usize,
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
}

/// Receives each group and returns its dense attention output `[group, n, D]`.
pub trait GroupVisitor: Sync {
    fn visit(&self, g: &GroupInputs) -> Result<Vec<f32>>;
}

/// Message of the error used to end a forward pass early (see [`VisitingBackend::stop_after`]).
pub const STOPPED: &str = "forward stopped after the captured layer";

pub struct VisitingBackend<V: GroupVisitor> {
    visitor: V,
    kv_heads: usize,
    calls: AtomicUsize,
    stop_after: Option<usize>,
}

impl<V: GroupVisitor> VisitingBackend<V> {
    pub fn new(visitor: V, kv_heads: usize) -> Self {
        VisitingBackend { visitor, kv_heads: kv_heads.max(1), calls: AtomicUsize::new(0), stop_after: None }
    }

    /// Fails every call after `layer` with [`STOPPED`], so a forward pass ends there.
    pub fn stop_after(mut self, layer: usize) -> Self {
        self.stop_after = Some(layer);
        self
    }

    pub fn visitor(&self) -> &V {
        &self.visitor
    }
}

fn f32_view(t: HostTensor<'_>) -> std::borrow::Cow<'_, [f32]> {
    match t {
        HostTensor::F32(s) => std::borrow::Cow::Borrowed(s),
        other => std::borrow::Cow::Owned(other.to_f32_vec()),
    }
}

impl<V: GroupVisitor> AttentionBackend for VisitingBackend<V> {
    type Error = SearchError;

    fn name(&self) -> String {
        format!("CPU search ({} threads)", rayon::current_num_threads())
    }

    fn dense(&self, shape: &AttnShape, q: HostTensor, k: HostTensor, v: HostTensor) -> Result<Vec<f32>> {
        shape.validate()?;
        if shape.kv_heads != 1 || shape.seqs.len() != 1 || shape.seqs[0].q_len != shape.seqs[0].kv_len {
            return Err(SearchError::Input("the search backend takes one KV group of one fresh prefill".into()));
        }
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let layer = call / self.kv_heads;
        if self.stop_after.is_some_and(|l| layer > l) {
            return Err(SearchError::Input(STOPPED.into()));
        }
        let (n, d) = (shape.seqs[0].q_len, shape.head_dim);
        let (q, k, v) = (f32_view(q), f32_view(k), f32_view(v));
        if q.len() != shape.heads * n * d || k.len() < n * d || v.len() < n * d {
            return Err(SearchError::Input("tensor sizes do not match the attention shape".into()));
        }
        let g = GroupInputs { layer, kv_group: call % self.kv_heads, group: shape.heads, n, head_dim: d, q: &q, k: &k[..n * d], v: &v[..n * d] };
        self.visitor.visit(&g)
    }

    fn estimate_vs(&self, _: &AttnShape, _: HostTensor, _: HostTensor, _: &[HeadPattern]) -> Result<Vec<VsSelection>> {
        Err(SearchError::Input("the search backend runs dense attention only".into()))
    }

    fn build_index(&self, _: &AttnShape, _: HostTensor, _: HostTensor, _: &[HeadPattern], _: &[VsSelection]) -> Result<SparseIndex> {
        Err(SearchError::Input("the search backend runs dense attention only".into()))
    }

    fn sparse(&self, _: &AttnShape, _: HostTensor, _: HostTensor, _: HostTensor, _: &[HeadPattern], _: &SparseIndex) -> Result<Vec<f32>> {
        Err(SearchError::Input("the search backend runs dense attention only".into()))
    }
}
