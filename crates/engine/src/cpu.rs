//! The CPU forward pass: chunked prefill (norms, projections and MLP in token chunks; attention per
//! KV-head group through an `AttentionBackend`), LM head on the last position only, and dense
//! decode steps over the f16 KV cache: one-token forwards use the quantized weights as stored
//! (`QuantMatrix::matvec`) and split-K attention (`decode_attention`), timed per operation
//! (`decode_profile`).

use crate::attention::AttentionChoice;
use crate::decode_profile::{lap, DecodeOp, DecodeProfile};
use crate::kv_cache::KvCache;
use crate::ops;
use crate::residual_export::ResidualExport;
use crate::rope::Rope;
use crate::stats::PrefillStats;
use minference_core::{AttentionBackend, AttnShape, HeadPattern, HostTensor, SeqLen};
use minference_cpu::CpuBackend;
use minference_model::Model;
use minference_model::{ModelError, Result};
use std::sync::Arc;
use std::time::Instant;

/// Tokens per chunk for norms, projections and the MLP (bounds activation memory).
pub const DEFAULT_CHUNK_TOKENS: usize = 512;
/// Cache rows reserved beyond the prompt for decode steps.
const DEFAULT_DECODE_RESERVE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefillProgress {
    pub layer: usize,
    pub layers: usize,
}

/// Q and K of one (layer, head) after RoPE, `[tokens, head_dim]` each.
#[derive(Debug, Clone)]
pub struct CapturedQk {
    pub layer: usize,
    pub head: usize,
    pub tokens: usize,
    pub head_dim: usize,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
}

/// The CPU forward (the correctness oracle, and a usable engine), through any attention backend.
pub struct CpuEngine<B: AttentionBackend> {
    model: Arc<Model>,
    backend: B,
    rope: Rope,
    cache: KvCache,
    chunk_tokens: usize,
    /// Allow prompts past the model's trained context (RoPE extrapolation, at the user's risk).
    allow_context_extension: bool,
    capture_target: Option<(usize, usize)>,
    captured: Option<CapturedQk>,
    memory_limit: Option<u64>,
    /// Cache rows reserved beyond the prompt for decode steps.
    decode_reserve: usize,
    /// Switched on by `prefill_hidden`: the forward keeps the residual stream of every position.
    hidden: ResidualExport,
    /// Per-operation times of one-token forwards since the last reset.
    profile: DecodeProfile,
}

fn backend_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Backend(e.to_string())
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The CPU engine with the CPU attention backend.
pub fn cpu_engine(model: impl Into<Arc<Model>>) -> CpuEngine<CpuBackend> {
    CpuEngine::new(model, CpuBackend::new())
}

