//! What the commands need from a GPU model engine, whether it is one GPU ([`GpuEngine`]) or a
//! tensor-parallel group (`minference_multi_gpu::TpEngine`): `run`, `bench e2e` and the evals take
//! `&mut dyn PrefillEngine`.

use crate::engine::{GpuEngine, GpuPrefillStats};
use crate::error::Result;
use minference_model::{AttentionChoice, ModelConfig, PrefillProgress};

pub trait PrefillEngine {
    /// The whole model's config.
    fn config(&self) -> &ModelConfig;
    /// Every output of a random-weight engine must say "random weights".
    fn has_random_weights(&self) -> bool;
    /// "NVIDIA H100 80GB HBM3", or "2 × NVIDIA H100 80GB HBM3" for a group.
    fn device_name(&self) -> String;
    /// Device bytes in use and in total, summed over the engine's GPUs.
    fn memory(&mut self) -> Result<(u64, u64)>;
    /// Runs a fresh prompt and returns the last position's logits.
    fn prefill(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, GpuPrefillStats)>;
    /// A prefill that returns the residual stream after the last layer (`[tokens, hidden]` f32,
    /// before the final norm) instead of logits, for scoring every position (perplexity).
    fn prefill_residual(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, GpuPrefillStats)>;
    /// Feeds one token after the cached ones and returns the next-token logits.
    fn decode_step(&mut self, token: u32) -> Result<Vec<f32>>;
    /// Frees the KV cache.
    fn reset(&mut self) -> Result<()>;
    /// Decode tokens reserved in the KV cache by the next prefill.
    fn set_max_new_tokens(&mut self, n: usize) -> Result<()>;
    /// Allows prompts longer than the model's context (RoPE extension).
    fn set_allow_context_extension(&mut self, allow: bool) -> Result<()>;
    /// Caps the device bytes each GPU's memory plan may use (weights included), e.g. to plan for
    /// an 80 GB card on a larger one.
    fn set_memory_limit(&mut self, bytes: Option<u64>) -> Result<()>;
}

impl PrefillEngine for GpuEngine {
    fn config(&self) -> &ModelConfig {
        GpuEngine::config(self)
    }
    fn has_random_weights(&self) -> bool {
        GpuEngine::has_random_weights(self)
    }
    fn device_name(&self) -> String {
        self.gpu().name().to_string()
    }
    fn memory(&mut self) -> Result<(u64, u64)> {
        let (free, total) = self.gpu().mem_info()?;
        Ok(((total - free) as u64, total as u64))
    }
    fn prefill(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, GpuPrefillStats)> {
        GpuEngine::prefill(self, tokens, attention, progress)
    }
    fn prefill_residual(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, GpuPrefillStats)> {
        GpuEngine::prefill_residual(self, tokens, attention, progress)
    }
    fn decode_step(&mut self, token: u32) -> Result<Vec<f32>> {
        GpuEngine::decode_step(self, token)
    }
    fn reset(&mut self) -> Result<()> {
        GpuEngine::reset(self)
    }
    fn set_max_new_tokens(&mut self, n: usize) -> Result<()> {
        GpuEngine::set_max_new_tokens(self, n);
        Ok(())
    }
    fn set_allow_context_extension(&mut self, allow: bool) -> Result<()> {
        GpuEngine::set_allow_context_extension(self, allow);
        Ok(())
    }
    fn set_memory_limit(&mut self, bytes: Option<u64>) -> Result<()> {
        GpuEngine::set_memory_limit(self, bytes);
        Ok(())
    }
}
