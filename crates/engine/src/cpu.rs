//! The CPU engine: the one forward (`crate::forward`) over the CPU's operations
//! (`crate::cpu_device`) through any `HostBackend`, with the f16 KV cache it keeps between
//! calls: chunked prefill, extension of the cache, decode steps (timed per operation,
//! `decode_profile`).

use crate::attention::AttentionChoice;
use crate::cpu_device::CpuForward;
use crate::decode_profile::DecodeProfile;
use crate::forward::forward;
pub use crate::forward::PrefillProgress;
use crate::kv_cache::KvCache;
pub use crate::observer::CapturedQk;
use crate::observer::{NoObserver, Observer, QkCapture, ResidualExport};
use crate::rope::Rope;
use crate::stats::PrefillStats;
use minference_core::HostBackend;
use minference_cpu::CpuBackend;
use minference_model::Model;
use minference_model::{ModelError, Result};
use std::sync::Arc;
use std::time::Instant;

/// Tokens per chunk for norms, projections and the MLP (bounds activation memory).
pub const DEFAULT_CHUNK_TOKENS: usize = 512;
/// Cache rows reserved beyond the prompt for decode steps.
const DEFAULT_DECODE_RESERVE: usize = 256;

/// The CPU forward (the correctness oracle, and a usable engine), through any attention backend.
pub struct CpuEngine<B: HostBackend> {
    model: Arc<Model>,
    backend: B,
    rope: Rope,
    cache: KvCache,
    chunk_tokens: usize,
    /// Allow prompts past the model's trained context (RoPE extrapolation, at the user's risk).
    allow_context_extension: bool,
    memory_limit: Option<u64>,
    /// Cache rows reserved beyond the prompt for decode steps.
    decode_reserve: usize,
    /// Per-operation times of one-token forwards since the last reset.
    profile: DecodeProfile,
}

/// The CPU engine with the CPU attention backend.
pub fn cpu_engine(model: impl Into<Arc<Model>>) -> CpuEngine<CpuBackend> {
    CpuEngine::new(model, CpuBackend::new())
}

impl<B: HostBackend> CpuEngine<B> {
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
            memory_limit: None,
            decode_reserve: DEFAULT_DECODE_RESERVE,
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
        self.prefill_observed(tokens, attention, progress, &mut NoObserver)
    }

    /// [`prefill`](Self::prefill) with `observer` shown every attention pass (one per KV-head
    /// group, host slices).
    pub fn prefill_observed(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
        observer: &mut dyn Observer<[f32], ModelError>,
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
        self.forward(tokens, attention, observer, progress)
    }

    /// Appends tokens after the cached ones (dense attention) and returns the last logits.
    pub fn extend(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(ModelError::Input("no tokens to append".into()));
        }
        self.check_context(self.cache.len() + tokens.len())?;
        self.cache.reserve(tokens.len())?;
        Ok(self.forward(tokens, &AttentionChoice::Dense, &mut NoObserver, &mut |_| {})?.0)
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
        let (hidden, (_, stats)) = ResidualExport::collect(
            |export| self.prefill_observed(tokens, attention, progress, export),
            || ModelError::Input("prefill kept no hidden states".into()),
        )?;
        Ok((hidden, stats))
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
        let mut capture = QkCapture::new(layer, head);
        let result = self.prefill_observed(tokens, &AttentionChoice::Dense, &mut |_| {}, &mut capture);
        // The forward stopped after the captured layer: later layers' cache rows are not filled.
        self.cache.set_len(0);
        result?;
        capture.take().ok_or_else(|| ModelError::Input("capture produced nothing".into()))
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

    /// One forward of `tokens` after the cached rows (the one walk of `crate::forward`).
    fn forward(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        observer: &mut dyn Observer<[f32], ModelError>,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, PrefillStats)> {
        let start = Instant::now();
        let cached = self.cache.len();
        let mut dev =
            CpuForward::new(&self.model, &self.backend, &self.rope, &mut self.cache, tokens, self.chunk_tokens)?;
        let logits = forward(&mut dev, attention, observer, progress)?;
        let (mut stats, prof) = dev.into_parts();
        self.cache.set_len(cached + tokens.len());
        stats.seconds = start.elapsed().as_secs_f64();
        if let Some(mut p) = prof {
            p.total_seconds = stats.seconds;
            self.profile.merge(&p);
        }
        Ok((logits, stats))
    }
}