impl<B: AttentionBackend> CpuEngine<B> {
    pub fn new(model: impl Into<Arc<Model>>, backend: B) -> Self {
        let model = model.into();
        let cfg = model.config();
        let rope = Rope::new(cfg);
        let cache = KvCache::empty(cfg.layers, cfg.kv_heads, cfg.head_dim);
        CpuEngine {
            model,
            backend,
            rope,
            cache,
            chunk_tokens: DEFAULT_CHUNK_TOKENS,
            allow_context_extension: false,
            capture_target: None,
            captured: None,
            memory_limit: None,
            decode_reserve: DEFAULT_DECODE_RESERVE,
            hidden: ResidualExport::default(),
            profile: DecodeProfile::default(),
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }
    pub fn backend(&self) -> &B {
        &self.backend
    }
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// Where the one-token forwards (decode steps) since the last reset spent their time.
    pub fn decode_profile(&self) -> &DecodeProfile {
        &self.profile
    }
    pub fn reset_decode_profile(&mut self) {
        self.profile = DecodeProfile::default();
    }

    /// Cache rows the next prefill reserves for decode steps.
    pub fn set_decode_reserve(&mut self, n: usize) {
        self.decode_reserve = n.max(1);
    }

    /// Frees the KV cache.
    pub fn clear_cache(&mut self) {
        let cfg = self.model.config();
        self.cache = KvCache::empty(cfg.layers, cfg.kv_heads, cfg.head_dim);
    }

    pub fn set_chunk_tokens(&mut self, n: usize) {
        self.chunk_tokens = n.max(1);
    }

    pub fn set_allow_context_extension(&mut self, allow: bool) {
        self.allow_context_extension = allow;
    }

    /// Runs a fresh prompt (clearing the cache) and returns the logits of its last position.
    pub fn prefill(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, PrefillStats)> {
        if tokens.is_empty() {
            return Err(ModelError::Input("empty prompt".into()));
        }
        if let AttentionChoice::MInference(plan) = attention {
            plan.validate(self.model.config())?;
        }
        self.check_context(tokens.len())?;
        self.check_memory(tokens.len())?;
        let cfg = self.model.config();
        // Free the previous cache before allocating the new one.
        self.cache = KvCache::empty(cfg.layers, cfg.kv_heads, cfg.head_dim);
        self.cache = KvCache::new(cfg.layers, cfg.kv_heads, cfg.head_dim, tokens.len() + self.decode_reserve)?;
        self.forward(tokens, attention, progress)
    }

    /// Appends tokens after the cached ones (dense attention) and returns the last logits.
    pub fn extend(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(ModelError::Input("no tokens to append".into()));
        }
        self.check_context(self.cache.len() + tokens.len())?;
        self.cache.reserve(tokens.len())?;
        Ok(self.forward(tokens, &AttentionChoice::Dense, &mut |_| {})?.0)
    }

    /// One decode step: feeds `token`, returns the next-token logits.
    pub fn decode_step(&mut self, token: u32) -> Result<Vec<f32>> {
        if self.cache.is_empty() {
            return Err(ModelError::Input("decode_step before prefill".into()));
        }
        self.extend(&[token])
    }

    /// Like `prefill`, but returns the residual stream after the last layer (before the final norm)
    /// of every position, `[tokens, hidden]`, for scoring all positions (see `lm_head`).
    pub fn prefill_hidden(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, PrefillStats)> {
        ResidualExport::run(
            self,
            |e| &mut e.hidden,
            |e| e.prefill(tokens, attention, progress),
            || ModelError::Input("prefill kept no hidden states".into()),
        )
    }

    /// Q and K (after RoPE) of one layer and query head for `tokens`, from a dense forward that
    /// stops after that layer. For attention benchmarks on real indices.
    pub fn capture_qk(&mut self, tokens: &[u32], layer: usize, head: usize) -> Result<CapturedQk> {
        let cfg = self.model.config();
        if layer >= cfg.layers || head >= cfg.heads {
            return Err(ModelError::Input(format!(
                "capture target layer {layer} head {head} outside {} layers × {} heads",
                cfg.layers, cfg.heads
            )));
        }
        self.capture_target = Some((layer, head));
        let result = self.prefill(tokens, &AttentionChoice::Dense, &mut |_| {});
        self.capture_target = None;
        // The forward stopped after the captured layer: later layers' cache rows are not filled.
        self.cache.set_len(0);
        result?;
        self.captured.take().ok_or_else(|| ModelError::Input("capture produced nothing".into()))
    }

    /// Caps the host memory a prefill may use (default: the machine's available memory).
    pub fn set_memory_limit(&mut self, bytes: Option<u64>) {
        self.memory_limit = bytes;
    }

    fn check_memory(&self, n: usize) -> Result<()> {
        let need = crate::memory::cpu_prefill_bytes(self.model.config(), n, self.chunk_tokens, self.decode_reserve);
        let Some(limit) = self.memory_limit.or_else(crate::memory::available_host_bytes) else { return Ok(()) };
        if need > limit {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            return Err(ModelError::OutOfMemory(format!(
                "prefilling {n} tokens on the CPU needs about {:.2} GiB (KV cache, Q, residual stream in f32); {:.2} GiB available",
                gib(need),
                gib(limit)
            )));
        }
        Ok(())
    }

