//! The LM head over many positions: final norm and vocabulary projection for rows of the residual
//! stream, and per-token negative log-likelihood computed in chunks of positions so that
//! `vocab × tokens` logits are never held at once (perplexity evaluation).

use crate::attention::AttentionChoice;
use crate::cpu::CpuEngine;
use crate::forward::PrefillProgress;
use crate::ops;
use minference_core::HostBackend;
use minference_model::Model;
use minference_model::{ModelError, Result};

/// Positions scored per LM-head call (bounds the logits buffer to `chunk × vocab` floats).
pub const SCORE_CHUNK: usize = 128;

/// Logits `[rows, vocab]` of residual-stream rows `[rows, hidden]` (final RMSNorm, then the head).
pub fn logits_rows(model: &Model, residual: &[f32], out: &mut [f32]) -> Result<()> {
    let cfg = model.config();
    let (hidden, vocab) = (cfg.hidden, cfg.vocab);
    if !residual.len().is_multiple_of(hidden) || out.len() != residual.len() / hidden * vocab {
        return Err(ModelError::Input(format!(
            "{} residual values and {} logits do not match hidden {hidden} / vocab {vocab}",
            residual.len(),
            out.len()
        )));
    }
    let rows = residual.len() / hidden;
    if rows == 0 {
        return Ok(());
    }
    let w = model.weights();
    let mut normed = vec![0f32; residual.len()];
    ops::rms_norm(residual, &w.final_norm, cfg.rms_eps, &mut normed);
    match &w.lm_head {
        Some(head) => ops::linear(&normed, rows, head, out),
        // Tied head: the embedding matrix `[vocab, hidden]` is the weight.
        // SAFETY: `normed` is rows×hidden, `embed` vocab×hidden, `out` rows×vocab (checked above).
        None => unsafe {
            matrixmultiply::sgemm(
                rows,
                hidden,
                vocab,
                1.0,
                normed.as_ptr(),
                hidden as isize,
                1,
                w.embed.as_ptr(),
                1,
                hidden as isize,
                0.0,
                out.as_mut_ptr(),
                vocab as isize,
                1,
            )
        },
    }
    Ok(())
}

/// Turns each row of `vocab` logits into log-probabilities, in place.
pub fn log_softmax_rows(logits: &mut [f32], vocab: usize) {
    for row in logits.chunks_mut(vocab.max(1)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
        let log_z = max as f64 + sum.ln();
        for v in row.iter_mut() {
            *v = (*v as f64 - log_z) as f32;
        }
    }
}

/// Sum over rows of `KL(p || q) = Σ p (log p − log q)`, from log-probabilities of the same shape.
pub fn kl_sum(logp: &[f32], logq: &[f32]) -> f64 {
    logp.iter().zip(logq).map(|(&lp, &lq)| (lp as f64).exp() * (lp as f64 - lq as f64)).sum()
}

/// `-log p(tokens[t + 1] | tokens[..=t])` for every `t` in `positions`, from the residual stream
/// `[tokens, hidden]` of a prefill, in chunks of [`SCORE_CHUNK`] positions.
pub fn token_nll(
    model: &Model,
    residual: &[f32],
    tokens: &[u32],
    positions: std::ops::Range<usize>,
) -> Result<Vec<f32>> {
    let cfg = model.config();
    let (hidden, vocab) = (cfg.hidden, cfg.vocab);
    if residual.len() != tokens.len() * hidden {
        return Err(ModelError::Input(format!("{} residual values for {} tokens", residual.len(), tokens.len())));
    }
    if positions.end >= tokens.len().max(1) || positions.start > positions.end {
        return Err(ModelError::Input(format!(
            "positions {positions:?} need a next token among {} tokens",
            tokens.len()
        )));
    }
    let mut nll = Vec::with_capacity(positions.len());
    let mut logits = vec![0f32; SCORE_CHUNK.min(positions.len()) * vocab];
    let mut t0 = positions.start;
    while t0 < positions.end {
        let rows = SCORE_CHUNK.min(positions.end - t0);
        let buf = &mut logits[..rows * vocab];
        logits_rows(model, &residual[t0 * hidden..(t0 + rows) * hidden], buf)?;
        log_softmax_rows(buf, vocab);
        for (r, row) in buf.chunks(vocab).enumerate() {
            let next = tokens[t0 + r + 1] as usize;
            let lp =
                row.get(next).ok_or_else(|| ModelError::Input(format!("token id {next} outside the vocabulary")))?;
            nll.push(-lp);
        }
        t0 += rows;
    }
    Ok(nll)
}

impl<B: HostBackend> CpuEngine<B> {
    /// Prefills `tokens` with `attention` and returns `-log p(tokens[t + 1] | tokens[..=t])` for
    /// `t` in `0..tokens.len() - 1` (perplexity of a prompt under sparse prefill).
    pub fn prefill_token_nll(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> Result<Vec<f32>> {
        if tokens.len() < 2 {
            return Err(ModelError::Input("scoring needs at least 2 tokens".into()));
        }
        let (residual, _) = self.prefill_hidden(tokens, attention, progress)?;
        token_nll(self.model(), &residual, tokens, 0..tokens.len() - 1)
    }
}
