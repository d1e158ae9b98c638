//! Generation loop (prefill, then decode steps until a stop token or the length limit) and an
//! incremental detokenizer for streaming text.

use crate::attention::AttentionChoice;
use crate::engine::{Engine, PrefillProgress, PrefillStats};
use crate::error::Result;
use crate::sampling::Sampler;
use crate::tokenizer::Tokenizer;
use minference_core::AttentionBackend;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampler: Sampler,
    /// Generation ends after emitting one of these (not included in the output).
    pub stop_tokens: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    StopToken,
    MaxTokens,
    Callback,
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub prefill: PrefillStats,
    pub decode_seconds: f64,
    pub stop: StopReason,
}

impl<B: AttentionBackend> Engine<B> {
    /// Prefills `prompt` with `attention`, then decodes; `on_token` sees each new token and may
    /// return false to stop.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        attention: &AttentionChoice,
        opts: &GenerateOptions,
        progress: &mut dyn FnMut(PrefillProgress),
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Generation> {
        let mut sampler = opts.sampler.clone();
        let (mut logits, prefill) = self.prefill(prompt, attention, progress)?;
        let t0 = Instant::now();
        let mut tokens = Vec::new();
        let mut stop = StopReason::MaxTokens;
        while tokens.len() < opts.max_new_tokens {
            let next = sampler.sample(&logits);
            if opts.stop_tokens.contains(&next) {
                stop = StopReason::StopToken;
                break;
            }
            tokens.push(next);
            if !on_token(next) {
                stop = StopReason::Callback;
                break;
            }
            if tokens.len() == opts.max_new_tokens {
                break;
            }
            logits = self.decode_step(next)?;
        }
        Ok(Generation { tokens, prefill, decode_seconds: t0.elapsed().as_secs_f64(), stop })
    }
}

/// Turns a growing token sequence into text pieces, holding back incomplete UTF-8 sequences.
#[derive(Debug, Default)]
pub struct TextStream {
    ids: Vec<u32>,
    emitted: usize,
}

impl TextStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token and returns the newly completed text (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tokenizer.decode(&self.ids, true)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted {
            return Ok(String::new());
        }
        let piece = text.get(self.emitted..).unwrap_or("").to_string();
        self.emitted = text.len();
        Ok(piece)
    }
}
