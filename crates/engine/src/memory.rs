//! Host memory of a CPU prefill: the bytes it will allocate, what the machine has, and buffers
//! that fail with an error instead of aborting. (The GPU plan is `minference_engine_gpu::plan`.)

use minference_model::ModelConfig;
use minference_model::{ModelError, Result};

const GIB: f64 = (1u64 << 30) as f64;

/// Bytes the CPU engine allocates to prefill `n_tokens`: f16 KV cache (with the decode reserve),
/// one layer of f32 K/V, Q/O of all heads of a layer, the residual stream, one chunk of layer buffers and one
/// KV group's attention output. Attention backends' own scratch space comes on top.
pub fn cpu_prefill_bytes(cfg: &ModelConfig, n_tokens: usize, chunk_tokens: usize, decode_reserve: usize) -> u64 {
    let (n, d) = (n_tokens as u64, cfg.head_dim as u64);
    let chunk = chunk_tokens.min(n_tokens) as u64;
    // The cache is f16 (2 bytes, counted as half an f32); one layer of it is also held in f32.
    let kv = cfg.layers as u64 * cfg.kv_heads as u64 * (n + decode_reserve as u64) * d;
    let kv_layer = 2 * cfg.kv_heads as u64 * n * d;
    let q = cfg.heads as u64 * n * d;
    let residual = n * cfg.hidden as u64;
    let layer_chunk =
        chunk * (3 * cfg.hidden as u64 + (cfg.q_dim() + 2 * cfg.kv_dim()) as u64 + 2 * cfg.intermediate as u64);
    let group_out = (cfg.heads / cfg.kv_heads) as u64 * n * d;
    4 * (kv + kv_layer + q + residual + layer_chunk + group_out)
}

/// `MemAvailable` of this machine (Linux), if readable.
pub fn available_host_bytes() -> Option<u64> {
    meminfo_bytes("MemAvailable:")
}

/// `MemTotal` of this machine (Linux), if readable.
pub fn total_host_bytes() -> Option<u64> {
    meminfo_bytes("MemTotal:")
}

fn meminfo_bytes(key: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with(key))?;
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
        // KV cache alone: 30 layers × 2 × 3 heads × 64 × 2 bytes (f16) per token.
        assert!(a >= 30 * 2 * 3 * 64 * 2 * 10_000);
    }

    #[test]
    fn absurd_allocation_is_an_error_not_an_abort() {
        assert!(matches!(zeroed(usize::MAX / 8, "test"), Err(ModelError::OutOfMemory(_))));
    }
}
