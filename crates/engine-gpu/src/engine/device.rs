//! The GPU's operations of one forward call ([`Device`]): a prefill (prompt-sized buffers, attention
//! through `minference_cuda::layer_attention` per layer or per KV-head group, timed per phase) or a
//! decode step (the engine's one-row buffers, dense decode attention per KV head over the cache).
//! Both share the row operations: RMSNorm, cuBLASLt linears, SwiGLU and the f32 residual add
//! (after the tensor-parallel all-reduce).

use super::*;
use crate::kernel_args::{DecodeKv, RopeDst};
use crate::timing::PhaseTimer;
use cudarc::driver::CudaEvent;
use minference_engine::{AttentionPass, Device, Norm, Observer, Phase, Walk};
use std::ops::Range;

/// A prefill's own buffers (freed when it ends) and bookkeeping.
pub(super) struct PrefillState {
    tok_dev: CudaSlice<i32>,
    x: CudaSlice<f32>,
    /// Q of one pass, `[heads_per_pass, n, D]`; per layer it also holds the token-major output.
    q_buf: DeviceTensor,
    o_hm: DeviceTensor,
    /// Token-major attention output of every head (per-group passes only).
    _o_all: Option<CudaSlice<u16>>,
    _normed: CudaSlice<u16>,
    _qkv: CudaSlice<u16>,
    _gate_up: CudaSlice<u16>,
    _act: CudaSlice<u16>,
    per_layer: bool,
    heads_per_pass: usize,
    /// Q of one KV-head group: `gs` heads of `[n, D]`.
    q_groups: DeviceView,
    timer: PhaseTimer,
    open: Option<CudaEvent>,
    stats: PrefillStats,
    /// Made for the LM head, kept for the decode steps.
    decode: Option<DecodeBufs>,
}

enum Kind<'e> {
    Prefill(Box<PrefillState>),
    Decode { bufs: &'e mut DecodeBufs, pos: usize },
}

/// One forward call on the GPU.
pub(super) struct GpuForward<'e> {
    eng: &'e mut GpuEngine,
    gpu: Arc<Gpu>,
    cache: &'e mut KvCache,
    walk: Walk,
    kv_per_pass: usize,
    /// f32 residual rows.
    x: DeviceView,
    /// Chunk rows: normed input (and the update of o_proj / down), gate/up, SwiGLU output.
    normed: DeviceView,
    gate_up: DeviceView,
    act: DeviceView,
    /// Fused Q/K/V rows of one pass's KV heads.
    qkv: DeviceView,
    /// Token-major attention output, rows of `q_dim`.
    o_rows: DeviceView,
    kind: Kind<'e>,
}

