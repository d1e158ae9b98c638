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
        self.visitor.visit(&g)
    }

    fn estimate_vs(&self, _: &AttnShape, _: HostTensor, _: HostTensor, _: &[HeadPattern]) -> Result<Vec<VsSelection>> {
        Err(SearchError::Input("the search backend runs dense attention only".into()))
    }

    fn build_index(
        &self,
        _: &AttnShape,
        _: HostTensor,
        _: HostTensor,
        _: &[HeadPattern],
        _: &[VsSelection],
    ) -> Result<SparseIndex> {
        Err(SearchError::Input("the search backend runs dense attention only".into()))
    }

    fn sparse(
        &self,
        _: &AttnShape,
        _: HostTensor,
        _: HostTensor,
        _: HostTensor,
        _: &[HeadPattern],
        _: &SparseIndex,
    ) -> Result<Vec<f32>> {
        Err(SearchError::Input("the search backend runs dense attention only".into()))
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

/// Runs layers `0..=layer` densely and keeps every query head's Q/K/V of `layer`.
struct LayerCapture {
    layer: usize,
    heads: std::sync::Mutex<Vec<CapturedHead>>,
}

impl GroupVisitor for LayerCapture {
    fn visit(&self, g: &GroupInputs) -> Result<Vec<f32>> {
        use rayon::prelude::*;
        let (n, d) = (g.n, g.head_dim);
        let outs: Vec<Result<Vec<f32>>> = (0..g.group)
            .into_par_iter()
            .map(|local| {
                let q = &g.q[local * n * d..(local + 1) * n * d];
                crate::dense::dense_output(&crate::dense::HeadInputs::new(q, g.k, Some(g.v), d)?)
            })
            .collect();
        if g.layer == self.layer {
            let mut heads = self.heads.lock().map_err(|_| SearchError::Input("a capture thread panicked".into()))?;
            for local in 0..g.group {
                heads.push(CapturedHead {
                    head: g.kv_group * g.group + local,
                    n,
                    head_dim: d,
                    q: g.q[local * n * d..(local + 1) * n * d].to_vec(),
                    k: g.k.to_vec(),
                    v: g.v.to_vec(),
                });
            }
        }
        let mut out = Vec::with_capacity(g.group * n * d);
        for o in outs {
            out.extend_from_slice(&o?);
        }
        Ok(out)
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
    let visitor = LayerCapture { layer, heads: std::sync::Mutex::new(Vec::new()) };
    let mut engine =
        minference_engine::CpuEngine::new(model, VisitingBackend::new(visitor, cfg.kv_heads).stop_after(layer));
    let result = engine.prefill(tokens, &minference_engine::AttentionChoice::Dense, &mut |_| {});
    let mut heads = std::mem::take(
        &mut *engine
            .backend()
            .visitor()
            .heads
            .lock()
            .map_err(|_| SearchError::Input("a capture thread panicked".into()))?,
    );
    // The forward ends with the STOPPED error once the layer is captured (unless it was the last).
    if heads.len() != cfg.heads {
        result?;
        return Err(SearchError::Input(format!(
            "captured {} heads of layer {layer}, expected {}",
            heads.len(),
            cfg.heads
        )));
    }
    heads.sort_by_key(|h| h.head);
    Ok(heads)
}
