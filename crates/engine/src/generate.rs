//! Generation loop (prefill, then decode steps until a stop token or the length limit) and an
//! incremental detokenizer for streaming text.

use crate::attention::AttentionChoice;
use crate::cpu::PrefillProgress;
use crate::error::Result;
use crate::prefill_engine::PrefillEngine;
use crate::sampling::Sampler;
use crate::stats::PrefillStats;
use minference_model::Tokenizer;
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

/// The one generation loop (the CLI, the evals and the server call it, on any device): sets the
/// engine's decode reserve, prefills `prompt` with `attention`, then samples and decodes until a
/// stop token, `opts.max_new_tokens`, or `on_token` returning false.
pub fn generate(
    engine: &mut dyn PrefillEngine,
    prompt: &[u32],
    attention: &AttentionChoice,
    opts: &GenerateOptions,
    progress: &mut dyn FnMut(PrefillProgress),
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generation> {
    engine.set_max_new_tokens(opts.max_new_tokens.max(1))?;
    let mut sampler = opts.sampler.clone();
    let (mut logits, prefill) = engine.prefill(prompt, attention, progress)?;
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
        logits = engine.decode_step(next)?;
    }
    Ok(Generation { tokens, prefill, decode_seconds: t0.elapsed().as_secs_f64(), stop })
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
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> minference_model::Result<String> {
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
