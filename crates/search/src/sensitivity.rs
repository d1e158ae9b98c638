//! Per-layer sensitivity (`minference search --layer-sensitivity`). A head's score is measured on
//! dense inputs, so it cannot see how an early layer's error spreads through every later layer's
//! queries and keys; on SmolLM2 the end-to-end effect of a layer over its predicted error varies
//! twentyfold between layers (docs/eval.md). This step measures it: one forward per layer in
//! which only that layer runs the allocated patterns, compared with the dense forward at the end
//! of the network ([`SensitivityMetric`]: the next-token distributions' KL on sampled rows, or the
//! final residual stream's relative change), then every candidate score of the layer is scaled so
//! that the allocation can be run again with the measured weights.

use crate::driver::ModelSearch;
use crate::error::{Result, SearchError};
use minference_core::HeadPattern;
use minference_engine::lm_head::{kl_sum, log_softmax_rows, logits_rows};
use minference_engine::{cpu_engine, AttentionChoice, MInferencePlan};
use minference_model::Model;
use std::sync::Arc;

/// `mean_r ‖x_r − y_r‖² / ‖y_r‖²` over rows `floor..` of two `[tokens, hidden]` streams (`y` the
/// reference; a zero reference row counts its change unscaled).
pub fn relative_change(x: &[f32], y: &[f32], hidden: usize, floor: usize) -> Result<f64> {
    if x.len() != y.len() || hidden == 0 || !x.len().is_multiple_of(hidden) {
        return Err(SearchError::Input(format!(
            "residual streams of {} and {} values do not share rows of {hidden}",
            x.len(),
            y.len()
        )));
    }
    let (mut sum, mut rows) = (0f64, 0usize);
    for (xr, yr) in x.chunks_exact(hidden).zip(y.chunks_exact(hidden)).skip(floor) {
        let diff: f64 = xr.iter().zip(yr).map(|(&a, &b)| ((a - b) as f64).powi(2)).sum();
        let reference: f64 = yr.iter().map(|&b| (b as f64).powi(2)).sum();
        sum += if reference > 0.0 { diff / reference } else { diff };
        rows += 1;
    }
    Ok(if rows == 0 { 0.0 } else { sum / rows as f64 })
}

/// What [`measure`] compares with the dense forward, at the end of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensitivityMetric {
    /// The final residual stream's relative change per row ([`relative_change`]; no LM head).
    Residual,
    /// `KL(dense ‖ sparse)` of the next-token distributions, the mean over up to `rows` evenly
    /// spaced positions from the floor (the LM head runs on those rows only).
    Kl { rows: usize },
}

/// Up to `want` evenly spaced positions of `floor..n`.
pub fn sample_rows(floor: usize, n: usize, want: usize) -> Vec<usize> {
    let span = n.saturating_sub(floor);
    let k = want.min(span);
    (0..k).map(|i| floor + i * span / k).collect()
}

/// Next-token log-probabilities `[rows, vocab]` of the residual stream's `rows`.
fn log_probs_at(model: &Model, residual: &[f32], rows: &[usize]) -> Result<Vec<f32>> {
    let cfg = model.config();
    let mut picked = Vec::with_capacity(rows.len() * cfg.hidden);
    for &r in rows {
        let row = residual.get(r * cfg.hidden..(r + 1) * cfg.hidden).ok_or_else(|| {
            SearchError::Input(format!("row {r} outside a residual stream of {} values", residual.len()))
        })?;
        picked.extend_from_slice(row);
    }
    let mut logits = vec![0f32; rows.len() * cfg.vocab];
    logits_rows(model, &picked, &mut logits)?;
    log_softmax_rows(&mut logits, cfg.vocab);
    Ok(logits)
}

fn final_residual(model: &Arc<Model>, tokens: &[u32], attention: &AttentionChoice) -> Result<Vec<f32>> {
    let (residual, _) = cpu_engine(Arc::clone(model)).prefill_hidden(tokens, attention, &mut |_| {})?;
    Ok(residual)
}