impl<'e> GpuForward<'e> {
    /// A prefill of `tokens` into `cache` (allocated for it) with the memory plan's grouping.
    pub(super) fn prefill(
        eng: &'e mut GpuEngine,
        cache: &'e mut KvCache,
        tokens: &[u32],
        plan: &MemoryPlan,
    ) -> Result<Self> {
        let gpu = Arc::clone(&eng.gpu);
        let cfg = &eng.cfg;
        let (n, h, d, inter) = (tokens.len(), cfg.hidden, cfg.head_dim, cfg.intermediate);
        let (kvh, gs) = (cfg.kv_heads, cfg.heads / cfg.kv_heads);
        let slot = (gs + 2) * d;
        let chunk = eng.chunk_tokens.min(n);
        let ids: Vec<i32> = tokens.iter().map(|t| *t as i32).collect();
        let tok_dev = gpu.upload(&ids)?;
        // The residual stream stays f32 (see add_bf16_to_f32 in crates/cuda/kernels/model_ops.cu).
        let x = gpu.alloc::<f32>(n * h)?;
        // Heads per attention call: a whole layer, or one KV-head group.
        let per_layer = plan.per_layer_attention;
        let (passes, kv_per_pass) = if per_layer { (1, kvh) } else { (kvh, 1) };
        let heads_per_pass = kv_per_pass * gs;
        let dtype = eng.precision.dtype();
        let q_buf = DeviceTensor::alloc(&gpu, dtype, heads_per_pass * n * d)?;
        let o_hm = DeviceTensor::alloc(&gpu, dtype, heads_per_pass * n * d)?;
        // Attention output of every head, token-major. The residual may only change after the
        // last group's Q/K/V were computed from it. Per layer, Q's buffer is free for it.
        let o_all = if per_layer { None } else { Some(gpu.alloc::<u16>(n * cfg.q_dim())?) };
        let o_rows = match &o_all {
            Some(o) => DeviceView::of_slice(&gpu, o, dtype, cfg.q_dim()),
            None => DeviceView::of_tensor(&gpu, &q_buf, cfg.q_dim()),
        };
        let normed = gpu.alloc::<u16>(chunk * h)?;
        let qkv = gpu.alloc::<u16>(chunk * kv_per_pass * slot)?;
        let gate_up = gpu.alloc::<u16>(chunk * 2 * inter)?;
        let act = gpu.alloc::<u16>(chunk * inter)?;
        let walk = Walk { tokens: n, cached: 0, chunk, passes, layers: cfg.layers };
        Ok(GpuForward {
            x: DeviceView::of_slice(&gpu, &x, DType::F32, h),
            normed: DeviceView::of_slice(&gpu, &normed, dtype, h),
            gate_up: DeviceView::of_slice(&gpu, &gate_up, dtype, 2 * inter),
            act: DeviceView::of_slice(&gpu, &act, dtype, inter),
            qkv: DeviceView::of_slice(&gpu, &qkv, dtype, kv_per_pass * slot),
            o_rows,
            kind: Kind::Prefill(Box::new(PrefillState {
                q_groups: DeviceView::of_tensor(&gpu, &q_buf, gs * n * d),
                tok_dev,
                x,
                q_buf,
                o_hm,
                _o_all: o_all,
                _normed: normed,
                _qkv: qkv,
                _gate_up: gate_up,
                _act: act,
                per_layer,
                heads_per_pass,
                timer: PhaseTimer::default(),
                open: None,
                stats: PrefillStats::zero(n, plan.clone()),
                decode: None,
            })),
            eng,
            gpu,
            cache,
            walk,
            kv_per_pass,
        })
    }

    /// A decode step at position `pos` (its token already in `bufs`): one pass per KV head.
    pub(super) fn decode(eng: &'e mut GpuEngine, cache: &'e mut KvCache, bufs: &'e mut DecodeBufs, pos: usize) -> Self {
        let gpu = Arc::clone(&eng.gpu);
        let cfg = &eng.cfg;
        let dtype = eng.precision.dtype();
        let slot = (cfg.heads / cfg.kv_heads + 2) * cfg.head_dim;
        let walk = Walk { tokens: 1, cached: pos, chunk: 1, passes: cfg.kv_heads, layers: cfg.layers };
        GpuForward {
            x: DeviceView::of_slice(&gpu, &bufs.x, DType::F32, cfg.hidden),
            normed: DeviceView::of_slice(&gpu, &bufs.normed, dtype, cfg.hidden),
            gate_up: DeviceView::of_slice(&gpu, &bufs.gate_up, dtype, 2 * cfg.intermediate),
            act: DeviceView::of_slice(&gpu, &bufs.act, dtype, cfg.intermediate),
            qkv: DeviceView::of_slice(&gpu, &bufs.qkv, dtype, slot),
            o_rows: DeviceView::of_slice(&gpu, &bufs.o, dtype, cfg.q_dim()),
            kind: Kind::Decode { bufs, pos },
            eng,
            gpu,
            cache,
            walk,
            kv_per_pass: 1,
        }
    }

    /// A prefill's stats and the decode buffers its LM head made (prompt buffers are freed here).
    pub(super) fn into_prefill(self) -> Result<(PrefillStats, DecodeBufs)> {
        let Kind::Prefill(p) = self.kind else {
            return Err(EngineError::Input("a decode step has no prefill results".into()));
        };
        let PrefillState { mut stats, timer, decode, .. } = *p;
        let bufs = decode.ok_or_else(|| EngineError::Input("the prefill made no LM-head buffers".into()))?;
        stats.embed_ms = timer.ms(Phase::Embed);
        stats.qkv_ms = timer.ms(Phase::Qkv);
        stats.o_proj_ms = timer.ms(Phase::OProj);
        stats.mlp_ms = timer.ms(Phase::Mlp);
        stats.offload_ms = timer.ms(Phase::Offload);
        stats.lm_head_ms = timer.ms(Phase::LmHead);
        Ok((stats, bufs))
    }

