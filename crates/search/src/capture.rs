//! A dense attention backend that hands every KV group's Q/K/V to a visitor during a model's
//! forward pass (the search computes each head's dense output itself, so the visitor replaces the
//! attention). The engine calls `dense` once per (layer, KV group) in order, so call `c` is layer
//! `c / kv_heads`, group `c % kv_heads`; Q holds that group's query heads `[group, n, D]`.
//! Capturing one layer's Q/K/V only watches the forward: an engine `Observer` ([`capture_layer`]).

use crate::error::{Result, SearchError};
use minference_core::{AttentionBackend, AttnShape, HeadPattern, HostTensor, SparseIndex, VsSelection};
use minference_engine::{AttentionPass, Observer};
use minference_model::ModelError;
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

pub struct VisitingBackend<V: GroupVisitor> {
    visitor: V,
    kv_heads: usize,
    calls: AtomicUsize,
}

impl<V: GroupVisitor> VisitingBackend<V> {
    pub fn new(visitor: V, kv_heads: usize) -> Self {
        VisitingBackend { visitor, kv_heads: kv_heads.max(1), calls: AtomicUsize::new(0) }
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
    type Input<'t> = HostTensor<'t>;
    type Output = Vec<f32>;
    type Selection = Vec<VsSelection>;
    type Index = SparseIndex;

    fn name(&self) -> String {
        format!("CPU search ({} threads)", rayon::current_num_threads())
    }

    fn output(&self, _: &AttnShape) -> Result<Vec<f32>> {
        Ok(Vec::new())
    }

    fn estimate(&self, _: &AttnShape, _: HostTensor, _: HostTensor, _: &[HeadPattern]) -> Result<Vec<VsSelection>> {
        Err(SearchError::Input("the search backend runs dense attention only".into()))
    }

    fn index(
        &self,
        _: &AttnShape,
        _: HostTensor,
        _: HostTensor,
        _: &[HeadPattern],
        _: &Vec<VsSelection>,
    ) -> Result<SparseIndex> {
        Err(SearchError::Input("the search backend runs dense attention only".into()))
    }

    fn attend(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        v: HostTensor,
        patterns: &[HeadPattern],
        index: Option<&SparseIndex>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        if index.is_some() || patterns.iter().any(|p| *p != HeadPattern::Dense) {
            return Err(SearchError::Input("the search backend runs dense attention only".into()));
        }
        shape.validate()?;
        if shape.kv_heads != 1 || shape.seqs.len() != 1 || shape.seqs[0].q_len != shape.seqs[0].kv_len {
            return Err(SearchError::Input("the search backend takes one KV group of one fresh prefill".into()));
        }
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let layer = call / self.kv_heads;
        let (n, d) = (shape.seqs[0].q_len, shape.head_dim);
        let (q, k, v) = (f32_view(q), f32_view(k), f32_view(v));
        if q.len() != shape.heads * n * d || k.len() < n * d || v.len() < n * d {
            return Err(SearchError::Input("tensor sizes do not match the attention shape".into()));
        }
        let g = GroupInputs {
            layer,
            kv_group: call % self.kv_heads,
            group: shape.heads,
            n,
            head_dim: d,
            q: &q,
            k: &k[..n * d],
            v: &v[..n * d],
        };
        *out = self.visitor.visit(&g)?;
        Ok(())
    }
}

/// Q, K, V of one query head (K and V are its KV group's), `[n, D]` each.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedHead {
    pub head: usize,
    pub n: usize,
    pub head_dim: usize,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// Keeps every query head's Q/K/V of `layer` from the forward's attention passes and ends the
/// forward after that layer.
struct LayerCapture {
    layer: usize,
    heads: Vec<CapturedHead>,
}

impl Observer<[f32], ModelError> for LayerCapture {
    fn attention(&mut self, p: &AttentionPass<'_, [f32]>) -> std::result::Result<(), ModelError> {
        if p.layer != self.layer {
            return Ok(());
        }
        let (n, d, kv_n) = (p.tokens, p.head_dim, p.kv_tokens);
        let group = (p.heads / p.kv_heads.max(1)).max(1);
        for local in 0..p.heads {
            let kv = local / group;
            let (q, k, v) = (
                p.q.get(local * n * d..(local + 1) * n * d),
                p.k.get(kv * kv_n * d..(kv + 1) * kv_n * d),
                p.v.get(kv * kv_n * d..(kv + 1) * kv_n * d),
            );
            let (Some(q), Some(k), Some(v)) = (q, k, v) else {
                return Err(ModelError::Input("an attention pass is smaller than its shape".into()));
            };
            let head = p.first_head + local;
            self.heads.push(CapturedHead { head, n, head_dim: d, q: q.to_vec(), k: k.to_vec(), v: v.to_vec() });
        }
        Ok(())
    }

    fn stop_after(&self, layer: usize) -> bool {
        layer == self.layer
    }
}

/// Q/K/V (after RoPE) of every query head of `layer` for `tokens`, from a dense forward that stops
/// after that layer. Heads are in order.
pub fn capture_layer(
    model: std::sync::Arc<minference_model::Model>,
    tokens: &[u32],
    layer: usize,
) -> Result<Vec<CapturedHead>> {
    let cfg = model.config().clone();
    if layer >= cfg.layers {
        return Err(SearchError::Input(format!("layer {layer} does not exist (the model has {} layers)", cfg.layers)));
    }
    if tokens.is_empty() {
        return Err(SearchError::Input("the prompt is empty".into()));
    }
    let mut capture = LayerCapture { layer, heads: Vec::new() };
    let mut engine = minference_engine::CpuEngine::new(model, minference_cpu::CpuBackend::new());
    engine.prefill_observed(tokens, &minference_engine::AttentionChoice::Dense, &mut |_| {}, &mut capture)?;
    let mut heads = capture.heads;
    if heads.len() != cfg.heads {
        return Err(SearchError::Input(format!(
            "captured {} heads of layer {layer}, expected {}",
            heads.len(),
            cfg.heads
        )));
    }
    heads.sort_by_key(|h| h.head);
    Ok(heads)
}
