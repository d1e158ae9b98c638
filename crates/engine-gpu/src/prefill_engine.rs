//! One GPU as a [`PrefillEngine`], the interface every device's engine implements.

use crate::engine::GpuEngine;
use minference_engine::{AttentionChoice, PrefillProgress};
use minference_engine::{PrefillEngine, PrefillStats, Result};
use minference_model::ModelConfig;

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
        let (free, total) = self.gpu().mem_info().map_err(crate::EngineError::from)?;
        Ok(((total - free) as u64, total as u64))
    }
    fn prefill(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, PrefillStats)> {
        Ok(GpuEngine::prefill(self, tokens, attention, progress)?)
    }
    fn prefill_residual(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<(Vec<f32>, PrefillStats)> {
        Ok(GpuEngine::prefill_residual(self, tokens, attention, progress)?)
    }
    fn decode_step(&mut self, token: u32) -> Result<Vec<f32>> {
        Ok(GpuEngine::decode_step(self, token)?)
    }
    fn reset(&mut self) -> Result<()> {
        Ok(GpuEngine::reset(self)?)
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