    /// A weight matrix as rows of its input dimension `cols`.
    fn weight(&self, w: &CudaSlice<u16>, cols: usize) -> DeviceView {
        DeviceView::of_slice(&self.gpu, w, self.eng.precision.dtype(), cols)
    }

    fn slot(&self) -> usize {
        (self.eng.cfg.heads / self.eng.cfg.kv_heads + 2) * self.eng.cfg.head_dim
    }

    /// Prefill attention of pass `pass` (see `prefill.rs` for the plan of passes).
    fn prefill_attention(
        &mut self,
        layer: usize,
        pass: usize,
        patterns: Option<&[HeadPattern]>,
        observer: &mut dyn Observer<DeviceTensor, EngineError>,
    ) -> Result<()> {
        let Kind::Prefill(p) = &mut self.kind else { return Ok(()) };
        let (gpu, cfg, kv_per_pass) = (&self.gpu, &self.eng.cfg, self.kv_per_pass);
        let (n, d, heads_per_pass) = (self.walk.tokens, cfg.head_dim, p.heads_per_pass);
        let head0 = self.eng.shard.first_head(&self.eng.global_cfg);
        let kv0 = self.eng.shard.kv_heads.start;
        let first = pass * heads_per_pass;
        let pass_patterns: Vec<HeadPattern> = match patterns {
            Some(pats) => pats[head0 + first..head0 + first + heads_per_pass].to_vec(),
            None => vec![HeadPattern::Dense; heads_per_pass],
        };
        let sparse = pass_patterns.iter().filter(|p| **p != HeadPattern::Dense).count();
        p.stats.sparse_heads += sparse;
        p.stats.dense_heads += heads_per_pass - sparse;
        let shape = AttnShape::single(heads_per_pass, kv_per_pass, d, n);
        let kv = if p.per_layer { self.cache.layer(layer)? } else { self.cache.prefix(layer, pass)? };
        let (lt, index) =
            layer_attention(&self.eng.attention, &shape, &p.q_buf, &kv.k, &kv.v, &pass_patterns, &mut p.o_hm)?;
        drop(index);
        observer.attention(&AttentionPass {
            layer,
            first_head: head0 + first,
            heads: heads_per_pass,
            first_kv_head: kv0 + pass * kv_per_pass,
            kv_heads: kv_per_pass,
            tokens: n,
            kv_tokens: n,
            head_dim: d,
            q: &p.q_buf,
            k: &kv.k,
            v: &kv.v,
            o: &p.o_hm,
            patterns: &pass_patterns,
            index: None,
        })?;
        p.stats.estimate_ms += lt.estimate_ms as f64;
        p.stats.index_ms += lt.index_ms as f64;
        p.stats.attention_ms += lt.attention_ms as f64;
        p.stats.index_tiles += lt.index_tiles;
        p.stats.kernel_entries += lt.kernel_entries;
        p.stats.causal_entries += lt.causal_entries;

        let t = p.timer.start(gpu)?;
        let src = DeviceView::of_tensor(gpu, &p.o_hm, n * d);
        self.eng.ops.heads_to_rows(gpu, src, self.o_rows.cols_from(first * d), d)?;
        p.timer.stop(gpu, Phase::OProj, t)
    }
}

