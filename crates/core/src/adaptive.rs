//! FlexPrefill-style adaptive Vertical-Slash budgets (spec §6.1 step 4, token granularity): pick the
//! smallest numbers of verticals and slashes whose estimated attention mass reaches a share `gamma`.

use crate::vs_estimate::VsScores;

/// Coverage target and budget bounds. `gamma` outside `[0, 1]` is clamped into it; when a minimum
/// exceeds its maximum the maximum wins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveBudget {
    pub gamma: f64,
    pub min_v: usize,
    pub max_v: usize,
    pub min_s: usize,
    pub max_s: usize,
}

impl Default for AdaptiveBudget {
    /// FlexPrefill's `gamma = 0.9`, bounded by MInference's floors and its widest shipped budget.
    fn default() -> Self {
        AdaptiveBudget { gamma: 0.9, min_v: 30, max_v: 6096, min_s: 100, max_s: 6096 }
    }
}

/// `(k_v, k_s)`: for each score vector, the smallest `k` such that the `k` largest scores hold at
/// least `gamma` of the vector's total mass, clamped to `[min, max]`.
pub fn adaptive_vs_budget(scores: &VsScores, cfg: &AdaptiveBudget) -> (usize, usize) {
    let gamma = if cfg.gamma.is_nan() { 1.0 } else { cfg.gamma.clamp(0.0, 1.0) };
    let k_v = mass_count(&scores.vertical, gamma).max(cfg.min_v).min(cfg.max_v);
    let k_s = mass_count(&scores.slash, gamma).max(cfg.min_s).min(cfg.max_s);
    (k_v, k_s)
}

/// Smallest number of largest entries whose sum reaches `gamma` of the total (non-finite and
/// negative entries count as 0).
fn mass_count(scores: &[f32], gamma: f64) -> usize {
    let mut vals: Vec<f64> = scores.iter().map(|&x| if x.is_finite() && x > 0.0 { x as f64 } else { 0.0 }).collect();
    let total: f64 = vals.iter().sum();
    if total <= 0.0 {
        return 0;
    }
    vals.sort_unstable_by(|a, b| b.total_cmp(a));
    let target = gamma * total;
    let mut acc = 0.0;
    for (i, v) in vals.iter().enumerate() {
        if acc >= target {
            return i;
        }
        acc += v;
    }
    vals.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_smallest_prefix_reaching_gamma() {
        let s = VsScores { vertical: vec![0.5, 0.25, 0.125, 0.125], slash: vec![1.0, 0.0, 0.0, 0.0] };
        let cfg = AdaptiveBudget { gamma: 0.75, min_v: 0, max_v: 10, min_s: 0, max_s: 10 };
        assert_eq!(adaptive_vs_budget(&s, &cfg), (2, 1));
        let cfg = AdaptiveBudget { gamma: 0.76, ..cfg };
        assert_eq!(adaptive_vs_budget(&s, &cfg).0, 3);
        let cfg = AdaptiveBudget { gamma: 0.5, min_v: 3, max_v: 10, min_s: 0, max_s: 0 };
        assert_eq!(adaptive_vs_budget(&s, &cfg), (3, 0));
    }
}