    fn check_context(&self, total: usize) -> Result<()> {
        let context = self.model.config().context_length;
        if total > context && !self.allow_context_extension {
            return Err(ModelError::ContextOverflow { tokens: total, context });
        }
        Ok(())
    }

    fn forward(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, PrefillStats)> {
        let start = Instant::now();
        let model = Arc::clone(&self.model);
        let cfg = model.config();
        let w = model.weights();
        let (n, hidden, d) = (tokens.len(), cfg.hidden, cfg.head_dim);
        let (heads, kv_heads) = (cfg.heads, cfg.kv_heads);
        let cached = self.cache.len();
        let mut stats = PrefillStats { tokens: n, ..Default::default() };
        stats.plan.tokens = n;
        // One new token: a decode step (quantized matvecs, split-K attention on the f16 cache).
        let decode = n == 1;
        let mut prof = decode.then(|| DecodeProfile { steps: 1, ..Default::default() });
        let mut t = Instant::now();

        let mut x = crate::memory::zeroed(n * hidden, "the residual stream")?;
        for (t, &tok) in tokens.iter().enumerate() {
            let row = tok as usize;
            if row >= cfg.vocab {
                return Err(ModelError::Input(format!("token id {tok} outside the vocabulary of {}", cfg.vocab)));
            }
            x[t * hidden..(t + 1) * hidden].copy_from_slice(&w.embed[row * hidden..(row + 1) * hidden]);
        }

        lap(&mut prof, DecodeOp::Embed, &mut t);

        let chunk = self.chunk_tokens.min(n);
        // Several new tokens: the backend attends over f32 K/V of one layer, `[kv_heads, total, d]`
        // (this layer's new rows straight from the projections, cached rows widened from f16).
        let total = cached + n;
        let scratch_len = if decode { 0 } else { kv_heads * total * d };
        let mut k_f32 = crate::memory::zeroed(scratch_len, "one layer of f32 keys")?;
        let mut v_f32 = crate::memory::zeroed(scratch_len, "one layer of f32 values")?;
        // Q of every token, head-major [heads, n, d]; reused for the attention output.
        let mut q_all = crate::memory::zeroed(heads * n * d, "the queries of one layer")?;
        let mut normed = vec![0f32; chunk * hidden];
        let mut q_rows = vec![0f32; chunk * cfg.q_dim()];
        let mut k_rows = vec![0f32; chunk * cfg.kv_dim()];
        let mut v_rows = vec![0f32; chunk * cfg.kv_dim()];
        let mut proj = vec![0f32; chunk * hidden];
        let mut gate = vec![0f32; chunk * cfg.intermediate];
        let mut up = vec![0f32; chunk * cfg.intermediate];

        for (l, lw) in w.layers.iter().enumerate() {
            if !decode && cached > 0 {
                use half::slice::HalfFloatSliceExt;
                for g in 0..kv_heads {
                    let (k, v) = self.cache.head(l, g, cached);
                    k.convert_to_f32_slice(&mut k_f32[g * total * d..(g * total + cached) * d]);
                    v.convert_to_f32_slice(&mut v_f32[g * total * d..(g * total + cached) * d]);
                }
            }
            // 1. Norm + Q/K/V projections + RoPE, in token chunks.
            for c0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - c0);
                let xs = &x[c0 * hidden..(c0 + c) * hidden];
                ops::rms_norm(xs, &lw.attn_norm, cfg.rms_eps, &mut normed[..c * hidden]);
                lap(&mut prof, DecodeOp::Norms, &mut t);
                ops::linear_many(
                    &normed[..c * hidden],
                    c,
                    &[&lw.wq, &lw.wk, &lw.wv],
                    &mut [
                        &mut q_rows[..c * cfg.q_dim()],
                        &mut k_rows[..c * cfg.kv_dim()],
                        &mut v_rows[..c * cfg.kv_dim()],
                    ],
                );
                lap(&mut prof, DecodeOp::Qkv, &mut t);
                self.rope.apply(&mut q_rows[..c * cfg.q_dim()], heads, cached + c0);
                self.rope.apply(&mut k_rows[..c * cfg.kv_dim()], kv_heads, cached + c0);
                for t in 0..c {
                    for h in 0..heads {
                        let dst = (h * n + c0 + t) * d;
                        q_all[dst..dst + d].copy_from_slice(&q_rows[(t * heads + h) * d..(t * heads + h + 1) * d]);
                    }
                    if !decode {
                        for g in 0..kv_heads {
                            let (src, dst) = ((t * kv_heads + g) * d, (g * total + cached + c0 + t) * d);
                            k_f32[dst..dst + d].copy_from_slice(&k_rows[src..src + d]);
                            v_f32[dst..dst + d].copy_from_slice(&v_rows[src..src + d]);
                        }
                    }
                }
                lap(&mut prof, DecodeOp::Rope, &mut t);
                self.cache.write(l, cached + c0, &k_rows[..c * cfg.kv_dim()], &v_rows[..c * cfg.kv_dim()]);
                lap(&mut prof, DecodeOp::KvWrite, &mut t);
            }
            self.capture(l, &q_all, &k_f32, n, cached)?;