impl Device for GpuForward<'_> {
    type Error = EngineError;
    type Tensor = DeviceTensor;

    fn walk(&self) -> Walk {
        self.walk
    }

    fn embed(&mut self) -> Result<()> {
        let tokens = match &self.kind {
            Kind::Prefill(p) => DeviceSlice::of(&self.gpu, &p.tok_dev),
            Kind::Decode { bufs, .. } => DeviceSlice::of(&self.gpu, &bufs.token),
        };
        let dtype = self.eng.precision.dtype();
        let table = DeviceView::of_slice(&self.gpu, &self.eng.weights.embed, dtype, self.eng.cfg.hidden);
        self.eng.ops.embed(&self.gpu, tokens, table, self.x)
    }

    fn rms_norm(&mut self, layer: usize, norm: Norm, rows: Range<usize>) -> Result<()> {
        let lw = &self.eng.weights.layers[layer];
        let w = match norm {
            Norm::Attention => DeviceSlice::of(&self.gpu, &lw.attn_norm),
            Norm::Mlp => DeviceSlice::of(&self.gpu, &lw.mlp_norm),
        };
        let (x, out) = (self.x.rows(rows.start, rows.len()), self.normed.rows(0, rows.len()));
        self.eng.ops.rms_norm(&self.gpu, x, w, out, self.eng.cfg.rms_eps)
    }

    fn qkv_rope(&mut self, layer: usize, pass: usize, rows: Range<usize>) -> Result<()> {
        let gpu = &self.gpu;
        let slot = self.slot();
        let (h, d, gs) = (self.eng.cfg.hidden, self.eng.cfg.head_dim, self.eng.cfg.heads / self.eng.cfg.kv_heads);
        let (c0, c) = (rows.start, rows.len());
        let lw = &self.eng.weights.layers[layer];
        let w_qkv = DeviceView::of_slice(gpu, &lw.w_qkv, self.eng.precision.dtype(), h);
        // One KV-head group's biases per row.
        let bias = lw.qkv_bias.as_ref().map(|b| DeviceView::of_slice(gpu, b, DType::F32, slot));
        // Fused QKV rows of this pass's KV groups (consecutive in the weight).
        let width = self.kv_per_pass * slot;
        let w_rows = w_qkv.rows(pass * width, width);
        self.eng.gemm.linear(gpu, self.normed.rows(0, c), w_rows, self.qkv.rows(0, c), false)?;
        let inv_freq = DeviceSlice::of(gpu, &self.eng.inv_freq);
        let dtype = self.eng.precision.dtype();
        for j in 0..self.kv_per_pass {
            let g = pass * self.kv_per_pass + j;
            let b = bias.map(|b| b.rows(g, 1));
            // Prefill: Q head-major for attention (gs heads of `[n, D]`), K/V into the prompt
            // cache; decode: the one row of each head, K/V into the tail.
            let dst = match &self.kind {
                Kind::Prefill(p) => {
                    let q = p.q_groups.rows(j, 1).as_rows_of(self.walk.tokens * d);
                    let (k, v) = self.cache.prefix_views(gpu, layer, g)?;
                    RopeDst { q, k, v, q_row0: c0, kv_row0: c0, pos0: c0 }
                }
                Kind::Decode { bufs, pos } => {
                    let q = DeviceView::of_slice(gpu, &bufs.q, dtype, d);
                    let (k, v) = self.cache.tail_views(gpu, layer, g);
                    RopeDst { q, k, v, q_row0: 0, kv_row0: pos - self.cache.n_prefix, pos0: *pos }
                }
            };
            let src = self.qkv.rows(0, c).cols_from(j * slot);
            self.eng.ops.qkv_rope_scatter(gpu, src, b, inv_freq, dst, gs)?;
        }
        Ok(())
    }

    fn attention(
        &mut self,
        layer: usize,
        pass: usize,
        patterns: Option<&[HeadPattern]>,
        observer: &mut dyn Observer<DeviceTensor, EngineError>,
    ) -> Result<()> {
        if matches!(self.kind, Kind::Prefill(_)) {
            return self.prefill_attention(layer, pass, patterns, observer);
        }
        let Kind::Decode { bufs, pos } = &self.kind else { return Ok(()) };
        let (gpu, cfg, g) = (&self.gpu, &self.eng.cfg, pass);
        let (gs, d) = (cfg.heads / cfg.kv_heads, cfg.head_dim);
        if self.cache.is_offloaded(layer) {
            self.cache.stage(gpu, layer, g)?;
        }
        let (k_tail, v_tail) = self.cache.tail_views(gpu, layer, g);
        let (k_pre, v_pre) = self.cache.prefix_views(gpu, layer, g)?;
        let dtype = self.eng.precision.dtype();
        // The attention output row, one block of `gs` heads per KV head.
        let out = DeviceView::of_slice(gpu, &bufs.o, dtype, gs * d).rows(g, 1);
        let (q, part) = (DeviceView::of_slice(gpu, &bufs.q, dtype, d), DeviceSlice::of(gpu, &bufs.part));
        let kv = DecodeKv { k_pre, v_pre, k_tail, v_tail };
        self.eng.ops.decode_attention(gpu, q, kv, *pos + 1, part, out)
    }

    fn o_proj(&mut self, layer: usize, rows: Range<usize>) -> Result<()> {
        let w_o = self.weight(&self.eng.weights.layers[layer].w_o, self.eng.cfg.q_dim());
        let o = self.o_rows.rows(rows.start, rows.len());
        self.eng.gemm.linear(&self.gpu, o, w_o, self.normed.rows(0, rows.len()), false)
    }

    fn add_update(&mut self, rows: Range<usize>) -> Result<()> {
        self.eng.add_update(self.x.rows(rows.start, rows.len()), self.normed.rows(0, rows.len()))
    }

    fn after_attention(&mut self, layer: usize) -> Result<()> {
        let Kind::Prefill(p) = &mut self.kind else { return Ok(()) };
        if self.cache.is_offloaded(layer) {
            let t = p.timer.start(&self.gpu)?;
            self.cache.offload(&self.gpu, layer)?;
            p.timer.stop(&self.gpu, Phase::Offload, t)?;
        }
        Ok(())
    }

    fn gate_up(&mut self, layer: usize, rows: Range<usize>) -> Result<()> {
        let w_gu = self.weight(&self.eng.weights.layers[layer].w_gate_up, self.eng.cfg.hidden);
        let (x, y) = (self.normed.rows(0, rows.len()), self.gate_up.rows(0, rows.len()));
        self.eng.gemm.linear(&self.gpu, x, w_gu, y, false)
    }

    fn swiglu(&mut self, rows: Range<usize>) -> Result<()> {
        let (gate_up, act) = (self.gate_up.rows(0, rows.len()), self.act.rows(0, rows.len()));
        self.eng.ops.swiglu(&self.gpu, gate_up, act)
    }

    fn down(&mut self, layer: usize, rows: Range<usize>) -> Result<()> {
        let w_down = self.weight(&self.eng.weights.layers[layer].w_down, self.eng.cfg.intermediate);
        let (x, y) = (self.act.rows(0, rows.len()), self.normed.rows(0, rows.len()));
        self.eng.gemm.linear(&self.gpu, x, w_down, y, false)
    }

    fn end_layer(&mut self, _layer: usize) -> Result<()> {
        let Kind::Prefill(p) = &mut self.kind else { return Ok(()) };
        self.gpu.sync()?;
        p.timer.flush()
    }

    fn phase_start(&mut self, _phase: Phase) -> Result<()> {
        if let Kind::Prefill(p) = &mut self.kind {
            p.open = Some(p.timer.start(&self.gpu)?);
        }
        Ok(())
    }

    fn phase_stop(&mut self, phase: Phase) -> Result<()> {
        if let Kind::Prefill(p) = &mut self.kind {
            if let Some(t) = p.open.take() {
                p.timer.stop(&self.gpu, phase, t)?;
            }
        }
        Ok(())
    }

    fn lm_head(&mut self) -> Result<Vec<f32>> {
        let last = self.x.rows(self.walk.tokens - 1, 1);
        match &mut self.kind {
            Kind::Decode { bufs, .. } => self.eng.lm_head(last, bufs),
            Kind::Prefill(p) => {
                let mut bufs = self.eng.decode_buffers(self.walk.tokens)?;
                let t = p.timer.start(&self.gpu)?;
                let logits = self.eng.lm_head(last, &mut bufs)?;
                p.timer.stop(&self.gpu, Phase::LmHead, t)?;
                p.decode = Some(bufs);
                Ok(logits)
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        let Kind::Prefill(p) = &mut self.kind else { return Ok(()) };
        self.gpu.sync()?;
        p.timer.flush()
    }

    fn residual(&mut self) -> Result<Vec<f32>> {
        let h = self.eng.cfg.hidden;
        Ok(match &self.kind {
            Kind::Prefill(p) => self.gpu.download(&p.x, self.walk.tokens * h)?,
            Kind::Decode { bufs, .. } => self.gpu.download(&bufs.x, h)?,
        })
    }
}
