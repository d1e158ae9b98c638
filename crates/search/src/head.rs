//! Scoring every candidate of one head against its exact dense attention.

use crate::candidates::{Candidate, CandidateSpace, HeadCandidates};
use crate::dense::{block_output, prob_block, HeadInputs};
use crate::error::{Result, SearchError};
use crate::mask::prefix_sums;
use crate::objective::{Objective, Tally};
use minference_core::{HeadPattern, TILE};
use rayon::prelude::*;

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
    if opts.objective == Objective::OutputResidual && h.residual.is_none() {
        return Err(SearchError::Input(
            "objective output-residual needs the head's output projection and layer input (a model search)".into(),
        ));
    }
    let cands = HeadCandidates::new(h)?.build(&opts.space)?;
    let tallies = score_candidates(h, &cands, opts, want_output)?;
    let (tallies, dense_output) = tallies;
    let (candidates, best) = rank_candidates(&cands, &tallies, opts);
    Ok(HeadSearch { candidates, best, dense_output })
}

/// Each candidate's score under the objective, and the index of the best (CPU and GPU scoring).
pub(crate) fn rank_candidates(
    cands: &[Candidate],
    tallies: &[Tally],
    opts: &SearchOptions,
) -> (Vec<CandidateScore>, usize) {
    let candidates: Vec<CandidateScore> = cands
        .iter()
        .zip(tallies)
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
    (candidates, best)
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

/// What one row block contributes: per scored row and candidate the kept mass (row-major), the
/// output-error sums per candidate, and the block's dense output rows.
struct BlockScore {
    masses: Vec<f64>,
    output: Vec<Tally>,
    dense: Vec<f32>,
}

/// Per-thread buffers.
#[derive(Default)]
struct Scratch {
    probs: Vec<f32>,
    prefix: Vec<f64>,
    acc: Vec<f32>,
    gather: Vec<f32>,
    sparse_row: Vec<f32>,
}

/// Row blocks are scored in parallel; their contributions are then added in row order, so the
/// result does not depend on the number of threads.
fn score_candidates(h: &HeadInputs, cands: &[Candidate], opts: &SearchOptions, want_output: bool) -> Result<Scored> {
    let (n, d) = (h.n, h.head_dim);
    let floor = opts.floor_for(n);
    let keep_output = want_output && h.v.is_some();
    let first_block = if keep_output { 0 } else { floor.min(n) / TILE };
    let blocks: Vec<BlockScore> = (first_block..h.row_blocks())
        .into_par_iter()
        .map_init(Scratch::default, |s, block| score_block(h, cands, opts, floor, keep_output, block, s))
        .collect::<Result<_>>()?;
    let mut tallies = vec![Tally::default(); cands.len()];
    let mut out = keep_output.then(|| Vec::with_capacity(n * d));
    for b in blocks {
        if let Some(o) = out.as_mut() {
            o.extend_from_slice(&b.dense);
        }
        for row in b.masses.chunks_exact(cands.len().max(1)) {
            for (t, &m) in tallies.iter_mut().zip(row) {
                t.mass += m;
                t.rows += 1;
            }
        }
        for (t, o) in tallies.iter_mut().zip(&b.output) {
            t.err_sq += o.err_sq;
            t.ref_sq += o.ref_sq;
            t.over += o.over;
            t.res_err_sq += o.res_err_sq;
        }
    }

    Ok((tallies, out))
}

fn score_block(
    h: &HeadInputs,
    cands: &[Candidate],
    opts: &SearchOptions,
    floor: usize,
    keep_output: bool,
    block: usize,
    s: &mut Scratch,
) -> Result<BlockScore> {
    let d = h.head_dim;
    let needs_output = opts.objective.needs_output();
    let threshold = match opts.objective {
        Objective::OutputCount { threshold } => threshold,
        _ => 5e-3,
    };
    let p = prob_block(h, block, &mut s.probs)?;
    let mut score = BlockScore { masses: Vec::new(), output: vec![Tally::default(); cands.len()], dense: Vec::new() };
    if needs_output || keep_output {
        if let Some(v) = h.v {
            score.dense = vec![0f32; p.rows * d];
            block_output(&p, v, d, &mut score.dense);
        }
    }
    let first = floor.max(p.row0) - p.row0;
    if first >= p.rows {
        if !keep_output {
            score.dense.clear();
        }
        return Ok(score);
    }
    score.masses.reserve((p.rows - first) * cands.len());
    for a in first..p.rows {
        let row = p.row(a);
        prefix_sums(row, &mut s.prefix);
        for c in cands {
            score.masses.push(c.mask.row_mass(p.row0 + a, &s.prefix, row));
        }
    }
    if needs_output {
        let v = h.v.ok_or_else(|| SearchError::Input("output objective needs V".into()))?;
        s.acc.resize(TILE * d, 0.0);
        s.sparse_row.resize(d, 0.0);
        for (ci, c) in cands.iter().enumerate() {
            c.mask.block_numerator(&p, v, d, &mut s.acc, &mut s.gather);
            for a in first..p.rows {
                let m = score.masses[(a - first) * cands.len() + ci];
                let inv = if m > 0.0 { (1.0 / m) as f32 } else { 0.0 };
                for (x, y) in s.sparse_row.iter_mut().zip(&s.acc[a * d..(a + 1) * d]) {
                    *x = y * inv;
                }
                let dense = &score.dense[a * d..(a + 1) * d];
                score.output[ci].add_output(&s.sparse_row, dense, threshold);
                if let Some(r) = h.residual {
                    for (x, y) in s.sparse_row.iter_mut().zip(dense) {
                        *x -= y;
                    }
                    score.output[ci].res_err_sq += r.error_sq(p.row0 + a, &s.sparse_row);
                }
            }
        }
    }
    if !keep_output {
        score.dense.clear();
    }
    Ok(score)
}
