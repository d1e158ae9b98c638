//! Device memory plan of a GPU prefill: what the group-wise forward allocates for a prompt of N
//! tokens, and how many layers' KV cache stay resident (the rest go to pinned host memory).
//!
//! The forward keeps on the device: the weights, the residual stream `[N, hidden]`, the attention
//! buffers, the sparse index, the MLP buffers of one token chunk, and the KV cache
//! (`2 × kv_heads × N × D` per layer, plus the decode tail). Attention runs per layer (Q and O of
//! every head, one `layer_attention` call) when everything fits with the KV cache resident, else
//! per KV-head group (Q and O of one group + the token-major output of all heads), which is what
//! lets layers be offloaded. Nothing is N × N and nothing is N × intermediate.

use minference_engine::MemoryPlan;

use crate::error::{EngineError, Result};
use crate::weights::weight_bytes;
use minference_model::ModelConfig;

const GIB: f64 = (1u64 << 30) as f64;

/// How prefill attention is batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionGrouping {
    /// Per layer when it fits with the KV cache resident, else per KV-head group.
    Auto,
    /// All heads of a layer in one `layer_attention` call (fewer launches and index syncs).
    PerLayer,
    /// One KV-head group at a time (least memory; required for KV offload).
    PerGroup,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlanInput {
    pub grouping: AttentionGrouping,
    pub tokens: usize,
    /// Decode tail reserved per layer.
    pub max_new_tokens: usize,
    pub chunk_tokens: usize,
    /// VS budget bounding one head's sparse index.
    pub vs_budget: (usize, usize),
    /// Device bytes available to the engine (free memory + what the engine already holds).
    pub device_bytes: u64,
    /// Whether KV layers may live in pinned host memory.
    pub allow_offload: bool,
    /// Context, allocator slack, cuBLASLt workspace, attention scratch.
    pub overhead_bytes: u64,
}

impl PlanInput {
    pub fn new(tokens: usize, device_bytes: u64) -> Self {
        PlanInput {
            grouping: AttentionGrouping::Auto,
            tokens,
            max_new_tokens: 256,
            chunk_tokens: crate::engine::DEFAULT_CHUNK_TOKENS,
            vs_budget: (1000, 6096),
            device_bytes,
            allow_offload: true,
            overhead_bytes: 1 << 30,
        }
    }
}

