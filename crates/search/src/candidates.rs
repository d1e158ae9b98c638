//! Candidate patterns for one head: fixed presets (paper Table 7, the released code's lists) and
//! kernel-aware candidates whose free setting is moved in steps (50 tokens, 1 block for BS) until
//! their kernel work on this head's actual indices matches a target cost (paper §3.2 ChangeSpace).

use crate::dense::HeadInputs;
use crate::error::{Result, SearchError};
use crate::mask::HeadMask;
use minference_core::{
    convert_vs_head, estimate_bs_head, gather_last_q, select_vs_pattern, vs_scores, AdaptiveBudget, Coverage,
    HeadPattern, HostTensor, SeqLen, VsScores,
};
use std::collections::BTreeMap;

/// Candidate families to include.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Paper Table 7: A-shape (1024, 4096); VS (30, 2048), (100, 1800), (500, 1500), (3000, 200); BS 100.
    Paper,
    /// Released code (search v1 + v2): stream_llm (100, 800); VS (30, 800), (100, 750), (500, 700),
    /// (3500, 100), (100, 800), (1000, 4096); BS 100.
    Code,
    /// Settings adjusted per head to the target cost (see [`TargetCost`]).
    KernelAware,
}

impl Preset {
    pub fn parse(name: &str) -> Result<Self> {
        match name.trim() {
            "paper" => Ok(Preset::Paper),
            "code" => Ok(Preset::Code),
            "kernel-aware" | "kernel_aware" => Ok(Preset::KernelAware),
            other => {
                Err(SearchError::Input(format!("unknown preset `{other}` (expected paper, code or kernel-aware)")))
            }
        }
    }

    /// The fixed patterns of a preset (empty for kernel-aware).
    pub fn patterns(&self) -> Vec<HeadPattern> {
        let vs = |k_v, k_s| HeadPattern::VerticalSlash { k_v, k_s };
        match self {
            Preset::Paper => vec![
                HeadPattern::AShape { n_init: 1024, n_local: 4096 },
                vs(30, 2048),
                vs(100, 1800),
                vs(500, 1500),
                vs(3000, 200),
                HeadPattern::BlockSparse { k_b: 100 },
            ],
            Preset::Code => vec![
                HeadPattern::AShape { n_init: 100, n_local: 800 },
                vs(30, 800),
                vs(100, 750),
                vs(500, 700),
                vs(3500, 100),
                vs(100, 800),
                vs(1000, 4096),
                HeadPattern::BlockSparse { k_b: 100 },
            ],
            Preset::KernelAware => Vec::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Preset::Paper => "paper",
            Preset::Code => "code",
            Preset::KernelAware => "kernel-aware",
        }
    }
}

/// The cost kernel-aware candidates are fitted to, as a share of dense causal kernel work
/// (64×64 tiles plus 64-column gather groups, core coverage accounting).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TargetCost {
    /// The work of A-shape `(n_init, n_local)` at the head's length (paper: 1024 + 4096).
    AShape { n_init: usize, n_local: usize },
    /// A fixed share of dense work in `(0, 1]`.
    Work(f64),
}

impl Default for TargetCost {
    fn default() -> Self {
        TargetCost::AShape { n_init: 1024, n_local: 4096 }
    }
}

impl TargetCost {
    /// `ashape:1024,4096` or `work:0.3`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || SearchError::Input(format!("target cost `{text}`: expected ashape:INIT,LOCAL or work:FRACTION"));
        let (kind, value) = text.split_once(':').ok_or_else(bad)?;
        match kind.trim() {
            "ashape" => {
                let (a, b) = value.split_once(',').ok_or_else(bad)?;
                let n_init = a.trim().parse().map_err(|_| bad())?;
                let n_local = b.trim().parse().map_err(|_| bad())?;
                if n_local == 0 {
                    return Err(SearchError::Input("target A-shape needs n_local > 0".into()));
                }
                Ok(TargetCost::AShape { n_init, n_local })
            }
            "work" => {
                let f: f64 = value.trim().parse().map_err(|_| bad())?;
                if !(f > 0.0 && f <= 1.0) {
                    return Err(SearchError::Input(format!("target work share must be in (0, 1], got {f}")));
                }
                Ok(TargetCost::Work(f))
            }
            _ => Err(bad()),
        }
    }
}

