//! Scoring every candidate of one head against its exact dense attention.

use crate::candidates::{Candidate, CandidateSpace, HeadCandidates};
use crate::dense::{block_output, for_each_prob_block, HeadInputs};
use crate::error::{Result, SearchError};
use crate::mask::prefix_sums;
use crate::objective::{Objective, Tally};
use minference_core::HeadPattern;

/// Everything that decides one head's search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOptions {
    pub objective: Objective,
    pub space: CandidateSpace,
    /// Rows before this are not scored; `None` = `min(2500, N / 4)` (the released code scores rows
    /// `>= 2500` at 30K tokens).
    pub floor: Option<usize>,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions { objective: Objective::Recall, space: CandidateSpace::default(), floor: None }
    }
}

impl SearchOptions {
    pub fn floor_for(&self, n: usize) -> usize {
        self.floor.unwrap_or(2500.min(n / 4)).min(n.saturating_sub(1))
    }
}

/// One candidate's result.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateScore {
    pub pattern: HeadPattern,
    pub origin: &'static str,
    /// The objective's value.
    pub score: f64,
    /// Mean kept attention mass over the scored rows (always computed).
    pub recall: f64,
    /// Kernel density: computed causal pairs / all causal pairs.
    pub density: f64,
    /// Kernel work as a share of dense work.
    pub work: f64,
}

/// One head's result: all candidates and the index of the winner.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadSearch {
    pub candidates: Vec<CandidateScore>,
    pub best: usize,
    /// The dense attention output `[n, D]`, when V was given and `want_output` was set.
    pub dense_output: Option<Vec<f32>>,
}

impl HeadSearch {
    pub fn chosen(&self) -> &CandidateScore {
        &self.candidates[self.best]
    }
}

/// Searches one head. With `want_output` (and V) the dense output of every row is returned too, so
/// a model forward can use it instead of computing attention twice.
pub fn search_head(h: &HeadInputs, opts: &SearchOptions, want_output: bool) -> Result<HeadSearch> {
    if opts.objective.needs_output() && h.v.is_none() {
        return Err(SearchError::Input(format!("objective {} needs V", opts.objective.name())));
    }
    let cands = HeadCandidates::new(h)?.build(&opts.space)?;
    let tallies = score_candidates(h, &cands, opts, want_output)?;
    let (tallies, dense_output) = tallies;
    let candidates: Vec<CandidateScore> = cands
        .iter()
        .zip(&tallies)
        .map(|(c, t)| CandidateScore {
            pattern: c.pattern,
            origin: c.origin,
            score: t.score(&opts.objective),
            recall: t.recall(),
            density: c.coverage.density(),
            work: c.work,
        })
        .collect();
    let best = pick_best(&candidates, &opts.objective);
    Ok(HeadSearch { candidates, best, dense_output })
}

/// The best score; ties (within 1e-12) go to the cheaper candidate, then to the earlier one.
pub fn pick_best(c: &[CandidateScore], objective: &Objective) -> usize {
    let mut best = 0;
    for (i, x) in c.iter().enumerate().skip(1) {
        let b = &c[best];
        let tie = (x.score - b.score).abs() <= 1e-12 * b.score.abs().max(1.0);
        if (!tie && objective.better(x.score, b.score)) || (tie && x.work < b.work) {
            best = i;
        }
    }
    best
}

type Scored = (Vec<Tally>, Option<Vec<f32>>);

fn score_candidates(h: &HeadInputs, cands: &[Candidate], opts: &SearchOptions, want_output: bool) -> Result<Scored> {
    let (n, d) = (h.n, h.head_dim);
    let floor = opts.floor_for(n);
    let needs_output = opts.objective.needs_output();
    let threshold = match opts.objective {
        Objective::OutputCount { threshold } => threshold,
        _ => 5e-3,
    };
    let mut tallies = vec![Tally::default(); cands.len()];
    let mut out = (want_output && h.v.is_some()).then(|| vec![0f32; n * d]);
    let compute_dense = needs_output || out.is_some();
    let mut prefix = Vec::new();
    let mut dense_blk = vec![0f32; 64 * d];
    let mut acc = vec![0f32; 64 * d];
    let mut scratch = Vec::new();
    let mut sparse_row = vec![0f32; d];
    let mut masses = vec![0f64; 64 * cands.len()];
    let first_row = if out.is_some() { 0 } else { floor };
    for_each_prob_block(h, first_row, |p| {
        if compute_dense {
            if let Some(v) = h.v {
                block_output(p, v, d, &mut dense_blk);
                if let Some(o) = out.as_mut() {
                    o[p.row0 * d..(p.row0 + p.rows) * d].copy_from_slice(&dense_blk[..p.rows * d]);
                }
            }
        }
        let first = floor.max(p.row0) - p.row0;
        if first >= p.rows {
            return Ok(());
        }
        for a in first..p.rows {
            let row = p.row(a);
            prefix_sums(row, &mut prefix);
            for (ci, c) in cands.iter().enumerate() {
                let m = c.mask.row_mass(p.row0 + a, &prefix, row);
                masses[ci * 64 + a] = m;
                tallies[ci].mass += m;
                tallies[ci].rows += 1;
            }
        }
        for (ci, c) in cands.iter().enumerate() {
            if needs_output {
                let v = h.v.ok_or_else(|| SearchError::Input("output objective needs V".into()))?;
                c.mask.block_numerator(p, v, d, &mut acc, &mut scratch);
                for a in first..p.rows {
                    let m = masses[ci * 64 + a];
                    let inv = if m > 0.0 { (1.0 / m) as f32 } else { 0.0 };
                    for (s, x) in sparse_row.iter_mut().zip(&acc[a * d..(a + 1) * d]) {
                        *s = x * inv;
                    }
                    tallies[ci].add_output(&sparse_row, &dense_blk[a * d..(a + 1) * d], threshold);
                }
            }
        }
        Ok(())
    })?;
    Ok((tallies, out))
}
