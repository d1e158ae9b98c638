//! [`TpEngine`] as a `PrefillEngine`: every call is broadcast to the ranks and answered from
//! their gathered replies (rank 0's logits, the group's head counts and memory).

use super::TpEngine;
use crate::error::Result;
use crate::worker::{Command, Event};
use minference_engine::{AttentionChoice, PrefillEngine, PrefillProgress, PrefillStats};
use minference_model::ModelConfig;
use std::sync::Arc;
use std::time::Instant;

impl PrefillEngine for TpEngine {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn has_random_weights(&self) -> bool {
        self.random_weights
    }
    fn device_name(&self) -> String {
        self.device.clone()
    }
    fn memory(&mut self) -> minference_engine::Result<(u64, u64)> {
        let per_gpu = self.memory_per_gpu()?;
        Ok(per_gpu.iter().fold((0, 0), |a, m| (a.0 + m.0, a.1 + m.1)))
    }
    fn prefill(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> minference_engine::Result<(Vec<f32>, PrefillStats)> {
        self.group_prefill(tokens, attention, progress, false)
    }
    fn prefill_residual(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> minference_engine::Result<(Vec<f32>, PrefillStats)> {
        self.group_prefill(tokens, attention, progress, true)
    }
    fn decode_step(&mut self, token: u32) -> minference_engine::Result<Vec<f32>> {
        self.broadcast(|| Command::Decode(token))?;
        let mut logits = self.gather(
            |e| match e {
                Event::Logits(r) => Some(r),
                _ => None,
            },
            &mut |_| {},
        )?;
        Ok(logits.swap_remove(0))
    }
    fn reset(&mut self) -> minference_engine::Result<()> {
        Ok(self.command_all(|| Command::Reset)?)
    }
    fn set_max_new_tokens(&mut self, n: usize) -> minference_engine::Result<()> {
        Ok(self.command_all(|| Command::MaxNewTokens(n))?)
    }
    fn set_allow_context_extension(&mut self, allow: bool) -> minference_engine::Result<()> {
        Ok(self.command_all(|| Command::ContextExtension(allow))?)
    }
    fn set_memory_limit(&mut self, bytes: Option<u64>) -> minference_engine::Result<()> {
        Ok(self.command_all(|| Command::MemoryLimit(bytes))?)
    }
}

impl TpEngine {
    /// Every rank prefills; rank 0's logits (or final residual stream) are the result, the head
    /// counts are the group's.
    fn group_prefill(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
        residual: bool,
    ) -> minference_engine::Result<(Vec<f32>, PrefillStats)> {
        let start = Instant::now();
        let tokens = Arc::new(tokens.to_vec());
        let attention = Arc::new(attention.clone());
        self.broadcast(|| Command::Prefill {
            tokens: Arc::clone(&tokens),
            attention: Arc::clone(&attention),
            residual,
        })?;
        let layers = self.config.layers;
        let mut results = self.gather(
            |e| match e {
                Event::Prefilled(r) => Some(r),
                _ => None,
            },
            &mut |layer| progress(PrefillProgress { layer, layers }),
        )?;
        // Each rank counted its own heads; the group's prefill is their sum.
        let sum = |f: fn(&PrefillStats) -> u64| results.iter().map(|(_, s)| f(s)).sum::<u64>();
        let (sparse, dense, tiles) =
            (sum(|s| s.sparse_heads as u64), sum(|s| s.dense_heads as u64), sum(|s| s.index_tiles as u64));
        let (kernel_entries, causal_entries) = (sum(|s| s.kernel_entries), sum(|s| s.causal_entries));
        let (logits, mut stats) = results.swap_remove(0);
        stats.sparse_heads = sparse as usize;
        stats.dense_heads = dense as usize;
        stats.index_tiles = tiles as usize;
        stats.kernel_entries = kernel_entries;
        stats.causal_entries = causal_entries;
        stats.seconds = start.elapsed().as_secs_f64();
        Ok((logits, stats))
    }

    /// Device bytes in use and in total on each GPU of the group.
    pub fn memory_per_gpu(&mut self) -> Result<Vec<(u64, u64)>> {
        self.broadcast(|| Command::Memory)?;
        self.gather(
            |e| match e {
                Event::Memory(r) => Some(r),
                _ => None,
            },
            &mut |_| {},
        )
    }
}
