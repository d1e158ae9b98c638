//! Decode steps: the one forward (`minference_engine::forward`) over one token, dense attention
//! over the device KV cache, the LM head on that row; the one-row buffers they reuse.

use super::device::GpuForward;
use super::*;
use minference_engine::{forward, NoObserver};

/// Single-token buffers for decode steps, allocated after a prefill.
pub(super) struct DecodeBufs {
    pub(super) token: CudaSlice<i32>,
    /// f32 residual row.
    pub(super) x: CudaSlice<f32>,
    pub(super) normed: CudaSlice<u16>,
    normed_f32: CudaSlice<f32>,
    pub(super) qkv: CudaSlice<u16>,
    pub(super) q: CudaSlice<u16>,
    pub(super) o: CudaSlice<u16>,
    pub(super) gate_up: CudaSlice<u16>,
    pub(super) act: CudaSlice<u16>,
    pub(super) part: CudaSlice<f32>,
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

    /// Final norm of the f32 row `row` and the LM head (f32 logits, copied to the host).
    pub(super) fn lm_head(&self, row: DeviceView, bufs: &mut DecodeBufs) -> Result<Vec<f32>> {
        let gpu = &self.gpu;
        let cfg = &self.cfg;
        let nf = DeviceSlice::of(gpu, &bufs.normed_f32);
        self.ops.rms_norm_f32out(gpu, row, DeviceSlice::of(gpu, &self.weights.final_norm), nf, cfg.rms_eps)?;
        let w = self.weights.lm_head.as_ref().unwrap_or(&self.weights.embed);
        let w = DeviceView::of_slice(gpu, w, self.precision.dtype(), cfg.hidden).rows(0, cfg.vocab);
        self.ops.gemv_rows(gpu, w, nf, DeviceSlice::of(gpu, &bufs.logits))?;
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

    /// The one forward over one token: a pass per KV head (`device.rs`).
    fn decode_inner(&mut self, token: u32, cache: &mut KvCache, bufs: &mut DecodeBufs) -> Result<Vec<f32>> {
        let pos = cache.len;
        self.check_tokens(&[token], pos + 1)?;
        if pos + 1 > cache.n_prefix + cache.tail_capacity {
            return Err(EngineError::Input(format!(
                "the KV cache holds {} decode tokens after the prompt (set_max_new_tokens before prefill)",
                cache.tail_capacity
            )));
        }
        self.gpu
            .stream()
            .memcpy_htod(&[token as i32], &mut bufs.token)
            .map_err(crate::error::driver("uploading the token"))?;
        let mut dev = GpuForward::decode(self, cache, bufs, pos);
        let logits = forward(&mut dev, &AttentionChoice::Dense, &mut NoObserver, &mut |_| {})?;
        cache.len = pos + 1;
        Ok(logits)
    }
}
