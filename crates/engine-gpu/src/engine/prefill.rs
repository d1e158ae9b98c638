//! The prefill: per layer, norm + fused QKV + RoPE into the KV cache, MInference or dense attention
//! per layer or per KV-head group, then the O-projection and the MLP in token chunks added to the f32
//! residual (summed over a tensor-parallel group first); the LM head on the last position.

use super::*;

impl GpuEngine {
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
        // The residual stream stays f32 (see add_bf16_to_f32 in crates/cuda/kernels/model_ops.cu).
        let x = gpu.alloc::<f32>(n * h)?;
        // Heads per attention call: a whole layer, or one KV-head group.
        let per_layer = plan.per_layer_attention;
        let (passes, kv_per_pass) = if per_layer { (1, kvh) } else { (kvh, 1) };
        let heads_per_pass = kv_per_pass * gs;
        let dtype = self.precision.dtype();
        let q_buf = DeviceTensor::alloc(&gpu, dtype, heads_per_pass * n * d)?;
        let mut o_hm = DeviceTensor::alloc(&gpu, dtype, heads_per_pass * n * d)?;
        // Attention output of every head, token-major. The residual may only change after the
        // last group's Q/K/V were computed from it. Per layer, Q's buffer is free for it.
        let o_all = if per_layer { None } else { Some(gpu.alloc::<u16>(n * cfg.q_dim())?) };
        let o_all_v = match &o_all {
            Some(o) => DeviceView::of_slice(&gpu, o, dtype, cfg.q_dim()),
            None => DeviceView::of_tensor(&gpu, &q_buf, cfg.q_dim()),
        };
        let normed = gpu.alloc::<u16>(chunk * h)?;
        let qkv = gpu.alloc::<u16>(chunk * kv_per_pass * slot)?;
        let gate_up = gpu.alloc::<u16>(chunk * 2 * inter)?;
        let act = gpu.alloc::<u16>(chunk * inter)?;
        let (normed_p, gu_p, act_p) = (dptr(&gpu, &normed), dptr(&gpu, &gate_up), dptr(&gpu, &act));
        let x_rows = DeviceView::of_slice(&gpu, &x, DType::F32, h);
        let xp = x_rows.ptr();
        let qkv_rows = DeviceView::of_slice(&gpu, &qkv, dtype, kv_per_pass * slot);
        // Q of one KV-head group: `gs` heads of `[n, D]`.
        let q_groups = DeviceView::of_tensor(&gpu, &q_buf, gs * n * d);
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
            let w_qkv = DeviceView::of_slice(&gpu, &lw.w_qkv, dtype, h);
            let (w_o, w_gu, w_down) = (dptr(&gpu, &lw.w_o), dptr(&gpu, &lw.w_gate_up), dptr(&gpu, &lw.w_down));
            let (attn_norm, mlp_norm) = (dptr(&gpu, &lw.attn_norm), dptr(&gpu, &lw.mlp_norm));
            // One KV-head group's biases per row.
            let bias = lw.qkv_bias.as_ref().map(|b| DeviceView::of_slice(&gpu, b, DType::F32, slot));
            let patterns = attention.layer_patterns(l, n, 0);
            for pass in 0..passes {
                let t = timer.start(&gpu)?;
                for c0 in (0..n).step_by(chunk) {
                    let c = chunk.min(n - c0);
                    self.ops.rms_norm(&gpu, x_rows.row_ptr(c0), attn_norm, normed_p, c, h, cfg.rms_eps)?;
                    // Fused QKV rows of this pass's KV groups (consecutive in the weight).
                    let width = kv_per_pass * slot;
                    let w_rows = w_qkv.rows(pass * width, width);
                    self.gemm.linear(&gpu, (normed_p, h), w_rows.ld(), qkv_rows.ld(), c, h, width, false)?;
                    for j in 0..kv_per_pass {
                        let g = pass * kv_per_pass + j;
                        let (k_dst, v_dst) = cache.prefix_ptrs(&gpu, l, g)?;
                        let b = bias.map_or(0, |b| b.row_ptr(g));
                        self.ops.qkv_rope_scatter(
                            &gpu,
                            qkv_rows.cols_from(j * slot).ld(),
                            b,
                            inv_freq,
                            (q_groups.row_ptr(j), k_dst, v_dst),
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
                let dst = o_all_v.cols_from(first * d).ptr();
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
                    o_all_v.rows(c0, c).ld(),
                    (w_o, cfg.q_dim()),
                    (normed_p, h),
                    c,
                    cfg.q_dim(),
                    h,
                    false,
                )?;
                self.add_update(x_rows.row_ptr(c0), normed_p, c * h)?;
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
                let xc = x_rows.row_ptr(c0);
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
        if self.residual.wanted() {
            self.residual.keep(gpu.download(&x, n * h)?);
        }

        let mut bufs = self.decode_buffers(n)?;
        let t = timer.start(&gpu)?;
        let logits = self.lm_head(x_rows.row_ptr(n - 1), &mut bufs)?;
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
}
