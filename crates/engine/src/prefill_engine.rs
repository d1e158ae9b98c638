//! What the commands (run, evals, benchmarks, and later the server) need from a model engine,
//! whichever device runs it: the CPU ([`crate::CpuEngine`]), one GPU
//! (`minference_engine_gpu::GpuEngine`) or a tensor-parallel group (`minference_multi_gpu::TpEngine`).

use crate::attention::AttentionChoice;
use crate::cpu::CpuEngine;
use crate::error::Result;
use crate::forward::PrefillProgress;
use crate::stats::PrefillStats;
use minference_core::HostBackend;
use minference_model::ModelConfig;

pub trait PrefillEngine {
    /// The whole model's config.
    fn config(&self) -> &ModelConfig;
    /// Every output of a random-weight engine must say "random weights".
    fn has_random_weights(&self) -> bool;
    /// "CPU (16 threads)", "NVIDIA H200", or "2 × NVIDIA H200" for a group.
    fn device_name(&self) -> String;
    /// Bytes in use and in total on the engine's device(s).
    fn memory(&mut self) -> Result<(u64, u64)>;
    /// Runs a fresh prompt (the old cache is dropped) and returns the last position's logits.
    fn prefill(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, PrefillStats)>;
    /// A prefill that returns the residual stream after the last layer (`[tokens, hidden]` f32,
    /// before the final norm) instead of logits, for scoring every position (perplexity).
    fn prefill_residual(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, PrefillStats)>;
    /// Feeds one token after the cached ones and returns the next-token logits.
    fn decode_step(&mut self, token: u32) -> Result<Vec<f32>>;
    /// Frees the KV cache.
    fn reset(&mut self) -> Result<()>;
    /// Decode tokens reserved in the KV cache by the next prefill.
    fn set_max_new_tokens(&mut self, n: usize) -> Result<()>;
    /// Allows prompts longer than the model's context (RoPE extension).
    fn set_allow_context_extension(&mut self, allow: bool) -> Result<()>;
    /// Caps the bytes the memory plan may use (per GPU on a group; host bytes on the CPU).
    fn set_memory_limit(&mut self, bytes: Option<u64>) -> Result<()>;
}

impl<B: HostBackend> PrefillEngine for CpuEngine<B> {
    fn config(&self) -> &ModelConfig {
        self.model().config()
    }
    fn has_random_weights(&self) -> bool {
        self.model().has_random_weights()
    }
    fn device_name(&self) -> String {
        self.backend().name()
    }
    fn memory(&mut self) -> Result<(u64, u64)> {
        let total = crate::memory::total_host_bytes().unwrap_or(0);
        let free = crate::memory::available_host_bytes().unwrap_or(total);
        Ok((total.saturating_sub(free), total))
    }
    fn prefill(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, PrefillStats)> {
        Ok(CpuEngine::prefill(self, tokens, attention, progress)?)
    }
    fn prefill_residual(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, PrefillStats)> {
        Ok(self.prefill_hidden(tokens, attention, progress)?)
    }
    fn decode_step(&mut self, token: u32) -> Result<Vec<f32>> {
        Ok(CpuEngine::decode_step(self, token)?)
    }
    fn reset(&mut self) -> Result<()> {
        self.clear_cache();
        Ok(())
    }
    fn set_max_new_tokens(&mut self, n: usize) -> Result<()> {
        self.set_decode_reserve(n);
        Ok(())
    }
    fn set_allow_context_extension(&mut self, allow: bool) -> Result<()> {
        CpuEngine::set_allow_context_extension(self, allow);
        Ok(())
    }
    fn set_memory_limit(&mut self, bytes: Option<u64>) -> Result<()> {
        CpuEngine::set_memory_limit(self, bytes);
        Ok(())
    }
}