/// Which candidates a head gets.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateSpace {
    pub presets: Vec<Preset>,
    pub target: TargetCost,
    /// Adaptive Vertical-Slash rules scored as candidates of their own (origin `adaptive`): each is
    /// a [`HeadPattern::AdaptiveVs`] whose budgets come from this head's estimate on the
    /// calibration prompt, written as an adaptive head when chosen.
    pub adaptive: Vec<AdaptiveBudget>,
    /// ChangeSpace step for token-valued settings (paper: 50).
    pub step: usize,
    /// Explicit patterns scored as they are (origin `given`), e.g. a config's entry.
    pub given: Vec<HeadPattern>,
}

impl Default for CandidateSpace {
    fn default() -> Self {
        CandidateSpace {
            presets: vec![Preset::KernelAware],
            target: TargetCost::default(),
            adaptive: Vec::new(),
            step: 50,
            given: Vec::new(),
        }
    }
}

/// One candidate with its kernel mask on this head and its kernel accounting.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub pattern: HeadPattern,
    /// Where it came from: `paper`, `code`, `kernel-aware`, `adaptive`.
    pub origin: &'static str,
    pub mask: HeadMask,
    pub coverage: Coverage,
    /// Kernel work as a share of dense work (the cost kernel-aware candidates are fitted to).
    pub work: f64,
}

/// A kernel-aware family: its pattern for a value of the free setting.
type Family = Box<dyn Fn(usize) -> HeadPattern>;

/// Per-head state shared by every candidate: the VS estimate scores and the dense work.
pub struct HeadCandidates<'a> {
    h: &'a HeadInputs<'a>,
    seq: SeqLen,
    scores: VsScores,
    dense_tiles: f64,
}

impl<'a> HeadCandidates<'a> {
    pub fn new(h: &'a HeadInputs<'a>) -> Result<Self> {
        let seq = SeqLen::prefill(h.n);
        let q_last = gather_last_q(HostTensor::F32(h.q), 0, h.head_dim, h.n)?;
        let scores = vs_scores(&q_last, HostTensor::F32(h.k), 0, h.head_dim, seq)?;
        let dense = HeadMask::Dense.coverage(&HeadPattern::Dense, h.n)?;
        Ok(HeadCandidates { h, seq, scores, dense_tiles: dense.tiles64.max(1) as f64 })
    }

    pub fn scores(&self) -> &VsScores {
        &self.scores
    }

    /// The kernel mask of `pattern` on this head (VS and BS indices estimated as at inference).
    pub fn mask(&self, pattern: &HeadPattern) -> Result<HeadMask> {
        Ok(match *pattern {
            HeadPattern::Dense => HeadMask::Dense,
            HeadPattern::AShape { n_init, n_local } => HeadMask::AShape { n_init, n_local },
            HeadPattern::VerticalSlash { .. } | HeadPattern::AdaptiveVs { .. } => {
                // An adaptive head's budgets come from the same scores, as at inference.
                let sel = select_vs_pattern(pattern, &self.scores).unwrap_or_default();
                HeadMask::Index(convert_vs_head(&sel, self.seq)?)
            }
            HeadPattern::BlockSparse { k_b } => HeadMask::Index(estimate_bs_head(
                HostTensor::F32(self.h.q),
                0,
                HostTensor::F32(self.h.k),
                0,
                self.h.head_dim,
                self.seq,
                k_b,
            )?),
        })
    }

    pub fn candidate(&self, pattern: HeadPattern, origin: &'static str) -> Result<Candidate> {
        let mask = self.mask(&pattern)?;
        let coverage = mask.coverage(&pattern, self.h.n)?;
        let work = (coverage.tiles64 + coverage.gather_groups) as f64 / self.dense_tiles;
        Ok(Candidate { pattern, origin, mask, coverage, work })
    }

    /// The target as a share of dense work at this head's length.
    pub fn target_work(&self, target: &TargetCost) -> Result<f64> {
        match *target {
            TargetCost::Work(f) => Ok(f),
            TargetCost::AShape { n_init, n_local } => {
                Ok(self.candidate(HeadPattern::AShape { n_init, n_local }, "target")?.work)
            }
        }
    }

