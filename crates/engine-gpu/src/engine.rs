//! The GPU forward: prefill attention one KV-head group at a time (norm + fused QKV GEMM + RoPE
//! written head-major, K/V straight into the cache, MInference or dense attention through
//! `minference_cuda::layer_attention`, output gathered token-major), then the output projection and
//! the MLP in token chunks, each chunk's bf16 update (summed over a tensor-parallel group) added to
//! the f32 residual stream; the LM head on the last position; decode steps dense over the device
//! KV cache.

use crate::error::{EngineError, Result};
use crate::gemm::Gemm;
use crate::kv::KvCache;
use crate::ops::{dptr, Ops, DECODE_CHUNK};
use crate::plan::{plan_gpu_memory, AttentionGrouping, PlanInput};
use crate::precision::Precision;
use crate::shard::{Collective, TensorShard};
use crate::timing::{Phase, PhaseTimer};
use crate::weights::{weight_bytes, DeviceWeights};
use cudarc::driver::CudaSlice;
use minference_core::{AttnShape, HeadPattern};
use minference_cuda::{layer_attention, DeviceTensor, Gpu};
use minference_engine::rope::Rope;
use minference_engine::{AttentionChoice, PrefillProgress};
use minference_engine::{MemoryPlan, PrefillStats};
use minference_model::{Model, ModelConfig, ModelError};
use std::sync::Arc;
use std::time::Instant;

/// Tokens per chunk of norms, projections and MLP.
pub const DEFAULT_CHUNK_TOKENS: usize = 8192;
/// Decode tokens reserved in the KV cache after a prefill.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 256;
/// Largest query-heads-per-KV-head group the decode kernel handles.
const MAX_GROUP: usize = 64;

/// One attention call of a prefill, handed to a [`PassObserver`] right after it ran: the pass's
/// query heads `[heads, n, D]`, its KV heads `[kv_heads, n, D]` and its output `[heads, n, D]`,
/// all bf16 on the engine's device. Head ids are global (the model's numbering).
pub struct AttentionPass<'a> {
    pub layer: usize,
    pub first_head: usize,
    pub heads: usize,
    pub first_kv_head: usize,
    pub kv_heads: usize,
    pub tokens: usize,
    pub head_dim: usize,
    pub q: &'a DeviceTensor,
    pub k: &'a DeviceTensor,
    pub v: &'a DeviceTensor,
    pub o: &'a DeviceTensor,
}

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
}

/// Single-token buffers for decode steps, allocated after a prefill.
struct DecodeBufs {
    token: CudaSlice<i32>,
    /// f32 residual row.
    x: CudaSlice<f32>,
    normed: CudaSlice<u16>,
    normed_f32: CudaSlice<f32>,
    qkv: CudaSlice<u16>,
    q: CudaSlice<u16>,
    o: CudaSlice<u16>,
    gate_up: CudaSlice<u16>,
    act: CudaSlice<u16>,
    part: CudaSlice<f32>,
    logits: CudaSlice<f32>,
}

