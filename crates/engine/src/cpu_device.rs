//! The CPU's operations of one forward call ([`Device`]): f32 activations in token chunks,
//! attention per KV-head group through a `HostBackend` over f32 K/V of one layer, the f16 KV
//! cache written as rows are projected. A one-token call is a decode step: quantized matvecs and
//! split-K attention over the f16 cache (`decode_attention`), timed per operation.

use crate::decode_profile::{lap, DecodeOp, DecodeProfile};
use crate::forward::{Device, Norm, Walk};
use crate::kv_cache::KvCache;
use crate::observer::{AttentionPass, Observer};
use crate::ops;
use crate::rope::Rope;
use crate::stats::PrefillStats;
use minference_core::{causal_entries, index_head_coverage, AttnShape, HeadPattern, HostBackend, HostTensor, SeqLen};
use minference_model::{Model, ModelError, Result};
use std::ops::Range;
use std::time::Instant;

fn backend_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Backend(e.to_string())
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// One forward call on the CPU: `tokens` after the cache's rows.
pub(crate) struct CpuForward<'a, B> {
    model: &'a Model,
    backend: &'a B,
    rope: &'a Rope,
    cache: &'a mut KvCache,
    tokens: &'a [u32],
    walk: Walk,
    /// One new token: a decode step.
    decode: bool,
    stats: PrefillStats,
    prof: Option<DecodeProfile>,
    t: Instant,
    /// The residual stream `[n, hidden]`.
    x: Vec<f32>,
    /// Several new tokens: f32 K/V of one layer, `[kv_heads, cached + n, d]` (this layer's new rows
    /// straight from the projections, cached rows widened from f16).
    k_f32: Vec<f32>,
    v_f32: Vec<f32>,
    /// Q of every token, head-major `[heads, n, d]`; the attention output overwrites it.
    q_all: Vec<f32>,
    normed: Vec<f32>,
    q_rows: Vec<f32>,
    k_rows: Vec<f32>,
    v_rows: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

impl<'a, B: HostBackend> CpuForward<'a, B> {
    pub(crate) fn new(
        model: &'a Model,
        backend: &'a B,
        rope: &'a Rope,
        cache: &'a mut KvCache,
        tokens: &'a [u32],
        chunk_tokens: usize,
    ) -> Result<Self> {
        let t = Instant::now();
        let cfg = model.config();
        let (n, hidden, d) = (tokens.len(), cfg.hidden, cfg.head_dim);
        let cached = cache.len();
        let decode = n == 1;
        let chunk = chunk_tokens.min(n);
        let walk = Walk { tokens: n, cached, chunk, passes: 1, layers: cfg.layers };
        let mut stats = PrefillStats { tokens: n, ..Default::default() };
        stats.plan.tokens = n;
        let x = crate::memory::zeroed(n * hidden, "the residual stream")?;
        let scratch_len = if decode { 0 } else { cfg.kv_heads * (cached + n) * d };
        Ok(CpuForward {
            model,
            backend,
            rope,
            cache,
            tokens,
            walk,
            decode,
            stats,
            prof: decode.then(|| DecodeProfile { steps: 1, ..Default::default() }),
            t,
            x,
            k_f32: crate::memory::zeroed(scratch_len, "one layer of f32 keys")?,
            v_f32: crate::memory::zeroed(scratch_len, "one layer of f32 values")?,
            q_all: crate::memory::zeroed(cfg.heads * n * d, "the queries of one layer")?,
            normed: vec![0f32; chunk * hidden],
            q_rows: vec![0f32; chunk * cfg.q_dim()],
            k_rows: vec![0f32; chunk * cfg.kv_dim()],
            v_rows: vec![0f32; chunk * cfg.kv_dim()],
            proj: vec![0f32; chunk * hidden],
            gate: vec![0f32; chunk * cfg.intermediate],
            up: vec![0f32; chunk * cfg.intermediate],
        })
    }

    /// The call's stats and, for a decode step, its per-operation times.
    pub(crate) fn into_parts(self) -> (PrefillStats, Option<DecodeProfile>) {
        (self.stats, self.prof)
    }

    fn lap(&mut self, op: DecodeOp) {
        lap(&mut self.prof, op, &mut self.t);
    }

