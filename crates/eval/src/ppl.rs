//! Perplexity, mean NLL, next-token KL and next-token top-1 agreement of several prefills of one document against a reference
//! (dense) prefill, over a range of positions, computed in chunks of positions so that only
//! `chunk × vocab` logits per prefill are held at once.

use crate::error::{EvalError, Result};
use minference_engine::lm_head::{kl_sum, log_softmax_rows, logits_rows, SCORE_CHUNK};
use minference_model::Model;
use std::ops::Range;

/// Scores of one prefill over the evaluated positions.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PositionScores {
    /// Mean of `-ln p(next token)`.
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub perplexity: f64,
    /// Mean over positions of `KL(reference || this)` of the next-token distributions, in nats.
    pub mean_kl: f64,
    /// Share of positions whose most likely next token (argmax; the lowest id on ties) is the
    /// reference's (1 for the reference itself).
    pub top1_agreement: f64,
    pub positions: usize,
}

/// Scores every residual stream in `streams` (each `[tokens, hidden]`, from `Engine::prefill_hidden`)
/// at positions `positions` (predicting `tokens[t + 1]`); `streams[0]` is the KL reference.
pub fn score_streams(
    model: &Model,
    tokens: &[u32],
    positions: Range<usize>,
    streams: &[&[f32]],
) -> Result<Vec<PositionScores>> {
    let cfg = model.config();
    let (hidden, vocab) = (cfg.hidden, cfg.vocab);
    if streams.is_empty() {
        return Err(EvalError::Input("no prefills to score".into()));
    }
    if let Some(s) = streams.iter().find(|s| s.len() != tokens.len() * hidden) {
        return Err(EvalError::Input(format!(
            "{} residual values for {} tokens × hidden {hidden}",
            s.len(),
            tokens.len()
        )));
    }
    if positions.is_empty() || positions.end >= tokens.len() {
        return Err(EvalError::Input(format!(
            "positions {positions:?} need next tokens among {} tokens",
            tokens.len()
        )));
    }
    let chunk = SCORE_CHUNK.min(positions.len());
    let mut reference = vec![0f32; chunk * vocab];
    let mut other = vec![0f32; chunk * vocab];
    let mut nll_sum = vec![0f64; streams.len()];
    let mut kl_total = vec![0f64; streams.len()];
    let mut agree = vec![0usize; streams.len()];
    let mut reference_top1 = vec![0usize; chunk];
    let mut t0 = positions.start;
    while t0 < positions.end {
        let rows = chunk.min(positions.end - t0);
        let span = t0 * hidden..(t0 + rows) * hidden;
        let next = &tokens[t0 + 1..t0 + rows + 1];
        logits_rows(model, &streams[0][span.clone()], &mut reference[..rows * vocab])?;
        log_softmax_rows(&mut reference[..rows * vocab], vocab);
        nll_sum[0] += chunk_nll(&reference[..rows * vocab], vocab, next)?;
        for (r, row) in reference[..rows * vocab].chunks(vocab).enumerate() {
            reference_top1[r] = argmax(row);
        }
        agree[0] += rows;
        for (i, stream) in streams.iter().enumerate().skip(1) {
            logits_rows(model, &stream[span.clone()], &mut other[..rows * vocab])?;
            log_softmax_rows(&mut other[..rows * vocab], vocab);
            nll_sum[i] += chunk_nll(&other[..rows * vocab], vocab, next)?;
            kl_total[i] += kl_sum(&reference[..rows * vocab], &other[..rows * vocab]);
            agree[i] +=
                other[..rows * vocab].chunks(vocab).zip(&reference_top1).filter(|(row, &t)| argmax(row) == t).count();
        }
        t0 += rows;
    }
    let n = positions.len() as f64;
    Ok(nll_sum
        .iter()
        .zip(&kl_total)
        .zip(&agree)
        .map(|((&nll, &kl), &a)| PositionScores {
            mean_nll: nll / n,
            perplexity: (nll / n).exp(),
            mean_kl: kl / n,
            top1_agreement: a as f64 / n,
            positions: positions.len(),
        })
        .collect())
}

/// Index of the largest value (the first one on ties; NaN never wins).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best
}

/// Sum over rows of `-logp[row][next[row]]`.
fn chunk_nll(logp: &[f32], vocab: usize, next: &[u32]) -> Result<f64> {
    let mut sum = 0f64;
    for (row, &t) in logp.chunks(vocab).zip(next) {
        let lp = row
            .get(t as usize)
            .ok_or_else(|| EvalError::Input(format!("token id {t} outside the vocabulary of {vocab}")))?;
        sum -= *lp as f64;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum_and_skips_nan() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -5.0, -6.0]), 1);
        assert_eq!(argmax(&[3.0]), 0);
        assert_eq!(argmax(&[-1.0, f32::NAN, 0.5]), 2);
    }

    #[test]
    fn kl_is_zero_on_equal_and_positive_otherwise() {
        let mut p = vec![0.1f32, 2.0, -1.0, 0.5];
        let mut q = vec![1.0f32, 0.0, 0.0, 0.5];
        log_softmax_rows(&mut p, 4);
        log_softmax_rows(&mut q, 4);
        assert!(kl_sum(&p, &p).abs() < 1e-9);
        assert!(kl_sum(&p, &q) > 0.01);
    }
}
