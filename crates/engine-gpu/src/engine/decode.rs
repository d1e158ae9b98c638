//! Decode steps: one token through every layer, dense attention over the device KV cache, the LM
//! head on that row.

use super::*;

/// Single-token buffers for decode steps, allocated after a prefill.
pub(super) struct DecodeBufs {
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

impl GpuEngine {
    pub(super) fn decode_buffers(&self, n: usize) -> Result<DecodeBufs> {
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
    pub(super) fn lm_head(&self, row_ptr: u64, bufs: &mut DecodeBufs) -> Result<Vec<f32>> {
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
        let dtype = self.precision.dtype();
        let (xp, np, qkvp, qp) =
            (dptr(&gpu, &bufs.x), dptr(&gpu, &bufs.normed), dptr(&gpu, &bufs.qkv), dptr(&gpu, &bufs.q));
        // The attention output row, one block of `gs` heads per KV head.
        let o_groups = DeviceView::of_slice(&gpu, &bufs.o, dtype, gs * d);
        let op = o_groups.ptr();
        let (gup, actp, partp) = (dptr(&gpu, &bufs.gate_up), dptr(&gpu, &bufs.act), dptr(&gpu, &bufs.part));
        let inv_freq = dptr(&gpu, &self.inv_freq);
        self.ops.embed(&gpu, dptr(&gpu, &bufs.token), dptr(&gpu, &self.weights.embed), xp, 1, h)?;
        let tail_row = pos - cache.n_prefix;
        for l in 0..cfg.layers {
            let lw = &self.weights.layers[l];
            let w_qkv = DeviceView::of_slice(&gpu, &lw.w_qkv, dtype, h);
            let (w_o, w_gu, w_down) = (dptr(&gpu, &lw.w_o), dptr(&gpu, &lw.w_gate_up), dptr(&gpu, &lw.w_down));
            let bias = lw.qkv_bias.as_ref().map(|b| DeviceView::of_slice(&gpu, b, DType::F32, slot));
            self.ops.rms_norm(&gpu, xp, dptr(&gpu, &lw.attn_norm), np, 1, h, cfg.rms_eps)?;
            for g in 0..kvh {
                self.gemm.linear(&gpu, (np, h), w_qkv.rows(g * slot, slot).ld(), (qkvp, slot), 1, h, slot, false)?;
                let (k_tail, v_tail) = cache.tail_ptrs(&gpu, l, g);
                let b = bias.map_or(0, |b| b.row_ptr(g));
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
                let out = o_groups.row_ptr(g);
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