/// For every layer, `metric` (rows `floor..`) when only that layer runs `search`'s chosen patterns
/// and every other layer is dense (CPU, one forward per layer plus a dense one). `on_layer(l)` is
/// called as each layer's forward ends.
pub fn measure(
    model: &Arc<Model>,
    tokens: &[u32],
    search: &ModelSearch,
    floor: usize,
    metric: SensitivityMetric,
    on_layer: &dyn Fn(usize),
) -> Result<Vec<f64>> {
    let cfg = model.config();
    if metric == (SensitivityMetric::Kl { rows: 0 }) {
        return Err(SearchError::Input("the KL sensitivity needs at least one row".into()));
    }
    if search.heads.len() != cfg.layers * cfg.heads {
        return Err(SearchError::Input(format!(
            "the search covers {} heads, the model has {} × {}",
            search.heads.len(),
            cfg.layers,
            cfg.heads
        )));
    }
    let mut chosen = vec![vec![HeadPattern::Dense; cfg.heads]; cfg.layers];
    for r in &search.heads {
        let slot = chosen.get_mut(r.layer).and_then(|l| l.get_mut(r.head)).ok_or_else(|| {
            SearchError::Input(format!("head report for layer {} head {} outside the model", r.layer, r.head))
        })?;
        *slot = r.search.chosen().pattern;
    }
    let dense = final_residual(model, tokens, &AttentionChoice::Dense)?;
    // The KL's sample and the dense distributions there, once.
    let probe = match metric {
        SensitivityMetric::Kl { rows } => {
            let rows = sample_rows(floor, dense.len() / cfg.hidden.max(1), rows);
            let reference = log_probs_at(model, &dense, &rows)?;
            Some((rows, reference))
        }
        SensitivityMetric::Residual => None,
    };
    let mut out = Vec::with_capacity(cfg.layers);
    for (layer, patterns) in chosen.iter().enumerate() {
        let plan = MInferencePlan::from_lookup(cfg, |l, h| if l == layer { patterns[h] } else { HeadPattern::Dense });
        let x = final_residual(model, tokens, &AttentionChoice::MInference(plan))?;
        out.push(match &probe {
            None => relative_change(&x, &dense, cfg.hidden, floor)?,
            Some((rows, _)) if rows.is_empty() => 0.0,
            Some((rows, reference)) => kl_sum(reference, &log_probs_at(model, &x, rows)?) / rows.len() as f64,
        });
        on_layer(layer);
    }
    Ok(out)
}

/// Each layer's weight `sqrt(k_l / mean k)`, `k_l = measured[l] / Σ_h score²` over the layer's
/// chosen sparse candidates in `search` (its measured change over its predicted one). A layer
/// with no sparse head, or whose sparse heads predict no error, gets 1.
pub fn factors(search: &ModelSearch, measured: &[f64]) -> Result<Vec<f64>> {
    let layers = search.heads.iter().map(|r| r.layer + 1).max().unwrap_or(0);
    if measured.len() != layers || measured.iter().any(|m| !(m.is_finite() && *m >= 0.0)) {
        return Err(SearchError::Input(format!(
            "{} layer sensitivities (finite, non-negative) for a search of {layers} layers",
            measured.len()
        )));
    }
    // Heads kept dense predict no error (their scores are rounding noise) and change nothing: a
    // layer with no sparse head carries no information and keeps weight 1.
    let mut predicted = vec![0f64; layers];
    for r in &search.heads {
        let c = r.search.chosen();
        if c.pattern != HeadPattern::Dense {
            predicted[r.layer] += c.score.powi(2);
        }
    }
    let ratio: Vec<Option<f64>> = measured.iter().zip(&predicted).map(|(&m, &p)| (p > 0.0).then(|| m / p)).collect();
    let known: Vec<f64> = ratio.iter().flatten().copied().collect();
    let mean = if known.is_empty() { 1.0 } else { known.iter().sum::<f64>() / known.len() as f64 };
    Ok(ratio
        .iter()
        .map(|r| match r {
            Some(k) if mean > 0.0 => (k / mean).sqrt(),
            _ => 1.0,
        })
        .collect())
}

/// Multiplies every candidate score (and config entry score) of layer `l` by `factors[l]`.
pub fn scale(search: &mut ModelSearch, factors: &[f64]) -> Result<()> {
    if let Some(r) = search.heads.iter().find(|r| r.layer >= factors.len()) {
        return Err(SearchError::Input(format!("no layer weight for layer {} of {}", r.layer, factors.len())));
    }
    for r in &mut search.heads {
        for c in &mut r.search.candidates {
            c.score *= factors[r.layer];
        }
    }
    for (layer, f) in search.config.layers.iter_mut().zip(factors) {
        for e in layer.heads.values_mut() {
            e.score *= f;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_change_is_per_row_from_the_floor() {
        let y = [1.0f32, 0.0, 0.0, 2.0, 3.0, 4.0];
        let x = [1.0f32, 1.0, 0.0, 2.0, 3.0, 9.0];
        // Row 0: 1 / 1; row 1: 0; row 2: 25 / 25.
        assert_eq!(relative_change(&x, &y, 2, 0).unwrap_or(f64::NAN), 2.0 / 3.0);
        assert_eq!(relative_change(&x, &y, 2, 1).unwrap_or(f64::NAN), 0.5);
        assert_eq!(relative_change(&x, &y, 2, 3).unwrap_or(f64::NAN), 0.0);
        assert!(relative_change(&x, &y[..4], 2, 0).is_err());
        assert!(relative_change(&x, &y, 4, 0).is_err());
    }
}