pub struct GpuEngine {
    gpu: Arc<Gpu>,
    /// This GPU's part of the model (the whole model on one GPU).
    cfg: ModelConfig,
    global_cfg: ModelConfig,
    shard: TensorShard,
    collective: Option<Box<dyn Collective>>,
    precision: Precision,
    random_weights: bool,
    ops: Ops,
    gemm: Gemm,
    weights: DeviceWeights,
    inv_freq: CudaSlice<f64>,
    chunk_tokens: usize,
    max_new_tokens: usize,
    allow_offload: bool,
    allow_context_extension: bool,
    memory_limit: Option<u64>,
    grouping: AttentionGrouping,
    cache: Option<KvCache>,
    decode: Option<DecodeBufs>,
    /// When set, the next prefill copies the final residual stream to the host (perplexity).
    keep_residual: bool,
    kept_residual: Option<Vec<f32>>,
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
            if let HeadPattern::VerticalSlash { k_v, k_s } = *h {
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
        let weights = DeviceWeights::random(&gpu, &ops, &local, rank_seed)?;
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
            gpu,
            cfg,
            global_cfg,
            shard,
            collective,
            precision,
            random_weights,
            ops,
            gemm,
            weights,
            inv_freq,
            chunk_tokens: DEFAULT_CHUNK_TOKENS,
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            allow_offload: true,
            allow_context_extension: false,
            memory_limit: None,
            grouping: AttentionGrouping::Auto,
            cache: None,
            decode: None,
            keep_residual: false,
            kept_residual: None,
        })
    }

    /// Adds a layer's bf16/f16 update `update[..count]` to the f32 residual at `x`, after summing
    /// this GPU's partial update with the group's (nothing to sum on one GPU).
    fn add_update(&self, x: u64, update: u64, count: usize) -> Result<()> {
        if let Some(c) = &self.collective {
            c.all_reduce_sum(&self.gpu, update, count, self.precision)?;
        }
        self.ops.add_to_residual(&self.gpu, x, update, count)
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
        self.keep_residual = true;
        let result = self.prefill(tokens, attention, progress);
        self.keep_residual = false;
        let (_, stats) = result?;
        let x = self
            .kept_residual
            .take()
            .ok_or_else(|| EngineError::Input("the prefill kept no residual stream".into()))?;
        Ok((x, stats))
    }

    /// [`prefill`](Self::prefill) with `observer` called after every attention call.
    pub fn prefill_observed(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
        mut observer: Option<&mut PassObserver<'_>>,
    ) -> Result<(Vec<f32>, PrefillStats)> {
        let start = Instant::now();
        if tokens.is_empty() {
            return Err(EngineError::Input("empty prompt".into()));
        }
        self.check_tokens(tokens, tokens.len())?;
        if let AttentionChoice::MInference(p) = attention {
            p.validate(&self.global_cfg)?;
        }
        self.reset()?;
        let plan = self.plan(tokens.len(), attention)?;
        let gpu = Arc::clone(&self.gpu);
        let cfg = self.cfg.clone();
        let (n, h, d, inter) = (tokens.len(), cfg.hidden, cfg.head_dim, cfg.intermediate);
        let (kvh, gs) = (cfg.kv_heads, cfg.heads / cfg.kv_heads);
        let slot = (gs + 2) * d;
        let chunk = self.chunk_tokens.min(n);

        let mut cache = KvCache::new(&gpu, cfg.layers, kvh, d, &plan, self.max_new_tokens, self.precision.dtype())?;
        let ids: Vec<i32> = tokens.iter().map(|t| *t as i32).collect();
        let tok_dev = gpu.upload(&ids)?;
        // The residual stream stays f32 (see add_bf16_to_f32 in kernels/model_ops.cu).
        let x = gpu.alloc::<f32>(n * h)?;
        // Heads per attention call: a whole layer, or one KV-head group.
        let per_layer = plan.per_layer_attention;
        let (passes, kv_per_pass) = if per_layer { (1, kvh) } else { (kvh, 1) };
        let heads_per_pass = kv_per_pass * gs;
        let q_buf = DeviceTensor::alloc(&gpu, self.precision.dtype(), heads_per_pass * n * d)?;
        let mut o_hm = DeviceTensor::alloc(&gpu, self.precision.dtype(), heads_per_pass * n * d)?;
        // Attention output of every head, token-major. The residual may only change after the
        // last group's Q/K/V were computed from it. Per layer, Q's buffer is free for it.
        let o_all = if per_layer { None } else { Some(gpu.alloc::<u16>(n * cfg.q_dim())?) };
        let o_all_p = o_all.as_ref().map_or(q_buf.device_ptr(&gpu), |o| dptr(&gpu, o));
        let normed = gpu.alloc::<u16>(chunk * h)?;
        let qkv = gpu.alloc::<u16>(chunk * kv_per_pass * slot)?;
        let gate_up = gpu.alloc::<u16>(chunk * 2 * inter)?;
        let act = gpu.alloc::<u16>(chunk * inter)?;
        let (xp, normed_p, qkv_p, gu_p, act_p) =
            (dptr(&gpu, &x), dptr(&gpu, &normed), dptr(&gpu, &qkv), dptr(&gpu, &gate_up), dptr(&gpu, &act));
        let inv_freq = dptr(&gpu, &self.inv_freq);

        let head0 = self.shard.first_head(&self.global_cfg);
        let kv0 = self.shard.kv_heads.start;
        let mut timer = PhaseTimer::default();
        let mut stats = PrefillStats::zero(n, plan.clone());
        let t = timer.start(&gpu)?;
        self.ops.embed(&gpu, dptr(&gpu, &tok_dev), dptr(&gpu, &self.weights.embed), xp, n, h)?;
        timer.stop(&gpu, Phase::Embed, t)?;

        for l in 0..cfg.layers {
            let lw = &self.weights.layers[l];
            let (w_qkv, w_o, w_gu, w_down) =
                (dptr(&gpu, &lw.w_qkv), dptr(&gpu, &lw.w_o), dptr(&gpu, &lw.w_gate_up), dptr(&gpu, &lw.w_down));
            let (attn_norm, mlp_norm) = (dptr(&gpu, &lw.attn_norm), dptr(&gpu, &lw.mlp_norm));
            let bias = lw.qkv_bias.as_ref().map(|b| dptr(&gpu, b));
            let patterns = attention.layer_patterns(l, n, 0);
            for pass in 0..passes {
                let qp = q_buf.device_ptr(&gpu);
                let t = timer.start(&gpu)?;
                for c0 in (0..n).step_by(chunk) {
                    let c = chunk.min(n - c0);
                    self.ops.rms_norm(&gpu, xp + (c0 * h * 4) as u64, attn_norm, normed_p, c, h, cfg.rms_eps)?;
                    // Fused QKV rows of this pass's KV groups (consecutive in the weight).
                    let w_rows = w_qkv + (pass * kv_per_pass * slot * h * 2) as u64;
                    let width = kv_per_pass * slot;
                    self.gemm.linear(&gpu, (normed_p, h), (w_rows, h), (qkv_p, width), c, h, width, false)?;
                    for j in 0..kv_per_pass {
                        let g = pass * kv_per_pass + j;
                        let (k_dst, v_dst) = cache.prefix_ptrs(&gpu, l, g)?;
                        let b = bias.map_or(0, |b| b + (g * slot * 4) as u64);
                        self.ops.qkv_rope_scatter(
                            &gpu,
                            (qkv_p + (j * slot * 2) as u64, width),
                            b,
                            inv_freq,
                            (qp + (j * gs * n * d * 2) as u64, k_dst, v_dst),
                            c,
                            gs,
                            d,
                            (n, c0, c0, c0),
                        )?;
                    }
                }
                timer.stop(&gpu, Phase::Qkv, t)?;

                let first = pass * heads_per_pass;
                let pass_patterns: Vec<HeadPattern> = match patterns {
                    Some(p) => p[head0 + first..head0 + first + heads_per_pass].to_vec(),
                    None => vec![HeadPattern::Dense; heads_per_pass],
                };
                let sparse = pass_patterns.iter().filter(|p| **p != HeadPattern::Dense).count();
                stats.sparse_heads += sparse;
                stats.dense_heads += heads_per_pass - sparse;
                let shape = AttnShape::single(heads_per_pass, kv_per_pass, d, n);
                let kv = if per_layer { cache.layer(l)? } else { cache.prefix(l, pass)? };
                let (lt, index) = layer_attention(&gpu, &shape, &q_buf, &kv.k, &kv.v, &pass_patterns, &mut o_hm)?;
                drop(index);
                if let Some(obs) = observer.as_mut() {
                    obs(
                        &gpu,
                        &AttentionPass {
                            layer: l,
                            first_head: head0 + first,
                            heads: heads_per_pass,
                            first_kv_head: kv0 + pass * kv_per_pass,
                            kv_heads: kv_per_pass,
                            tokens: n,
                            head_dim: d,
                            q: &q_buf,
                            k: &kv.k,
                            v: &kv.v,
                            o: &o_hm,
                        },
                    )?;
                }
                stats.estimate_ms += lt.estimate_ms as f64;
                stats.index_ms += lt.index_ms as f64;
                stats.attention_ms += lt.attention_ms as f64;
                stats.index_tiles += lt.index_tiles;

                let t = timer.start(&gpu)?;
                let dst = o_all_p + (first * d * 2) as u64;
                self.ops.heads_to_rows(&gpu, o_hm.device_ptr(&gpu), dst, n, heads_per_pass, d, cfg.q_dim())?;
                timer.stop(&gpu, Phase::OProj, t)?;
            }
            let t = timer.start(&gpu)?;
            // Per token chunk: this GPU's part of the output projection into `normed` (free
            // now), summed over the group, added to the residual.
            for c0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - c0);
                self.gemm.linear(
                    &gpu,
                    (o_all_p + (c0 * cfg.q_dim() * 2) as u64, cfg.q_dim()),
                    (w_o, cfg.q_dim()),
                    (normed_p, h),
                    c,
                    cfg.q_dim(),
                    h,
                    false,
                )?;
                self.add_update(xp + (c0 * h * 4) as u64, normed_p, c * h)?;
            }
            timer.stop(&gpu, Phase::OProj, t)?;
            if cache.is_offloaded(l) {
                let t = timer.start(&gpu)?;
                cache.offload(&gpu, l)?;
                timer.stop(&gpu, Phase::Offload, t)?;
            }
            let t = timer.start(&gpu)?;
            for c0 in (0..n).step_by(chunk) {
                let c = chunk.min(n - c0);
                let xc = xp + (c0 * h * 4) as u64;
                self.ops.rms_norm(&gpu, xc, mlp_norm, normed_p, c, h, cfg.rms_eps)?;
                self.gemm.linear(&gpu, (normed_p, h), (w_gu, h), (gu_p, 2 * inter), c, h, 2 * inter, false)?;
                self.ops.swiglu(&gpu, gu_p, act_p, c, inter)?;
                self.gemm.linear(&gpu, (act_p, inter), (w_down, inter), (normed_p, h), c, inter, h, false)?;
                self.add_update(xc, normed_p, c * h)?;
            }
            timer.stop(&gpu, Phase::Mlp, t)?;
            gpu.sync()?;
            timer.flush()?;
            progress(PrefillProgress { layer: l, layers: cfg.layers });
        }
        cache.len = n;
        if self.keep_residual {
            self.kept_residual = Some(gpu.download(&x, n * h)?);
        }

        let mut bufs = self.decode_buffers(n)?;
        let t = timer.start(&gpu)?;
        let logits = self.lm_head(xp + ((n - 1) * h * 4) as u64, &mut bufs)?;
        timer.stop(&gpu, Phase::LmHead, t)?;
        gpu.sync()?;
        timer.flush()?;
        // Free the prompt-sized buffers before decode.
        drop((x, q_buf, o_hm, o_all, normed, qkv, gate_up, act, tok_dev));
        self.cache = Some(cache);
        self.decode = Some(bufs);

        stats.embed_ms = timer.ms(Phase::Embed);
        stats.qkv_ms = timer.ms(Phase::Qkv);
        stats.o_proj_ms = timer.ms(Phase::OProj);
        stats.mlp_ms = timer.ms(Phase::Mlp);
        stats.offload_ms = timer.ms(Phase::Offload);
        stats.lm_head_ms = timer.ms(Phase::LmHead);
        stats.seconds = start.elapsed().as_secs_f64();
        Ok((logits, stats))
    }

    fn decode_buffers(&self, n: usize) -> Result<DecodeBufs> {
        let cfg = &self.cfg;
        let (h, d, gs, inter) = (cfg.hidden, cfg.head_dim, cfg.heads / cfg.kv_heads, cfg.intermediate);
        let splits = (n + self.max_new_tokens).div_ceil(DECODE_CHUNK);
        let g = &self.gpu;
        Ok(DecodeBufs {
            token: g.alloc::<i32>(1)?,
            x: g.alloc::<f32>(h)?,
            normed: g.alloc::<u16>(h)?,
            normed_f32: g.alloc::<f32>(h)?,
            qkv: g.alloc::<u16>((gs + 2) * d)?,
            q: g.alloc::<u16>(gs * d)?,
            o: g.alloc::<u16>(cfg.q_dim())?,
            gate_up: g.alloc::<u16>(2 * inter)?,
            act: g.alloc::<u16>(inter)?,
            part: g.alloc::<f32>(splits * gs * (d + 2))?,
            logits: g.alloc::<f32>(cfg.vocab)?,
        })
    }

    /// Final norm of the row at `row_ptr` and the LM head (f32 logits, copied to the host).
    fn lm_head(&self, row_ptr: u64, bufs: &mut DecodeBufs) -> Result<Vec<f32>> {
        let gpu = &self.gpu;
        let cfg = &self.cfg;
        let nf = dptr(gpu, &bufs.normed_f32);
        self.ops.rms_norm_f32out(gpu, row_ptr, dptr(gpu, &self.weights.final_norm), nf, cfg.hidden, cfg.rms_eps)?;
        let w = self.weights.lm_head.as_ref().unwrap_or(&self.weights.embed);
        self.ops.gemv_rows(gpu, dptr(gpu, w), nf, dptr(gpu, &bufs.logits), cfg.vocab, cfg.hidden)?;
        Ok(gpu.download(&bufs.logits, cfg.vocab)?)
    }

    /// Feeds one token after the cached ones (dense attention over the cache) and returns the
    /// next-token logits.
    pub fn decode_step(&mut self, token: u32) -> Result<Vec<f32>> {
        let (Some(mut cache), Some(mut bufs)) = (self.cache.take(), self.decode.take()) else {
            return Err(EngineError::Input("decode_step before prefill".into()));
        };
        let result = self.decode_inner(token, &mut cache, &mut bufs);
        self.cache = Some(cache);
        self.decode = Some(bufs);
        result
    }

    fn decode_inner(&mut self, token: u32, cache: &mut KvCache, bufs: &mut DecodeBufs) -> Result<Vec<f32>> {
        let pos = cache.len;
        self.check_tokens(&[token], pos + 1)?;
        if pos + 1 > cache.n_prefix + cache.tail_capacity {
            return Err(EngineError::Input(format!(
                "the KV cache holds {} decode tokens after the prompt (set_max_new_tokens before prefill)",
                cache.tail_capacity
            )));
        }
        let gpu = Arc::clone(&self.gpu);
        let cfg = self.cfg.clone();
        let (h, d, inter, kvh) = (cfg.hidden, cfg.head_dim, cfg.intermediate, cfg.kv_heads);
        let gs = cfg.heads / kvh;
        let slot = (gs + 2) * d;
        gpu.stream()
            .memcpy_htod(&[token as i32], &mut bufs.token)
            .map_err(crate::error::driver("uploading the token"))?;
        let (xp, np, qkvp, qp, op) = (
            dptr(&gpu, &bufs.x),
            dptr(&gpu, &bufs.normed),
            dptr(&gpu, &bufs.qkv),
            dptr(&gpu, &bufs.q),
            dptr(&gpu, &bufs.o),
        );
        let (gup, actp, partp) = (dptr(&gpu, &bufs.gate_up), dptr(&gpu, &bufs.act), dptr(&gpu, &bufs.part));
        let inv_freq = dptr(&gpu, &self.inv_freq);
        self.ops.embed(&gpu, dptr(&gpu, &bufs.token), dptr(&gpu, &self.weights.embed), xp, 1, h)?;
        let tail_row = pos - cache.n_prefix;
        for l in 0..cfg.layers {
            let lw = &self.weights.layers[l];
            let (w_qkv, w_o, w_gu, w_down) =
                (dptr(&gpu, &lw.w_qkv), dptr(&gpu, &lw.w_o), dptr(&gpu, &lw.w_gate_up), dptr(&gpu, &lw.w_down));
            let bias = lw.qkv_bias.as_ref().map(|b| dptr(&gpu, b));
            self.ops.rms_norm(&gpu, xp, dptr(&gpu, &lw.attn_norm), np, 1, h, cfg.rms_eps)?;
            for g in 0..kvh {
                self.gemm.linear(
                    &gpu,
                    (np, h),
                    (w_qkv + (g * slot * h * 2) as u64, h),
                    (qkvp, slot),
                    1,
                    h,
                    slot,
                    false,
                )?;
                let (k_tail, v_tail) = cache.tail_ptrs(&gpu, l, g);
                let b = bias.map_or(0, |b| b + (g * slot * 4) as u64);
                self.ops.qkv_rope_scatter(
                    &gpu,
                    (qkvp, slot),
                    b,
                    inv_freq,
                    (qp, k_tail, v_tail),
                    1,
                    gs,
                    d,
                    (1, 0, tail_row, pos),
                )?;
                if cache.is_offloaded(l) {
                    cache.stage(&gpu, l, g)?;
                }
                let (k_pre, v_pre) = cache.prefix_ptrs(&gpu, l, g)?;
                let ptrs = (k_pre, v_pre, k_tail, v_tail);
                let out = op + (g * gs * d * 2) as u64;
                self.ops.decode_attention(&gpu, qp, ptrs, cache.n_prefix, pos + 1, gs, d, partp, out)?;
            }
            self.gemm.linear(&gpu, (op, cfg.q_dim()), (w_o, cfg.q_dim()), (np, h), 1, cfg.q_dim(), h, false)?;
            self.add_update(xp, np, h)?;
            self.ops.rms_norm(&gpu, xp, dptr(&gpu, &lw.mlp_norm), np, 1, h, cfg.rms_eps)?;
            self.gemm.linear(&gpu, (np, h), (w_gu, h), (gup, 2 * inter), 1, h, 2 * inter, false)?;
            self.ops.swiglu(&gpu, gup, actp, 1, inter)?;
            self.gemm.linear(&gpu, (actp, inter), (w_down, inter), (np, h), 1, inter, h, false)?;
            self.add_update(xp, np, h)?;
        }
        let logits = self.lm_head(xp, bufs)?;
        cache.len = pos + 1;
        Ok(logits)
    }
}
