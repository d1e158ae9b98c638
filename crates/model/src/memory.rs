//! Preflight memory plan for long-prompt prefill on a device: bytes for weights, KV cache and
//! per-layer working buffers, deciding between a resident KV cache, host offload, or refusal.
//!
//! Assumed execution (what makes 1M tokens fit): nothing N×N; attention one KV-head group at a
//! time (Q and O of that group only, `o_proj` accumulated into the residual per group); norms and
//! MLP in token chunks; LM head on the last position; the residual stream in the device dtype.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use serde::Serialize;

const GIB: f64 = (1u64 << 30) as f64;

#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    /// Bytes per element on the device (2 = bf16).
    pub dtype_bytes: u64,
    /// Tokens per MLP / norm chunk.
    pub chunk_tokens: u64,
    /// VS budget `(k_v, k_s)` bounding the sparse index of one head (spec §8 item 30).
    pub vs_budget: (u64, u64),
    /// Fixed allowance for the CUDA context, GEMM workspaces and allocator slack.
    pub overhead_bytes: u64,
    /// Host memory available for an offloaded KV cache; `None` = do not offload.
    pub host_bytes: Option<u64>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            dtype_bytes: 2,
            chunk_tokens: 16_384,
            vs_budget: (1000, 6096),
            overhead_bytes: 1 << 30,
            host_bytes: Some(u64::MAX),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KvPlacement {
    /// All layers' K/V stay on the device.
    Device,
    /// K/V live in pinned host memory; two layers' worth are staged on the device (double buffer).
    HostOffload,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryPlan {
    pub tokens: u64,
    pub weights_bytes: u64,
    /// Whole KV cache (all layers), wherever it lives.
    pub kv_cache_bytes: u64,
    /// Part of the KV cache held on the device.
    pub kv_device_bytes: u64,
    /// Residual stream `[N, hidden]`.
    pub residual_bytes: u64,
    /// Q and O of one KV-head group.
    pub attention_bytes: u64,
    /// Sparse index of one KV-head group (upper bound).
    pub index_bytes: u64,
    /// Norm + MLP buffers of one token chunk.
    pub chunk_bytes: u64,
    pub overhead_bytes: u64,
    pub device_total_bytes: u64,
    pub device_bytes: u64,
    pub host_bytes: u64,
    pub kv: KvPlacement,
}

impl MemoryPlan {
    pub fn describe(&self) -> String {
        let g = |b: u64| format!("{:.2} GiB", b as f64 / GIB);
        format!(
            "{} tokens: weights {}, KV cache {} ({}), residual {}, attention group {}, index {}, MLP chunk {}, overhead {} → device {} of {}{}",
            self.tokens,
            g(self.weights_bytes),
            g(self.kv_cache_bytes),
            match self.kv {
                KvPlacement::Device => "on device".to_string(),
                KvPlacement::HostOffload => format!("offloaded to pinned host, {} staged on device", g(self.kv_device_bytes)),
            },
            g(self.residual_bytes),
            g(self.attention_bytes),
            g(self.index_bytes),
            g(self.chunk_bytes),
            g(self.overhead_bytes),
            g(self.device_total_bytes),
            g(self.device_bytes),
            if self.host_bytes > 0 { format!(", host {}", g(self.host_bytes)) } else { String::new() },
        )
    }
}

/// [`plan_memory_with`] with default options (bf16, 16K-token chunks, offload allowed).
pub fn plan_memory(cfg: &ModelConfig, n_tokens: usize, device_bytes: u64) -> Result<MemoryPlan> {
    plan_memory_with(cfg, n_tokens, device_bytes, &PlanOptions::default())
}

pub fn plan_memory_with(
    cfg: &ModelConfig,
    n_tokens: usize,
    device_bytes: u64,
    opt: &PlanOptions,
) -> Result<MemoryPlan> {
    cfg.validate()?;
    let n = n_tokens as u64;
    let e = opt.dtype_bytes;
    let overflow = || ModelError::OutOfMemory(format!("byte counts for {n_tokens} tokens overflow"));
    let mul = |a: u64, b: u64| a.checked_mul(b).ok_or_else(overflow);
    let (layers, hidden, d) = (cfg.layers as u64, cfg.hidden as u64, cfg.head_dim as u64);
    let (kv_heads, group) = (cfg.kv_heads as u64, (cfg.heads / cfg.kv_heads) as u64);

    let weights_bytes = mul(cfg.parameters(), e)?;
    let kv_layer = mul(mul(2 * kv_heads * d, n)?, e)?;
    let kv_cache_bytes = mul(kv_layer, layers)?;
    let residual_bytes = mul(mul(n, hidden)?, e)?;
    let attention_bytes = mul(mul(2 * group * d, n)?, e)?;
    let row_blocks = n.div_ceil(minference_core::TILE as u64);
    let index_bytes = mul(mul(group * 4, row_blocks)?, opt.vs_budget.0 + opt.vs_budget.1)?;
    let chunk = opt.chunk_tokens.min(n.max(1));
    let chunk_bytes =
        mul(chunk, (2 * hidden + 3 * cfg.intermediate as u64 + (cfg.q_dim() + 2 * cfg.kv_dim()) as u64) * e)?;
    let working = [weights_bytes, residual_bytes, attention_bytes, index_bytes, chunk_bytes, opt.overhead_bytes]
        .iter()
        .try_fold(0u64, |acc, &b| acc.checked_add(b))
        .ok_or_else(overflow)?;

    let base = MemoryPlan {
        tokens: n,
        weights_bytes,
        kv_cache_bytes,
        kv_device_bytes: kv_cache_bytes,
        residual_bytes,
        attention_bytes,
        index_bytes,
        chunk_bytes,
        overhead_bytes: opt.overhead_bytes,
        device_total_bytes: working.checked_add(kv_cache_bytes).ok_or_else(overflow)?,
        device_bytes,
        host_bytes: 0,
        kv: KvPlacement::Device,
    };
    if base.device_total_bytes <= device_bytes {
        return Ok(base);
    }
    let staged = mul(kv_layer, 2.min(layers))?;
    let offload_total = working.checked_add(staged).ok_or_else(overflow)?;
    let gib = |b: u64| b as f64 / GIB;
    match opt.host_bytes {
        Some(host) if offload_total <= device_bytes && kv_cache_bytes <= host => Ok(MemoryPlan {
            kv_device_bytes: staged,
            device_total_bytes: offload_total,
            host_bytes: kv_cache_bytes,
            kv: KvPlacement::HostOffload,
            ..base
        }),
        Some(host) if offload_total <= device_bytes => Err(ModelError::OutOfMemory(format!(
            "{n_tokens} tokens need {:.1} GiB on the device with the KV cache resident (have {:.1} GiB), and offloading \
             the {:.1} GiB KV cache needs more host memory than the {:.1} GiB available",
            gib(base.device_total_bytes),
            gib(device_bytes),
            gib(kv_cache_bytes),
            gib(host)
        ))),
        _ => Err(ModelError::OutOfMemory(format!(
            "{n_tokens} tokens need {:.1} GiB on the device ({:.1} GiB even with the KV cache offloaded{}); the device has \
             {:.1} GiB. Weights {:.1} GiB, residual stream {:.1} GiB, KV cache {:.1} GiB",
            gib(base.device_total_bytes),
            gib(offload_total),
            if opt.host_bytes.is_none() { ", which is disabled" } else { "" },
            gib(device_bytes),
            gib(weights_bytes),
            gib(residual_bytes),
            gib(kv_cache_bytes)
        ))),
    }
}

/// Bytes the CPU engine allocates to prefill `n_tokens` (f32 everywhere): KV cache (with the decode
/// reserve), Q/O of all heads of a layer, the residual stream, one chunk of layer buffers and one
/// KV group's attention output. Attention backends' own scratch space comes on top.
pub fn cpu_prefill_bytes(cfg: &ModelConfig, n_tokens: usize, chunk_tokens: usize, decode_reserve: usize) -> u64 {
    let (n, d) = (n_tokens as u64, cfg.head_dim as u64);
    let chunk = chunk_tokens.min(n_tokens) as u64;
    let kv = 2 * cfg.layers as u64 * cfg.kv_heads as u64 * (n + decode_reserve as u64) * d;
    let q = cfg.heads as u64 * n * d;
    let residual = n * cfg.hidden as u64;
    let layer_chunk =
        chunk * (3 * cfg.hidden as u64 + (cfg.q_dim() + 2 * cfg.kv_dim()) as u64 + 2 * cfg.intermediate as u64);
    let group_out = (cfg.heads / cfg.kv_heads) as u64 * n * d;
    4 * (kv + q + residual + layer_chunk + group_out)
}

/// `MemAvailable` of this machine (Linux), if readable.
pub fn available_host_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A zeroed f32 buffer, or an out-of-memory error naming `what` (instead of aborting).
pub(crate) fn zeroed(len: usize, what: &str) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        ModelError::OutOfMemory(format!("cannot allocate {:.2} GiB for {what}", len as f64 * 4.0 / GIB))
    })?;
    v.resize(len, 0.0);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_estimate_grows_linearly_with_tokens() {
        let cfg = ModelConfig::named_shape("smollm2-135m").unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (cpu_prefill_bytes(&cfg, 10_000, 512, 0), cpu_prefill_bytes(&cfg, 20_000, 512, 0));
        let c = cpu_prefill_bytes(&cfg, 40_000, 512, 0);
        assert_eq!(c - b, 2 * (b - a));
        // KV cache alone: 30 layers × 2 × 3 heads × 64 × 4 bytes per token.
        assert!(a >= 30 * 2 * 3 * 64 * 4 * 10_000);
    }

    #[test]
    fn absurd_allocation_is_an_error_not_an_abort() {
        assert!(matches!(zeroed(usize::MAX / 8, "test"), Err(ModelError::OutOfMemory(_))));
    }

    const GB80: u64 = 80 * 1_000_000_000;

    #[test]
    fn qwen_7b_million_tokens_fits_an_h100_with_offload() {
        let cfg = ModelConfig::named_shape("qwen2.5-7b").unwrap_or_else(|e| panic!("{e}"));
        let plan = plan_memory(&cfg, 1 << 20, GB80).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.kv, KvPlacement::HostOffload);
        assert!(plan.device_total_bytes <= GB80);
        // 28 layers × 2 × 4 heads × 128 × 2 bytes per token.
        assert_eq!(plan.kv_cache_bytes, 28 * 2 * 4 * 128 * 2 * (1 << 20));
    }

    #[test]
    fn short_prompt_keeps_kv_on_device() {
        let cfg = ModelConfig::named_shape("qwen2.5-7b").unwrap_or_else(|e| panic!("{e}"));
        let plan = plan_memory(&cfg, 32_768, GB80).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.kv, KvPlacement::Device);
    }

    #[test]
    fn refuses_with_a_message_when_nothing_fits() {
        let cfg = ModelConfig::named_shape("llama-3-8b").unwrap_or_else(|e| panic!("{e}"));
        let err = plan_memory(&cfg, 1 << 20, 8 << 30).expect_err("8 GiB cannot hold an 8B model");
        assert!(matches!(err, ModelError::OutOfMemory(_)));
        assert!(err.to_string().contains("GiB"));
        let no_offload = PlanOptions { host_bytes: None, ..PlanOptions::default() };
        assert!(plan_memory_with(&cfg, 1 << 20, GB80, &no_offload).is_err());
    }

    #[test]
    fn huge_token_counts_do_not_overflow_silently() {
        let cfg = ModelConfig::named_shape("llama-3-8b").unwrap_or_else(|e| panic!("{e}"));
        assert!(plan_memory(&cfg, usize::MAX / 2, u64::MAX).is_err());
    }
}
