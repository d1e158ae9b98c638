//! The GPU engine: weights, kernels and the KV cache of one GPU (or of one shard of a
//! tensor-parallel group), running the one forward of `minference_engine::forward` through its
//! operations in `device.rs`: prefill attention per layer or per KV-head group (norm + fused QKV
//! GEMM + RoPE written head-major, K/V straight into the cache, MInference or dense attention
//! through `minference_cuda::layer_attention`, output gathered token-major), the output projection
//! and the MLP in token chunks, each chunk's bf16 update (summed over a tensor-parallel group)
//! added to the f32 residual stream; the LM head on the last position; decode steps dense over the
//! device KV cache.

mod decode;
use decode::DecodeBufs;
mod device;
mod prefill;

use crate::error::{EngineError, Result};
use crate::gemm::Gemm;
use crate::kv::KvCache;
use crate::ops::{Ops, DECODE_CHUNK};
use crate::plan::{plan_gpu_memory, AttentionGrouping, PlanInput};
use crate::precision::Precision;
use crate::shard::{Collective, TensorShard};
use crate::view::{DeviceSlice, DeviceView};
use crate::weights::{weight_bytes, DeviceWeights};
use cudarc::driver::CudaSlice;
use minference_core::{AttnShape, DType, HeadPattern};
use minference_cuda::{layer_attention, CudaBackend, DeviceTensor, Gpu};
use minference_engine::rope::Rope;
use minference_engine::{AttentionChoice, PrefillProgress};
use minference_engine::{MemoryPlan, PrefillStats, ResidualExport};
use minference_model::{Model, ModelConfig, ModelError, StructuredAttention};
use std::sync::Arc;
use std::time::Instant;

/// Tokens per chunk of norms, projections and MLP.
pub const DEFAULT_CHUNK_TOKENS: usize = 8192;
/// Decode tokens reserved in the KV cache after a prefill.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 256;
/// Largest query-heads-per-KV-head group the decode kernel handles.
const MAX_GROUP: usize = 64;

/// One attention call of a prefill as a [`PassObserver`] sees it: Q `[heads, n, D]`, K/V
/// `[kv_heads, n, D]` and the output, in the storage precision on the engine's device.
pub type AttentionPass<'a> = minference_engine::AttentionPass<'a, DeviceTensor>;

/// Sees every attention call of a prefill (search and capture tools use it); an error ends the
/// prefill with that error.
pub type PassObserver<'o> = dyn FnMut(&Gpu, &AttentionPass) -> Result<()> + 'o;

/// Where and how an engine runs: its part of the model (`None` = all of it), the collective that
/// sums a tensor-parallel group's partial results, and the storage precision.
#[derive(Default)]
pub struct EngineSetup {
    pub shard: Option<TensorShard>,
    pub collective: Option<Box<dyn Collective>>,
    pub precision: Precision,
    /// Random weights only: give attention the structured workload's shape
    /// (`minference_model::structured`).
    pub structured: Option<StructuredAttention>,
}

pub struct GpuEngine {
    gpu: Arc<Gpu>,
    /// Prefill attention goes through the CUDA backend's operations (`layer_attention`).
    attention: CudaBackend,
    /// This GPU's part of the model (the whole model on one GPU).
    cfg: ModelConfig,
    global_cfg: ModelConfig,
    shard: TensorShard,
    collective: Option<Box<dyn Collective>>,
    precision: Precision,
    random_weights: bool,
    ops: Ops,
    gemm: Gemm,
    /// Shared with the sibling engines (`sibling`): the weights are only read after upload.
    weights: Arc<DeviceWeights>,
    inv_freq: CudaSlice<f64>,
    chunk_tokens: usize,
    max_new_tokens: usize,
    allow_offload: bool,
    allow_context_extension: bool,
    memory_limit: Option<u64>,
    grouping: AttentionGrouping,
    cache: Option<KvCache>,
    decode: Option<DecodeBufs>,
}

fn check_config(cfg: &ModelConfig) -> Result<()> {
    cfg.validate()?;
    let gs = cfg.heads / cfg.kv_heads;
    if ![64, 128].contains(&cfg.head_dim) {
        return Err(EngineError::Input(format!("head_dim {} is not supported on the GPU (64 or 128)", cfg.head_dim)));
    }
    if gs > MAX_GROUP || !cfg.heads.is_multiple_of(cfg.kv_heads) {
        return Err(EngineError::Input(format!("{} query heads per KV head is not supported on the GPU", gs)));
    }
    Ok(())
}

/// Largest VS budget of a plan (sizes the index in the memory plan).
fn vs_budget(choice: &AttentionChoice) -> (usize, usize) {
    let mut best = (1000, 6096);
    if let AttentionChoice::MInference(p) = choice {
        for h in p.patterns.iter().flatten() {
            // An adaptive head's index is at most that of its maxima.
            if let HeadPattern::VerticalSlash { k_v, k_s } | HeadPattern::AdaptiveVs { max_v: k_v, max_s: k_s, .. } = *h
            {
                best = (best.0.max(k_v), best.1.max(k_s));
            }
        }
    }
    best
}

