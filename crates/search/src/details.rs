//! Every head's scored candidates as TSV (`minference search --details`), and back: a saved
//! search can be re-allocated to other density targets without running the model again
//! (`minference search --from-details`).

use crate::driver::{HeadReport, ModelSearch};
use crate::error::{Result, SearchError};
use crate::head::{CandidateScore, HeadSearch};
use minference_core::adaptive::gamma_of_ppm;
use minference_core::config::{HeadEntry, LayerPatterns, ModelPatternConfig};
use minference_core::{AdaptiveBudget, HeadPattern};
use std::collections::BTreeMap;

/// The TSV header.
pub const HEADER: &str = "layer\thead\tchosen\tpattern\ta\tb\torigin\tscore\trecall\tdensity\twork";

/// A pattern's two numbers in the TSV (`k_v, k_s`; `n_init, n_local`; `k_b, 0`; `0, 0`; adaptive
/// VS: `max_v, max_s`).
pub fn pattern_numbers(p: &HeadPattern) -> (usize, usize) {
    match *p {
        HeadPattern::VerticalSlash { k_v, k_s } => (k_v, k_s),
        HeadPattern::AShape { n_init, n_local } => (n_init, n_local),
        HeadPattern::BlockSparse { k_b } => (k_b, 0),
        HeadPattern::Dense => (0, 0),
        HeadPattern::AdaptiveVs { max_v, max_s, .. } => (max_v, max_s),
    }
}

/// A pattern's name in the TSV: its config name; an adaptive head carries the rest of its rule,
/// `adaptive_vertical_and_slash(gamma=0.9,min_v=30,min_s=100)`.
pub fn pattern_label(p: &HeadPattern) -> String {
    match *p {
        HeadPattern::AdaptiveVs { gamma_ppm, min_v, min_s, .. } => {
            format!("{}(gamma={},min_v={min_v},min_s={min_s})", p.name(), gamma_of_ppm(gamma_ppm))
        }
        _ => p.name().to_string(),
    }
}

/// One line per (head, candidate); numbers at full precision, so [`from_tsv`] gives them back exactly.
pub fn to_tsv(search: &ModelSearch) -> String {
    let mut tsv = format!("{HEADER}\n");
    for r in &search.heads {
        for (i, c) in r.search.candidates.iter().enumerate() {
            let (a, b) = pattern_numbers(&c.pattern);
            tsv += &format!(
                "{}\t{}\t{}\t{}\t{a}\t{b}\t{}\t{}\t{}\t{}\t{}\n",
                r.layer,
                r.head,
                (i == r.search.best) as u8,
                pattern_label(&c.pattern),
                c.origin,
                c.score,
                c.recall,
                c.density,
                c.work
            );
        }
    }
    tsv
}

fn origin(name: &str) -> &'static str {
    match name {
        "paper" => "paper",
        "code" => "code",
        "kernel-aware" => "kernel-aware",
        "adaptive" => "adaptive",
        "given" => "given",
        _ => "details",
    }
}

fn pattern(name: &str, a: usize, b: usize) -> Option<HeadPattern> {
    if let Some(rule) = name.strip_prefix("adaptive_vertical_and_slash(").and_then(|r| r.strip_suffix(')')) {
        return adaptive(rule, a, b);
    }
    Some(match name {
        "vertical_and_slash" => HeadPattern::VerticalSlash { k_v: a, k_s: b },
        "stream_llm" => HeadPattern::AShape { n_init: a, n_local: b },
        "block_sparse" => HeadPattern::BlockSparse { k_b: a },
        "dense" => HeadPattern::Dense,
        _ => return None,
    })
}

/// An adaptive rule `gamma=G,min_v=A,min_s=B` with the caps `max_v`, `max_s`.
fn adaptive(rule: &str, max_v: usize, max_s: usize) -> Option<HeadPattern> {
    let mut budget = AdaptiveBudget { max_v, max_s, ..AdaptiveBudget::default() };
    let mut gamma = None;
    for field in rule.split(',') {
        let (key, value) = field.split_once('=')?;
        match key {
            "gamma" => gamma = Some(value.parse().ok()?),
            "min_v" => budget.min_v = value.parse().ok()?,
            "min_s" => budget.min_s = value.parse().ok()?,
            _ => return None,
        }
    }
    budget.gamma = gamma?;
    budget.to_pattern().ok()
}

/// A search back from [`to_tsv`]'s text (`what` names it in errors). Every head from 0 to the
/// largest layer and head must be there, each with exactly one chosen candidate.
pub fn from_tsv(text: &str, what: &str) -> Result<ModelSearch> {
    let bad = |line: usize, msg: &str| SearchError::Input(format!("{what} line {line}: {msg}"));
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim_end() == HEADER => {}
        _ => {
            return Err(SearchError::Input(format!(
                "{what}: not a search details file (first line must be the header `{HEADER}`)"
            )))
        }
    }
    let mut heads: BTreeMap<(usize, usize), (Vec<CandidateScore>, Vec<usize>)> = BTreeMap::new();
    for (i, line) in lines {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 11 {
            return Err(bad(n, &format!("{} fields, expected 11", f.len())));
        }
        let int = |s: &str| s.trim().parse::<usize>().map_err(|_| bad(n, &format!("`{s}` is not a whole number")));
        let num = |s: &str| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(n, &format!("`{s}` is not a number")))
        };
        let (layer, head, chosen) = (int(f[0])?, int(f[1])?, int(f[2])?);
        let p = pattern(f[3], int(f[4])?, int(f[5])?).ok_or_else(|| bad(n, &format!("unknown pattern `{}`", f[3])))?;
        let c = CandidateScore {
            pattern: p,
            origin: origin(f[6]),
            score: num(f[7])?,
            recall: num(f[8])?,
            density: num(f[9])?,
            work: num(f[10])?,
        };
        let entry = heads.entry((layer, head)).or_default();
        if chosen == 1 {
            entry.1.push(entry.0.len());
        } else if chosen != 0 {
            return Err(bad(n, "`chosen` must be 0 or 1"));
        }
        entry.0.push(c);
    }
    let layers =
        heads.keys().map(|k| k.0 + 1).max().ok_or_else(|| SearchError::Input(format!("{what} lists no head")))?;
    let per_layer = heads.keys().map(|k| k.1 + 1).max().unwrap_or(0);
    if heads.len() != layers * per_layer {
        return Err(SearchError::Input(format!(
            "{what} lists {} heads, expected {layers} layers × {per_layer} heads",
            heads.len()
        )));
    }
    let mut config = vec![LayerPatterns { heads: BTreeMap::new() }; layers];
    let mut reports = Vec::with_capacity(heads.len());
    for ((layer, head), (candidates, chosen)) in heads {
        let [best] = chosen[..] else {
            return Err(SearchError::Input(format!(
                "{what}: layer {layer} head {head} has {} chosen candidates, expected 1",
                chosen.len()
            )));
        };
        let c = &candidates[best];
        config[layer].heads.insert(head, HeadEntry { pattern: c.pattern, score: c.score });
        reports.push(HeadReport { layer, head, search: HeadSearch { candidates, best, dense_output: None } });
    }
    Ok(ModelSearch { config: ModelPatternConfig { layers: config }, heads: reports, tokens: 0, seconds: 0.0 })
}
