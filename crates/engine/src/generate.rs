//! Generation loop (prefill, then decode steps until a stop token or the length limit) and an
//! incremental detokenizer for streaming text.

use crate::attention::AttentionChoice;
use crate::error::Result;
use crate::forward::PrefillProgress;
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
/// stop token, `opts.max_new_tokens`, or `on_token` returning false. It is [`Decoding`] driven to
/// the end; the server drives several `Decoding`s a step at a time instead.
pub fn generate(
    engine: &mut dyn PrefillEngine,
    prompt: &[u32],
    attention: &AttentionChoice,
    opts: &GenerateOptions,
    progress: &mut dyn FnMut(PrefillProgress),
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generation> {
    let mut run = Decoding::start(engine, prompt, attention, opts, progress)?;
    while let Some(next) = run.next_token() {
        if !on_token(next) {
            run.cancel();
            break;
        }
        run.advance(engine)?;
    }
    Ok(run.finish())
}

/// One generation as steps, for a caller that interleaves several (each on its own engine):
/// [`Decoding::start`] prefills, then [`Decoding::next_token`] samples the next token (`None` at a
/// stop token or the length limit) and [`Decoding::advance`] feeds it to the engine.
#[derive(Debug)]
pub struct Decoding {
    sampler: Sampler,
    max_new_tokens: usize,
    stop_tokens: Vec<u32>,
    logits: Vec<f32>,
    tokens: Vec<u32>,
    prefill: PrefillStats,
    started: Instant,
    stop: Option<StopReason>,
}

impl Decoding {
    /// Sets the engine's decode reserve and prefills `prompt`.
    pub fn start(
        engine: &mut dyn PrefillEngine,
        prompt: &[u32],
        attention: &AttentionChoice,
        opts: &GenerateOptions,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<Decoding> {
        engine.set_max_new_tokens(opts.max_new_tokens.max(1))?;
        let (logits, prefill) = engine.prefill(prompt, attention, progress)?;
        Ok(Decoding {
            sampler: opts.sampler.clone(),
            max_new_tokens: opts.max_new_tokens,
            stop_tokens: opts.stop_tokens.clone(),
            logits,
            tokens: Vec::new(),
            prefill,
            started: Instant::now(),
            stop: None,
        })
    }

    pub fn prefill_stats(&self) -> &PrefillStats {
        &self.prefill
    }

    /// Tokens emitted so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Why the generation ended, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop
    }

    /// Samples the next token from the current logits; `None` once the generation has ended.
    pub fn next_token(&mut self) -> Option<u32> {
        if self.stop.is_some() {
            return None;
        }
        if self.tokens.len() >= self.max_new_tokens {
            self.stop = Some(StopReason::MaxTokens);
            return None;
        }
        let next = self.sampler.sample(&self.logits);
        if self.stop_tokens.contains(&next) {
            self.stop = Some(StopReason::StopToken);
            return None;
        }
        self.tokens.push(next);
        Some(next)
    }

    /// Feeds the last sampled token to the engine (one decode step), unless that token was the
    /// last one allowed.
    pub fn advance(&mut self, engine: &mut dyn PrefillEngine) -> Result<()> {
        if self.stop.is_some() {
            return Ok(());
        }
        match self.tokens.last() {
            Some(_) if self.tokens.len() >= self.max_new_tokens => self.stop = Some(StopReason::MaxTokens),
            Some(&last) => self.logits = engine.decode_step(last)?,
            None => {}
        }
        Ok(())
    }

    /// Seconds since the prefill ended.
    pub fn decode_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Ends the generation at the caller's request.
    pub fn cancel(&mut self) {
        self.stop.get_or_insert(StopReason::Callback);
    }

    pub fn finish(self) -> Generation {
        let decode_seconds = self.decode_seconds();
        Generation {
            tokens: self.tokens,
            prefill: self.prefill,
            decode_seconds,
            stop: self.stop.unwrap_or(StopReason::MaxTokens),
        }
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
