//! Search over several calibration documents (issue 14 item 1): natural text of different kinds
//! (code, prose, a long retrieval prompt) and/or the synthetic KV-retrieval prompt.
//!
//! Each document gets its own dense forward. The first document's candidates of every head are
//! scored on every later document too ([`extras_of`], passed as the later searches' extra
//! patterns), so every head has the same patterns measured on every document; [`merge_searches`]
//! then averages each pattern's score, recall, kernel density and work over the documents (a
//! pattern missing from a document is dropped) and picks each head's best by the mean score.

use crate::driver::{HeadExtras, HeadReport, ModelSearch};
use crate::error::{Result, SearchError};
use crate::head::{pick_best, CandidateScore, HeadSearch};
use crate::objective::Objective;
use minference_core::config::{HeadEntry, LayerPatterns, ModelPatternConfig};
use std::collections::BTreeMap;

/// Every candidate pattern of every head of `search`, by `(layer, head)`.
pub fn extras_of(search: &ModelSearch) -> HeadExtras {
    search.heads.iter().map(|r| ((r.layer, r.head), r.search.candidates.iter().map(|c| c.pattern).collect())).collect()
}

/// One search whose candidates are the patterns the first search's head had and every other
/// search measured too, with score, recall, density and work averaged over the searches; each
/// head's best is picked again by `objective`. The searches must cover the same heads.
pub fn merge_searches(searches: &[ModelSearch], objective: &Objective) -> Result<ModelSearch> {
    let (first, rest) =
        searches.split_first().ok_or_else(|| SearchError::Input("no calibration documents were searched".into()))?;
    if let Some(s) = rest.iter().find(|s| s.heads.len() != first.heads.len()) {
        return Err(SearchError::Input(format!(
            "the calibration searches cover {} and {} heads",
            first.heads.len(),
            s.heads.len()
        )));
    }
    let docs = searches.len() as f64;
    let mut heads = Vec::with_capacity(first.heads.len());
    for (i, r) in first.heads.iter().enumerate() {
        let others: Vec<&HeadReport> = rest.iter().map(|s| &s.heads[i]).collect();
        if let Some(o) = others.iter().find(|o| (o.layer, o.head) != (r.layer, r.head)) {
            return Err(SearchError::Input(format!(
                "head order differs between calibration searches: ({}, {}) against ({}, {})",
                r.layer, r.head, o.layer, o.head
            )));
        }
        let mut candidates: Vec<CandidateScore> = Vec::new();
        for c in &r.search.candidates {
            let mut sum = c.clone();
            let mut everywhere = true;
            for o in &others {
                match o.search.candidates.iter().find(|x| x.pattern == c.pattern) {
                    Some(x) => {
                        sum.score += x.score;
                        sum.recall += x.recall;
                        sum.density += x.density;
                        sum.work += x.work;
                    }
                    None => everywhere = false,
                }
            }
            if everywhere {
                sum.score /= docs;
                sum.recall /= docs;
                sum.density /= docs;
                sum.work /= docs;
                candidates.push(sum);
            }
        }
        if candidates.is_empty() {
            return Err(SearchError::Input(format!(
                "layer {} head {}: no candidate was scored on every calibration document",
                r.layer, r.head
            )));
        }
        let best = pick_best(&candidates, objective);
        heads.push(HeadReport {
            layer: r.layer,
            head: r.head,
            search: HeadSearch { candidates, best, dense_output: None },
        });
    }
    let mut layers = vec![LayerPatterns { heads: BTreeMap::new() }; first.config.layers.len()];
    for r in &heads {
        let c = r.search.chosen();
        let layer = layers.get_mut(r.layer).ok_or_else(|| {
            SearchError::Input(format!("head report for layer {} of {}", r.layer, first.config.layers.len()))
        })?;
        layer.heads.insert(r.head, HeadEntry { pattern: c.pattern, score: c.score });
    }
    Ok(ModelSearch {
        config: ModelPatternConfig { layers },
        heads,
        tokens: searches.iter().map(|s| s.tokens).sum(),
        seconds: searches.iter().map(|s| s.seconds).sum(),
    })
}