    /// Prefill attention of one layer, one KV-head group at a time; each group's output overwrites
    /// its Q once the observer has seen the pass.
    fn attend(
        &mut self,
        layer: usize,
        patterns: Option<&[HeadPattern]>,
        observer: &mut dyn Observer<[f32], ModelError>,
    ) -> Result<()> {
        let model = self.model;
        let cfg = model.config();
        let (d, n, cached) = (cfg.head_dim, self.walk.tokens, self.walk.cached);
        let group = cfg.heads / cfg.kv_heads;
        let total = cached + n;
        let shape =
            AttnShape { heads: group, kv_heads: 1, head_dim: d, seqs: vec![SeqLen { q_len: n, kv_len: total }] };
        let stats = &mut self.stats;
        for g in 0..cfg.kv_heads {
            let (k, v) =
                (&self.k_f32[g * total * d..(g + 1) * total * d], &self.v_f32[g * total * d..(g + 1) * total * d]);
            let q = &self.q_all[g * group * n * d..(g + 1) * group * n * d];
            let group_patterns = patterns.map(|p| &p[g * group..(g + 1) * group]);
            let (out, index) = match group_patterns {
                Some(p) if p.iter().any(|h| *h != HeadPattern::Dense) => {
                    stats.sparse_heads += p.iter().filter(|h| **h != HeadPattern::Dense).count();
                    stats.dense_heads += p.iter().filter(|h| **h == HeadPattern::Dense).count();
                    let (qt, kt, vt) = (HostTensor::F32(q), HostTensor::F32(k), HostTensor::F32(v));
                    let t = Instant::now();
                    let vs = self.backend.estimate(&shape, qt, kt, p).map_err(backend_err)?;
                    stats.estimate_ms += ms_since(t);
                    let t = Instant::now();
                    let index = self.backend.index(&shape, qt, kt, p, &vs).map_err(backend_err)?;
                    stats.index_ms += ms_since(t);
                    stats.index_tiles += index.tile_start.len();
                    for (h, pattern) in p.iter().enumerate() {
                        let cov = index_head_coverage(pattern, &index, &shape, 0, h).map_err(backend_err)?;
                        stats.kernel_entries += cov.entries;
                        stats.causal_entries += cov.causal;
                    }
                    let t = Instant::now();
                    let mut out = Vec::new();
                    self.backend.attend(&shape, qt, kt, vt, p, Some(&index), &mut out).map_err(backend_err)?;
                    stats.attention_ms += ms_since(t);
                    (out, Some(index))
                }
                _ => {
                    stats.dense_heads += group;
                    let causal = group as u64 * causal_entries(&shape.seqs[0]);
                    stats.kernel_entries += causal;
                    stats.causal_entries += causal;
                    let t = Instant::now();
                    let (qt, kt, vt) = (HostTensor::F32(q), HostTensor::F32(k), HostTensor::F32(v));
                    let mut out = Vec::new();
                    let dense = vec![HeadPattern::Dense; group];
                    self.backend.attend(&shape, qt, kt, vt, &dense, None, &mut out).map_err(backend_err)?;
                    stats.attention_ms += ms_since(t);
                    (out, None)
                }
            };
            if out.len() != group * n * d {
                return Err(ModelError::Backend(format!(
                    "backend returned {} values, expected {}",
                    out.len(),
                    group * n * d
                )));
            }
            observer.attention(&AttentionPass {
                layer,
                first_head: g * group,
                heads: group,
                first_kv_head: g,
                kv_heads: 1,
                tokens: n,
                kv_tokens: total,
                head_dim: d,
                q,
                k,
                v,
                o: &out,
                patterns: if index.is_some() { group_patterns.unwrap_or(&[]) } else { &[] },
                index: index.as_ref(),
            })?;
            self.q_all[g * group * n * d..(g + 1) * group * n * d].copy_from_slice(&out);
        }
        Ok(())
    }
}