/// Plans a prefill of `input.tokens` tokens; refuses with the bytes needed and available when even
/// full offload does not fit.
pub fn plan_gpu_memory(cfg: &ModelConfig, input: &PlanInput) -> Result<MemoryPlan> {
    cfg.validate()?;
    if input.tokens == 0 {
        return Err(EngineError::Input("empty prompt".into()));
    }
    let overflow = || EngineError::OutOfMemory(format!("byte counts for {} tokens overflow", input.tokens));
    let n = input.tokens as u64;
    let (d, kvh, layers) = (cfg.head_dim as u64, cfg.kv_heads as u64, cfg.layers as u64);
    let gs = (cfg.heads / cfg.kv_heads) as u64;
    let (h, inter) = (cfg.hidden as u64, cfg.intermediate as u64);
    let mul = |a: u64, b: u64| a.checked_mul(b).ok_or_else(overflow);

    let weights_bytes = weight_bytes(cfg);
    let kv_layer_bytes = mul(mul(2 * kvh * d * 2, n)?, 1)?;
    let kv_tail_bytes = layers * 2 * kvh * d * 2 * input.max_new_tokens.max(1) as u64;
    // f32: the residual stream keeps full precision (bf16 updates are added to it).
    let residual_bytes = mul(n, h * 4)?;
    let row_blocks = n.div_ceil(64);
    let (kv_budget, ks_budget) = (input.vs_budget.0 as u64, input.vs_budget.1 as u64);
    let chunk = input.chunk_tokens.min(input.tokens).max(1) as u64;
    let q_dim = cfg.q_dim() as u64;
    // (attention buffers, index, chunk buffers) for per-layer or per-group attention.
    let sizes = |per_layer: bool| -> Result<(u64, u64, u64)> {
        let heads = if per_layer { gs * kvh } else { gs };
        let attention = if per_layer { mul(n, 2 * q_dim * 2)? } else { mul(n, 2 * gs * d * 2 + q_dim * 2)? };
        // Per (head, 64-row block): up to k_v columns and about k_s / 64 slash tiles (+ estimate scratch).
        let index = mul(mul(heads * row_blocks, kv_budget + ks_budget / 16 + 8)?, 4 * 2)? + mul(n, heads * 16)?;
        let qkv_width = if per_layer { kvh * (gs + 2) * d } else { (gs + 2) * d };
        let chunk_bytes = chunk * 2 * (h + qkv_width + 3 * inter);
        Ok((attention, index, chunk_bytes))
    };
    let decode_partials = mul(4 * gs * (d + 2), n.div_ceil(crate::ops::DECODE_CHUNK as u64))?;
    let decode_bytes =
        2 * (h * 2 + (gs + 2) * d + 3 * inter + cfg.q_dim() as u64) + 4 * (cfg.vocab as u64 + h) + decode_partials;
    let total = |per_layer: bool| -> Result<(u64, (u64, u64, u64))> {
        let (attention, index, chunk_bytes) = sizes(per_layer)?;
        let fixed = [
            weights_bytes,
            kv_tail_bytes,
            residual_bytes,
            attention,
            index,
            chunk_bytes,
            decode_bytes,
            input.overhead_bytes,
        ]
        .iter()
        .try_fold(0u64, |a, &b| a.checked_add(b))
        .ok_or_else(overflow)?;
        Ok((fixed, (attention, index, chunk_bytes)))
    };
    let plan_for = |per_layer: bool| -> Result<(u64, MemoryPlan)> {
        let (fixed, (group_bytes, index_bytes, chunk_bytes)) = total(per_layer)?;
        let all_resident = fixed.checked_add(mul(kv_layer_bytes, layers)?).ok_or_else(overflow)?;
        Ok((
            fixed,
            MemoryPlan {
                tokens: input.tokens,
                weights_bytes,
                kv_layer_bytes,
                kv_tail_bytes,
                kv_resident_layers: cfg.layers,
                kv_offloaded_layers: 0,
                per_layer_attention: per_layer,
                residual_bytes,
                group_bytes,
                index_bytes,
                chunk_bytes,
                decode_bytes,
                overhead_bytes: input.overhead_bytes,
                device_needed_bytes: all_resident,
                device_bytes: input.device_bytes,
                host_bytes: 0,
            },
        ))
    };
    if input.grouping != AttentionGrouping::PerGroup {
        let (_, layer_plan) = plan_for(true)?;
        if layer_plan.device_needed_bytes <= input.device_bytes {
            return Ok(layer_plan);
        }
        if input.grouping == AttentionGrouping::PerLayer {
            return Err(EngineError::OutOfMemory(format!(
                "per-layer attention over {} tokens needs {:.2} GiB on the device but {:.2} GiB are available",
                input.tokens,
                layer_plan.device_needed_bytes as f64 / GIB,
                input.device_bytes as f64 / GIB
            )));
        }
    }
    let (fixed, base) = plan_for(false)?;
    let (all_resident, group_bytes, index_bytes, chunk_bytes) =
        (base.device_needed_bytes, base.group_bytes, base.index_bytes, base.chunk_bytes);
    if all_resident <= input.device_bytes {
        return Ok(base);
    }
    // Offloaded layers share one device staging layer.
    let with_staging = fixed.checked_add(kv_layer_bytes).ok_or_else(overflow)?;
    let gib = |b: u64| b as f64 / GIB;
    if !input.allow_offload || with_staging > input.device_bytes {
        return Err(EngineError::OutOfMemory(format!(
            "a prefill of {} tokens needs {:.2} GiB on the device with the KV cache resident{} but {:.2} GiB are available \
             (weights {:.2} GiB, KV cache {:.2} GiB, residual stream {:.2} GiB, attention Q/O {:.2} GiB, index {:.2} GiB, \
             MLP chunk {:.2} GiB, overhead {:.2} GiB)",
            input.tokens,
            gib(all_resident),
            if input.allow_offload { format!(" ({:.2} GiB with every KV layer offloaded to pinned host memory)", gib(with_staging)) } else { String::new() },
            gib(input.device_bytes),
            gib(weights_bytes),
            gib(kv_layer_bytes * layers),
            gib(residual_bytes),
            gib(group_bytes),
            gib(index_bytes),
            gib(chunk_bytes),
            gib(input.overhead_bytes),
        )));
    }
    let room = input.device_bytes - with_staging;
    let resident = ((room / kv_layer_bytes.max(1)) as usize).min(cfg.layers.saturating_sub(1));
    let offloaded = cfg.layers - resident;
    Ok(MemoryPlan {
        kv_resident_layers: resident,
        kv_offloaded_layers: offloaded,
        device_needed_bytes: with_staging + resident as u64 * kv_layer_bytes,
        host_bytes: offloaded as u64 * kv_layer_bytes,
        ..base
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen() -> ModelConfig {
        ModelConfig::named_shape("qwen2.5-7b").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Free memory of an 80 GB H100 after the CUDA context.
    const H100_FREE: u64 = 84_500_000_000;

    #[test]
    fn qwen_32k_is_fully_resident() {
        let p = plan_gpu_memory(&qwen(), &PlanInput::new(32 << 10, H100_FREE)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.kv_offloaded_layers, 0);
        assert!(p.device_needed_bytes <= H100_FREE);
    }

    #[test]
    fn qwen_1m_fits_an_h100_with_a_few_layers_offloaded() {
        let p = plan_gpu_memory(&qwen(), &PlanInput::new(1 << 20, H100_FREE)).unwrap_or_else(|e| panic!("{e}"));
        // 1M × 2 × 4 × 128 × 2 B per layer.
        assert_eq!(p.kv_layer_bytes, 2 * 4 * 128 * 2 * (1 << 20));
        assert!(p.kv_offloaded_layers >= 1 && p.kv_offloaded_layers < 28, "{}", p.describe());
        assert!(p.device_needed_bytes <= H100_FREE);
        assert_eq!(p.kv_resident_layers + p.kv_offloaded_layers, 28);
    }

    #[test]
    fn refuses_with_bytes_needed_and_available() {
        let err = plan_gpu_memory(&qwen(), &PlanInput::new(1 << 20, 16 << 30)).expect_err("16 GiB cannot hold it");
        let msg = err.to_string();
        assert!(msg.contains("needs") && msg.contains("available") && msg.contains("GiB"), "{msg}");
        let mut no_offload = PlanInput::new(1 << 20, H100_FREE);
        no_offload.allow_offload = false;
        assert!(plan_gpu_memory(&qwen(), &no_offload).is_err());
    }

    #[test]
    fn more_memory_never_offloads_more() {
        let cfg = qwen();
        let mut last = usize::MAX;
        for gb in [40u64, 60, 80, 100, 140] {
            let p = plan_gpu_memory(&cfg, &PlanInput::new(1 << 20, gb * 1_000_000_000));
            if let Ok(p) = p {
                assert!(p.kv_offloaded_layers <= last);
                last = p.kv_offloaded_layers;
            }
        }
        assert_eq!(last, 0, "140 GB holds the whole 1M-token cache");
    }

    #[test]
    fn per_layer_attention_when_it_fits_and_per_group_for_offload() {
        let cfg = qwen();
        let ok = |input: &PlanInput| plan_gpu_memory(&cfg, input).unwrap_or_else(|e| panic!("{e}"));
        let short = ok(&PlanInput::new(128 << 10, H100_FREE));
        assert!(short.per_layer_attention);
        let long = ok(&PlanInput::new(1 << 20, H100_FREE));
        assert!(!long.per_layer_attention && long.kv_offloaded_layers > 0);
        let mut forced = PlanInput::new(128 << 10, H100_FREE);
        forced.grouping = AttentionGrouping::PerGroup;
        let grouped = ok(&forced);
        assert!(!grouped.per_layer_attention);
        assert!(grouped.device_needed_bytes < short.device_needed_bytes);
        let mut must = PlanInput::new(1 << 20, H100_FREE);
        must.grouping = AttentionGrouping::PerLayer;
        assert!(plan_gpu_memory(&cfg, &must).is_err(), "per-layer at 1M cannot fit 80 GB");
    }

    #[test]
    fn huge_prompts_do_not_overflow() {
        assert!(plan_gpu_memory(&qwen(), &PlanInput::new(usize::MAX / 4, u64::MAX)).is_err());
    }
}
