//! The prefill: the one forward (`minference_engine::forward`) over a prompt's buffers on this GPU
//! (`device.rs`): per layer, norm + fused QKV + RoPE into the KV cache, MInference or dense
//! attention per layer or per KV-head group, then the O-projection and the MLP in token chunks
//! added to the f32 residual (summed over a tensor-parallel group first); the LM head on the last
//! position.

use super::device::GpuForward;
use super::*;
use minference_engine::{forward, NoObserver, Observer};

/// A [`PassObserver`] closure as the forward's observer.
struct PassFn<'a, 'o> {
    gpu: &'a Gpu,
    f: &'a mut PassObserver<'o>,
}

impl Observer<DeviceTensor, EngineError> for PassFn<'_, '_> {
    fn attention(&mut self, pass: &AttentionPass<'_>) -> Result<()> {
        (self.f)(self.gpu, pass)
    }
}

impl GpuEngine {
    /// [`prefill`](Self::prefill) with `observer` called after every attention call.
    pub fn prefill_observed(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
        observer: Option<&mut PassObserver<'_>>,
    ) -> Result<(Vec<f32>, PrefillStats)> {
        let gpu = Arc::clone(&self.gpu);
        match observer {
            Some(f) => self.prefill_with(tokens, attention, progress, &mut PassFn { gpu: &gpu, f }),
            None => self.prefill_with(tokens, attention, progress, &mut NoObserver),
        }
    }

    /// [`prefill`](Self::prefill) watched by `observer` (attention passes as device tensors, the
    /// final residual stream).
    pub fn prefill_with(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
        observer: &mut dyn Observer<DeviceTensor, EngineError>,
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
        let cfg = &self.cfg;
        let dtype = self.precision.dtype();
        let mut cache = KvCache::new(&gpu, cfg.layers, cfg.kv_heads, cfg.head_dim, &plan, self.max_new_tokens, dtype)?;
        let mut dev = GpuForward::prefill(self, &mut cache, tokens, &plan)?;
        let logits = forward(&mut dev, attention, observer, progress)?;
        // Frees the prompt-sized buffers before decode.
        let (mut stats, bufs) = dev.into_prefill()?;
        cache.len = tokens.len();
        self.cache = Some(cache);
        self.decode = Some(bufs);
        stats.seconds = start.elapsed().as_secs_f64();
        Ok((logits, stats))
    }
}