impl<B: HostBackend> Device for CpuForward<'_, B> {
    type Error = ModelError;
    type Tensor = [f32];

    fn walk(&self) -> Walk {
        self.walk
    }

    fn embed(&mut self) -> Result<()> {
        let model = self.model;
        let cfg = model.config();
        let (w, hidden) = (model.weights(), cfg.hidden);
        for (t, &tok) in self.tokens.iter().enumerate() {
            let row = tok as usize;
            if row >= cfg.vocab {
                return Err(ModelError::Input(format!("token id {tok} outside the vocabulary of {}", cfg.vocab)));
            }
            self.x[t * hidden..(t + 1) * hidden].copy_from_slice(&w.embed[row * hidden..(row + 1) * hidden]);
        }
        self.lap(DecodeOp::Embed);
        Ok(())
    }

    fn begin_layer(&mut self, layer: usize) -> Result<()> {
        let (cached, total) = (self.walk.cached, self.walk.cached + self.walk.tokens);
        if self.decode || cached == 0 {
            return Ok(());
        }
        use half::slice::HalfFloatSliceExt;
        let d = self.model.config().head_dim;
        for g in 0..self.model.config().kv_heads {
            let (k, v) = self.cache.head(layer, g, cached);
            k.convert_to_f32_slice(&mut self.k_f32[g * total * d..(g * total + cached) * d]);
            v.convert_to_f32_slice(&mut self.v_f32[g * total * d..(g * total + cached) * d]);
        }
        Ok(())
    }

    fn rms_norm(&mut self, layer: usize, norm: Norm, rows: Range<usize>) -> Result<()> {
        let model = self.model;
        let cfg = model.config();
        let lw = &model.weights().layers[layer];
        let weight = match norm {
            Norm::Attention => &lw.attn_norm,
            Norm::Mlp => &lw.mlp_norm,
        };
        let (h, c) = (cfg.hidden, rows.len());
        ops::rms_norm(&self.x[rows.start * h..rows.end * h], weight, cfg.rms_eps, &mut self.normed[..c * h]);
        self.lap(DecodeOp::Norms);
        Ok(())
    }

    fn qkv_rope(&mut self, layer: usize, _pass: usize, rows: Range<usize>) -> Result<()> {
        let model = self.model;
        let cfg = model.config();
        let lw = &model.weights().layers[layer];
        let (c0, c) = (rows.start, rows.len());
        let (n, d, heads, kv_heads) = (self.walk.tokens, cfg.head_dim, cfg.heads, cfg.kv_heads);
        let (cached, total) = (self.walk.cached, self.walk.cached + n);
        ops::linear_many(
            &self.normed[..c * cfg.hidden],
            c,
            &[&lw.wq, &lw.wk, &lw.wv],
            &mut [
                &mut self.q_rows[..c * cfg.q_dim()],
                &mut self.k_rows[..c * cfg.kv_dim()],
                &mut self.v_rows[..c * cfg.kv_dim()],
            ],
        );
        self.lap(DecodeOp::Qkv);
        self.rope.apply(&mut self.q_rows[..c * cfg.q_dim()], heads, cached + c0);
        self.rope.apply(&mut self.k_rows[..c * cfg.kv_dim()], kv_heads, cached + c0);
        for t in 0..c {
            for h in 0..heads {
                let dst = (h * n + c0 + t) * d;
                self.q_all[dst..dst + d].copy_from_slice(&self.q_rows[(t * heads + h) * d..(t * heads + h + 1) * d]);
            }
            if !self.decode {
                for g in 0..kv_heads {
                    let (src, dst) = ((t * kv_heads + g) * d, (g * total + cached + c0 + t) * d);
                    self.k_f32[dst..dst + d].copy_from_slice(&self.k_rows[src..src + d]);
                    self.v_f32[dst..dst + d].copy_from_slice(&self.v_rows[src..src + d]);
                }
            }
        }
        self.lap(DecodeOp::Rope);
        self.cache.write(layer, cached + c0, &self.k_rows[..c * cfg.kv_dim()], &self.v_rows[..c * cfg.kv_dim()]);
        self.lap(DecodeOp::KvWrite);
        Ok(())
    }

    fn attention(
        &mut self,
        layer: usize,
        _pass: usize,
        patterns: Option<&[HeadPattern]>,
        observer: &mut dyn Observer<[f32], ModelError>,
    ) -> Result<()> {
        if self.decode {
            let model = self.model;
            let cfg = model.config();
            let (heads, d, total) = (cfg.heads, cfg.head_dim, self.walk.cached + 1);
            let kv: Vec<_> = (0..cfg.kv_heads).map(|g| self.cache.head(layer, g, total)).collect();
            crate::decode_attention::decode_attention(&self.q_rows[..heads * d], &kv, d, &mut self.q_all[..heads * d]);
            self.stats.dense_heads += heads;
        } else {
            self.attend(layer, patterns, observer)?;
        }
        self.lap(DecodeOp::Attention);
        Ok(())
    }

    fn o_proj(&mut self, layer: usize, rows: Range<usize>) -> Result<()> {
        let model = self.model;
        let cfg = model.config();
        let (c0, c) = (rows.start, rows.len());
        let (n, d, heads) = (self.walk.tokens, cfg.head_dim, cfg.heads);
        for t in 0..c {
            for h in 0..heads {
                let src = (h * n + c0 + t) * d;
                self.q_rows[(t * heads + h) * d..(t * heads + h + 1) * d].copy_from_slice(&self.q_all[src..src + d]);
            }
        }
        let wo = &model.weights().layers[layer].wo;
        ops::linear(&self.q_rows[..c * cfg.q_dim()], c, wo, &mut self.proj[..c * cfg.hidden]);
        self.lap(DecodeOp::OutProj);
        Ok(())
    }

    fn add_update(&mut self, rows: Range<usize>) -> Result<()> {
        let h = self.model.config().hidden;
        ops::add_in_place(&mut self.x[rows.start * h..rows.end * h], &self.proj[..rows.len() * h]);
        self.lap(DecodeOp::Residual);
        Ok(())
    }

    fn gate_up(&mut self, layer: usize, rows: Range<usize>) -> Result<()> {
        let model = self.model;
        let cfg = model.config();
        let lw = &model.weights().layers[layer];
        let (c, inter) = (rows.len(), rows.len() * cfg.intermediate);
        ops::linear_many(
            &self.normed[..c * cfg.hidden],
            c,
            &[&lw.w_gate, &lw.w_up],
            &mut [&mut self.gate[..inter], &mut self.up[..inter]],
        );
        self.lap(DecodeOp::GateUp);
        Ok(())
    }

    fn swiglu(&mut self, rows: Range<usize>) -> Result<()> {
        let inter = rows.len() * self.model.config().intermediate;
        ops::swiglu(&mut self.gate[..inter], &self.up[..inter]);
        self.lap(DecodeOp::Swiglu);
        Ok(())
    }

    fn down(&mut self, layer: usize, rows: Range<usize>) -> Result<()> {
        let model = self.model;
        let cfg = model.config();
        let (c, inter) = (rows.len(), rows.len() * cfg.intermediate);
        let w_down = &model.weights().layers[layer].w_down;
        ops::linear(&self.gate[..inter], c, w_down, &mut self.proj[..c * cfg.hidden]);
        self.lap(DecodeOp::Down);
        Ok(())
    }

    fn lm_head(&mut self) -> Result<Vec<f32>> {
        let model = self.model;
        let cfg = model.config();
        let w = model.weights();
        let (n, hidden) = (self.walk.tokens, cfg.hidden);
        let last = &self.x[(n - 1) * hidden..n * hidden];
        let mut last_norm = vec![0f32; hidden];
        ops::rms_norm(last, &w.final_norm, cfg.rms_eps, &mut last_norm);
        let mut logits = vec![0f32; cfg.vocab];
        match &w.lm_head {
            Some(head) => ops::linear(&last_norm, 1, head, &mut logits),
            // Tied head in GGML blocks: the quantized matvec reads a third (Q8_0) of the f32 bytes.
            None if w.embed_quant.is_some() => {
                if let Some(q) = &w.embed_quant {
                    q.matvec(&last_norm, &mut logits);
                }
            }
            None => {
                // Tied head: the embedding matrix is the [vocab, hidden] weight.
                use rayon::prelude::*;
                logits.par_iter_mut().enumerate().for_each(|(o, v)| {
                    *v = ops::dot(&w.embed[o * hidden..(o + 1) * hidden], &last_norm);
                });
            }
        }
        self.lap(DecodeOp::LmHead);
        Ok(logits)
    }

    fn residual(&mut self) -> Result<Vec<f32>> {
        Ok(self.x.clone())
    }
}