    /// All candidates of `space`, duplicates (same pattern) removed, presets first, then the
    /// adaptive rules, then the given patterns.
    pub fn build(&self, space: &CandidateSpace) -> Result<Vec<Candidate>> {
        let mut out: Vec<Candidate> = Vec::new();
        let push = |c: Candidate, out: &mut Vec<Candidate>| {
            if !out.iter().any(|o| o.pattern == c.pattern) {
                out.push(c);
            }
        };
        for preset in &space.presets {
            if *preset == Preset::KernelAware {
                for c in self.kernel_aware(space)? {
                    push(c, &mut out);
                }
                continue;
            }
            for p in preset.patterns() {
                push(self.candidate(p, preset.name())?, &mut out);
            }
        }
        for rule in &space.adaptive {
            let p = rule.to_pattern().map_err(|e| SearchError::Input(format!("adaptive candidate: {e}")))?;
            push(self.candidate(p, "adaptive")?, &mut out);
        }
        for p in &space.given {
            push(self.candidate(*p, "given")?, &mut out);
        }
        if out.is_empty() {
            return Err(SearchError::Input("the candidate space is empty".into()));
        }
        Ok(out)
    }

    /// Kernel-aware families: A-shape with the target's `n_init` (a quarter of the window for a
    /// work target) and a free window; VS with `k_v ∈ {30, 100, 500}` and free `k_s`; VS with `k_s = 200` and free
    /// `k_v`; BS with free `k_b`. Each is fitted to the target; candidates that stay more than one
    /// step above the target at their smallest setting are dropped.
    pub fn kernel_aware(&self, space: &CandidateSpace) -> Result<Vec<Candidate>> {
        let target = self.target_work(&space.target)?;
        let n = self.h.n;
        let step = space.step.max(1);
        let grid = |lo: usize| -> Vec<usize> {
            let top = n.div_ceil(step) * step;
            let first = lo.div_ceil(step).max(1) * step;
            (first..=top.max(first)).step_by(step).collect()
        };
        // A-shape keeps the target's sinks; for a work target it keeps the paper's 1:4 ratio.
        let fixed_init = match space.target {
            TargetCost::AShape { n_init, .. } => Some(n_init),
            TargetCost::Work(_) => None,
        };
        let mut out = Vec::new();
        let mut families: Vec<(Vec<usize>, Family)> = vec![(
            grid(step),
            Box::new(move |x| HeadPattern::AShape { n_init: fixed_init.unwrap_or((x / 4).max(1)), n_local: x }),
        )];
        for k_v in [30usize, 100, 500] {
            families.push((grid(100), Box::new(move |x| HeadPattern::VerticalSlash { k_v, k_s: x })));
        }
        families.push((grid(50), Box::new(|x| HeadPattern::VerticalSlash { k_v: x, k_s: 200 })));
        families.push(((1..=self.seq.row_blocks()).collect(), Box::new(|x| HeadPattern::BlockSparse { k_b: x })));
        for (values, make) in &families {
            if let Some(c) = self.fit(values, target, |x| self.candidate(make(x), "kernel-aware"))? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// The setting in `values` (ascending; work assumed non-decreasing) whose work is closest to
    /// `target`, found by bisection. `None` when even the smallest setting is over the target by
    /// more than the gap to its next setting (the family cannot be made that cheap).
    fn fit(
        &self,
        values: &[usize],
        target: f64,
        eval: impl Fn(usize) -> Result<Candidate>,
    ) -> Result<Option<Candidate>> {
        if values.is_empty() {
            return Ok(None);
        }
        let mut cache: BTreeMap<usize, Candidate> = BTreeMap::new();
        let work_at = |i: usize, cache: &mut BTreeMap<usize, Candidate>| -> Result<f64> {
            if let Some(c) = cache.get(&i) {
                return Ok(c.work);
            }
            let c = eval(values[i])?;
            let work = c.work;
            cache.insert(i, c);
            Ok(work)
        };
        // First index whose work reaches the target.
        let (mut lo, mut hi) = (0usize, values.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if work_at(mid, &mut cache)? >= target {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let best = if lo == values.len() {
            lo - 1
        } else if lo == 0 {
            let w0 = work_at(0, &mut cache)?;
            let gap = if values.len() > 1 { work_at(1, &mut cache)? - w0 } else { 0.0 };
            if w0 - target > gap.max(1e-9) && w0 > target * 1.02 {
                return Ok(None);
            }
            0
        } else {
            let (below, above) = (work_at(lo - 1, &mut cache)?, work_at(lo, &mut cache)?);
            if target - below <= above - target {
                lo - 1
            } else {
                lo
            }
        };
        work_at(best, &mut cache)?;
        Ok(cache.remove(&best))
    }
}
