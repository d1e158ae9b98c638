//! What a prefill used and where its memory went: one record for every device.

const GIB: f64 = (1u64 << 30) as f64;

/// Wall time and device time per phase of one prefill (milliseconds unless named otherwise).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PrefillStats {
    pub tokens: usize,
    /// Wall time from the call to the logits on the host (time to first token).
    pub seconds: f64,
    pub embed_ms: f64,
    pub qkv_ms: f64,
    pub estimate_ms: f64,
    pub index_ms: f64,
    pub attention_ms: f64,
    pub o_proj_ms: f64,
    pub mlp_ms: f64,
    pub offload_ms: f64,
    pub lm_head_ms: f64,
    pub sparse_heads: usize,
    pub dense_heads: usize,
    pub index_tiles: usize,
    /// Causal `(row, key)` pairs the attention kernels computed, over every head of every layer
    /// (dense heads count all theirs), and the causal pairs there were (core's coverage
    /// accounting: the CPU engine from its indices, the GPU engine on the device from its own).
    pub kernel_entries: u64,
    pub causal_entries: u64,
    pub plan: MemoryPlan,
}

impl PrefillStats {
    /// A prefill of `tokens` tokens under `plan` before anything was timed.
    pub fn zero(tokens: usize, plan: MemoryPlan) -> Self {
        PrefillStats { tokens, plan, ..Default::default() }
    }

    /// Fraction of the causal attention the kernels computed, where the engine counted it.
    pub fn kernel_density(&self) -> Option<f64> {
        (self.causal_entries > 0).then(|| self.kernel_entries as f64 / self.causal_entries as f64)
    }

    /// Estimation + index + attention kernels.
    pub fn attention_total_ms(&self) -> f64 {
        self.estimate_ms + self.index_ms + self.attention_ms
    }
}

/// Where a prefill's memory goes. The GPU plans every field; the CPU fills `tokens` and
/// `device_needed_bytes` (host bytes) only.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MemoryPlan {
    pub tokens: usize,
    pub weights_bytes: u64,
    /// KV cache of one layer (prefill part), all KV heads.
    pub kv_layer_bytes: u64,
    /// Decode tail of all layers (always on the device).
    pub kv_tail_bytes: u64,
    pub kv_resident_layers: usize,
    pub kv_offloaded_layers: usize,
    /// Attention of all heads of a layer in one call (else one KV-head group at a time).
    pub per_layer_attention: bool,
    pub residual_bytes: u64,
    /// Attention buffers: per layer, Q and O of every head; per group, Q and O of one group plus
    /// the token-major output of all heads.
    pub group_bytes: u64,
    pub index_bytes: u64,
    pub chunk_bytes: u64,
    pub decode_bytes: u64,
    pub overhead_bytes: u64,
    /// Everything on the device with this placement.
    pub device_needed_bytes: u64,
    pub device_bytes: u64,
    /// Pinned host bytes for offloaded layers.
    pub host_bytes: u64,
}

impl MemoryPlan {
    pub fn describe(&self) -> String {
        let g = |b: u64| format!("{:.2} GiB", b as f64 / GIB);
        format!(
            "{} tokens: weights {}, KV cache {} per layer ({} layers on device, {} in pinned host memory, {}), residual {}, \
             attention Q/O {}, index {}, MLP chunk {}, overhead {} → device {} of {}",
            self.tokens,
            g(self.weights_bytes),
            g(self.kv_layer_bytes),
            self.kv_resident_layers,
            self.kv_offloaded_layers,
            g(self.host_bytes),
            g(self.residual_bytes),
            g(self.group_bytes),
            g(self.index_bytes),
            g(self.chunk_bytes),
            g(self.overhead_bytes),
            g(self.device_needed_bytes),
            g(self.device_bytes),
        )
    }
}