impl GpuEngine {
    /// Uploads `model`'s weights to the device in bf16.
    pub fn new(gpu: Arc<Gpu>, model: Arc<Model>) -> Result<Self> {
        Self::new_with(gpu, model, EngineSetup::default())
    }

    /// Uploads `setup.shard`'s part of `model` in `setup.precision`.
    pub fn new_with(gpu: Arc<Gpu>, model: Arc<Model>, setup: EngineSetup) -> Result<Self> {
        let cfg = model.config().clone();
        check_config(&cfg)?;
        let shard = setup.shard.clone().unwrap_or_else(|| TensorShard::whole(&cfg));
        let ops = Ops::load(&gpu, setup.precision)?;
        let weights = DeviceWeights::upload(&gpu, &cfg, model.weights(), &shard, setup.precision)?;
        Self::assemble(gpu, cfg, model.has_random_weights(), ops, weights, shard, setup)
    }

    /// A model of a named shape (`ModelConfig::NAMED_SHAPES`) with random weights made on the device.
    pub fn random(gpu: Arc<Gpu>, shape: &str, seed: u64) -> Result<Self> {
        Self::random_with_config(gpu, ModelConfig::named_shape(shape)?, seed)
    }

    pub fn random_with_config(gpu: Arc<Gpu>, cfg: ModelConfig, seed: u64) -> Result<Self> {
        Self::random_with(gpu, cfg, seed, EngineSetup::default())
    }