            // 2. Attention, one KV-head group at a time; output overwrites that group's Q.
            if decode {
                let kv: Vec<_> = (0..kv_heads).map(|g| self.cache.head(l, g, total)).collect();
                crate::decode_attention::decode_attention(&q_rows[..heads * d], &kv, d, &mut q_all[..heads * d]);
                stats.dense_heads += heads;
            } else {
                let patterns = attention.layer_patterns(l, n, cached);
                self.attend(l, &mut q_all, (&k_f32, &v_f32), n, cached, patterns, &mut stats)?;
            }
            lap(&mut prof, DecodeOp::Attention, &mut t);

            // 3. Output projection + residual, then norm + SwiGLU MLP + residual, in token chunks.
            for c0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - c0);
                for t in 0..c {
                    for h in 0..heads {
                        let src = (h * n + c0 + t) * d;
                        q_rows[(t * heads + h) * d..(t * heads + h + 1) * d].copy_from_slice(&q_all[src..src + d]);
                    }
                }
                let xs = &mut x[c0 * hidden..(c0 + c) * hidden];
                ops::linear(&q_rows[..c * cfg.q_dim()], c, &lw.wo, &mut proj[..c * hidden]);
                lap(&mut prof, DecodeOp::OutProj, &mut t);
                ops::add_in_place(xs, &proj[..c * hidden]);
                lap(&mut prof, DecodeOp::Residual, &mut t);
                ops::rms_norm(xs, &lw.mlp_norm, cfg.rms_eps, &mut normed[..c * hidden]);
                lap(&mut prof, DecodeOp::Norms, &mut t);
                let inter = c * cfg.intermediate;
                ops::linear_many(
                    &normed[..c * hidden],
                    c,
                    &[&lw.w_gate, &lw.w_up],
                    &mut [&mut gate[..inter], &mut up[..inter]],
                );
                lap(&mut prof, DecodeOp::GateUp, &mut t);
                ops::swiglu(&mut gate[..inter], &up[..inter]);
                lap(&mut prof, DecodeOp::Swiglu, &mut t);
                ops::linear(&gate[..inter], c, &lw.w_down, &mut proj[..c * hidden]);
                lap(&mut prof, DecodeOp::Down, &mut t);
                ops::add_in_place(xs, &proj[..c * hidden]);
                lap(&mut prof, DecodeOp::Residual, &mut t);
            }
            progress(PrefillProgress { layer: l, layers: cfg.layers });
            if self.capture_target.is_some_and(|(cl, _)| cl == l) {
                break;
            }
        }
        self.cache.set_len(cached + n);

        // Final norm and LM head on the last position only.
        let last = &x[(n - 1) * hidden..n * hidden];
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
        lap(&mut prof, DecodeOp::LmHead, &mut t);
        if self.hidden.wanted() {
            self.hidden.keep(x);
        }
        stats.seconds = start.elapsed().as_secs_f64();
        if let Some(mut p) = prof {
            p.total_seconds = stats.seconds;
            self.profile.merge(&p);
        }
        Ok((logits, stats))
    }

    fn capture(&mut self, layer: usize, q_all: &[f32], k_f32: &[f32], n: usize, cached: usize) -> Result<()> {
        let Some((cl, ch)) = self.capture_target else { return Ok(()) };
        if cl != layer {
            return Ok(());
        }
        let cfg = self.model.config();
        let d = cfg.head_dim;
        let g = ch / (cfg.heads / cfg.kv_heads);
        let total = cached + n;
        let k = &k_f32[g * total * d..(g + 1) * total * d];
        self.captured = Some(CapturedQk {
            layer,
            head: ch,
            tokens: n,
            head_dim: d,
            q: q_all[ch * n * d..(ch + 1) * n * d].to_vec(),
            k: k.to_vec(),
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        layer: usize,
        q_all: &mut [f32],
        (k_f32, v_f32): (&[f32], &[f32]),
        n: usize,
        cached: usize,
        patterns: Option<&[HeadPattern]>,
        stats: &mut PrefillStats,
    ) -> Result<()> {
        let cfg = self.model.config();
        let d = cfg.head_dim;
        let group = cfg.heads / cfg.kv_heads;
        let shape =
            AttnShape { heads: group, kv_heads: 1, head_dim: d, seqs: vec![SeqLen { q_len: n, kv_len: cached + n }] };
        let _ = layer;
        let total = cached + n;
        for g in 0..cfg.kv_heads {
            let (k, v) = (&k_f32[g * total * d..(g + 1) * total * d], &v_f32[g * total * d..(g + 1) * total * d]);
            let q = &q_all[g * group * n * d..(g + 1) * group * n * d];
            let group_patterns = patterns.map(|p| &p[g * group..(g + 1) * group]);
            let out = match group_patterns {
                Some(p) if p.iter().any(|h| *h != HeadPattern::Dense) => {
                    stats.sparse_heads += p.iter().filter(|h| **h != HeadPattern::Dense).count();
                    stats.dense_heads += p.iter().filter(|h| **h == HeadPattern::Dense).count();
                    let (qt, kt, vt) = (HostTensor::F32(q), HostTensor::F32(k), HostTensor::F32(v));
                    let t = Instant::now();
                    let vs = self.backend.estimate_vs(&shape, qt, kt, p).map_err(backend_err)?;
                    stats.estimate_ms += ms_since(t);
                    let t = Instant::now();
                    let index = self.backend.build_index(&shape, qt, kt, p, &vs).map_err(backend_err)?;
                    stats.index_ms += ms_since(t);
                    stats.index_tiles += index.tile_start.len();
                    let t = Instant::now();
                    let out = self.backend.sparse(&shape, qt, kt, vt, p, &index).map_err(backend_err)?;
                    stats.attention_ms += ms_since(t);
                    out
                }
                _ => {
                    stats.dense_heads += group;
                    let t = Instant::now();
                    let out = self
                        .backend
                        .dense(&shape, HostTensor::F32(q), HostTensor::F32(k), HostTensor::F32(v))
                        .map_err(backend_err)?;
                    stats.attention_ms += ms_since(t);
                    out
                }
            };
            if out.len() != group * n * d {
                return Err(ModelError::Backend(format!(
                    "backend returned {} values, expected {}",
                    out.len(),
                    group * n * d
                )));
            }
            q_all[g * group * n * d..(g + 1) * group * n * d].copy_from_slice(&out);
        }
        Ok(())
    }
}