    /// Random weights of `cfg`'s shape for `setup.shard` (each rank of a group draws its own
    /// weights: the group is a random model of the same shape, not the single-GPU one of the same
    /// seed).
    pub fn random_with(gpu: Arc<Gpu>, cfg: ModelConfig, seed: u64, setup: EngineSetup) -> Result<Self> {
        check_config(&cfg)?;
        let shard = setup.shard.clone().unwrap_or_else(|| TensorShard::whole(&cfg));
        let local = shard.local_config(&cfg);
        let needed = weight_bytes(&local);
        let (free, _) = gpu.mem_info()?;
        if needed > free as u64 {
            return Err(EngineError::OutOfMemory(format!(
                "the {} weights need {:.2} GiB in {}{}; the device has {:.2} GiB free",
                cfg.name,
                needed as f64 / (1u64 << 30) as f64,
                setup.precision.name(),
                if shard.is_whole() { String::new() } else { format!(" on each of {} GPUs", shard.world) },
                free as f64 / (1u64 << 30) as f64
            )));
        }
        let ops = Ops::load(&gpu, setup.precision)?;
        let rank_seed = seed ^ (shard.rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut weights = DeviceWeights::random(&gpu, &ops, &local, rank_seed)?;
        if let Some(workload) = &setup.structured {
            // One design for the whole model (every rank the same attention structure).
            let design = workload.design(&cfg, seed)?;
            crate::structured::apply_design(&gpu, &cfg, &shard, &design, setup.precision, &mut weights)?;
        }
        Self::assemble(gpu, cfg, true, ops, weights, shard, setup)
    }

    fn assemble(
        gpu: Arc<Gpu>,
        global_cfg: ModelConfig,
        random_weights: bool,
        ops: Ops,
        weights: DeviceWeights,
        shard: TensorShard,
        setup: EngineSetup,
    ) -> Result<Self> {
        let EngineSetup { collective, precision, .. } = setup;
        if !shard.is_whole() && collective.is_none() {
            return Err(EngineError::Input(format!(
                "rank {} of {} GPUs needs a collective to sum partial results",
                shard.rank, shard.world
            )));
        }
        let cfg = shard.local_config(&global_cfg);
        check_config(&cfg)?;
        let gemm = Gemm::new(&gpu, precision)?;
        let inv_freq = gpu.upload(Rope::new(&cfg).inv_freq())?;
        Ok(GpuEngine {
            attention: CudaBackend::of(Arc::clone(&gpu)),
            gpu,
            cfg,
            global_cfg,
            shard,
            collective,
            precision,
            random_weights,
            ops,
            gemm,
            weights: Arc::new(weights),
            inv_freq,
            chunk_tokens: DEFAULT_CHUNK_TOKENS,
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            allow_offload: true,
            allow_context_extension: false,
            memory_limit: None,
            grouping: AttentionGrouping::Auto,
            cache: None,
            decode: None,
        })
    }

    /// A second engine on the same GPU that shares this one's weights (no second upload) and has its
    /// own kernels handle, GEMM workspace and KV cache: the server runs one request per engine and
    /// interleaves their decode steps. Settings (chunking, token cap, offload, context extension,
    /// memory limit, grouping) are copied. A tensor-parallel shard has no sibling: its collective
    /// pairs it with the other ranks.
    pub fn sibling(&self) -> Result<GpuEngine> {
        if self.collective.is_some() {
            return Err(EngineError::Input(
                "a tensor-parallel rank cannot open a sibling engine (one request at a time per group)".into(),
            ));
        }
        Ok(GpuEngine {
            gpu: Arc::clone(&self.gpu),
            attention: self.attention.clone(),
            cfg: self.cfg.clone(),
            global_cfg: self.global_cfg.clone(),
            shard: self.shard.clone(),
            collective: None,
            precision: self.precision,
            random_weights: self.random_weights,
            ops: Ops::load(&self.gpu, self.precision)?,
            gemm: Gemm::new(&self.gpu, self.precision)?,
            weights: Arc::clone(&self.weights),
            inv_freq: self.gpu.upload(Rope::new(&self.cfg).inv_freq())?,
            chunk_tokens: self.chunk_tokens,
            max_new_tokens: self.max_new_tokens,
            allow_offload: self.allow_offload,
            allow_context_extension: self.allow_context_extension,
            memory_limit: self.memory_limit,
            grouping: self.grouping,
            cache: None,
            decode: None,
        })
    }

    /// Adds a layer's bf16/f16 update rows to the f32 residual rows `x`, after summing this GPU's
    /// partial update with the group's (nothing to sum on one GPU).
    fn add_update(&self, x: DeviceView, update: DeviceView) -> Result<()> {
        if let Some(c) = &self.collective {
            c.all_reduce_sum(&self.gpu, update.ptr(), update.span(), self.precision)?;
        }
        self.ops.add_to_residual(&self.gpu, x, update)
    }

    /// The whole model's config (on a tensor-parallel shard too).
    pub fn config(&self) -> &ModelConfig {
        &self.global_cfg
    }
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }
    /// Every output of a random-weight engine must say "random weights".
    pub fn has_random_weights(&self) -> bool {
        self.random_weights
    }
    pub fn set_chunk_tokens(&mut self, n: usize) {
        self.chunk_tokens = n.max(1);
    }
    /// Decode tokens reserved in the KV cache by the next prefill.
    pub fn set_max_new_tokens(&mut self, n: usize) {
        self.max_new_tokens = n.max(1);
    }
    pub fn set_allow_offload(&mut self, allow: bool) {
        self.allow_offload = allow;
    }
    pub fn set_allow_context_extension(&mut self, allow: bool) {
        self.allow_context_extension = allow;
    }
    /// Per-layer or per-group attention calls (default: per layer when it fits).
    pub fn set_attention_grouping(&mut self, grouping: AttentionGrouping) {
        self.grouping = grouping;
    }
    /// Caps the device bytes the memory plan may use (weights included); tests use it to force
    /// KV offload on a large GPU.
    pub fn set_memory_limit(&mut self, bytes: Option<u64>) {
        self.memory_limit = bytes;
    }
    /// Tokens in the KV cache (prompt + decoded).
    pub fn cached_tokens(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len)
    }

    /// Frees the KV cache and decode buffers.
    pub fn reset(&mut self) -> Result<()> {
        self.gpu.sync()?;
        self.cache = None;
        self.decode = None;
        self.gpu.sync()?;
        Ok(())
    }

    /// The memory plan a prefill of `tokens` tokens would use now.
    pub fn plan(&self, tokens: usize, attention: &AttentionChoice) -> Result<MemoryPlan> {
        let (free, _) = self.gpu.mem_info()?;
        // The weights are already resident: count them as available, the plan adds them back.
        let available = free as u64 + weight_bytes(&self.cfg);
        let mut input = PlanInput::new(tokens, self.memory_limit.map_or(available, |m| m.min(available)));
        input.max_new_tokens = self.max_new_tokens;
        input.chunk_tokens = self.chunk_tokens;
        input.vs_budget = vs_budget(attention);
        input.allow_offload = self.allow_offload;
        input.grouping = self.grouping;
        plan_gpu_memory(&self.cfg, &input)
    }

    fn check_tokens(&self, tokens: &[u32], total: usize) -> Result<()> {
        if let Some(bad) = tokens.iter().find(|t| **t as usize >= self.cfg.vocab) {
            return Err(EngineError::Input(format!("token id {bad} outside the vocabulary of {}", self.cfg.vocab)));
        }
        if total > self.cfg.context_length && !self.allow_context_extension {
            return Err(ModelError::ContextOverflow { tokens: total, context: self.cfg.context_length }.into());
        }
        if total > i32::MAX as usize {
            return Err(EngineError::Input(format!("{total} tokens exceed the kernels' int32 range")));
        }
        Ok(())
    }

    /// Runs a fresh prompt (the old cache is freed first) and returns the last position's logits.
    pub fn prefill(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, PrefillStats)> {
        self.prefill_observed(tokens, attention, progress, None)
    }

    /// [`prefill`](Self::prefill) that also returns the residual stream after the last layer
    /// (`[tokens, hidden]` f32, before the final norm), for scoring every position on the host.
    pub fn prefill_residual(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, PrefillStats)> {
        let (residual, (_, stats)) = ResidualExport::collect(
            |export| self.prefill_with(tokens, attention, progress, export),
            || EngineError::Input("the prefill kept no residual stream".into()),
        )?;
        Ok((residual, stats))
    }
}
