//! FlexPrefill-style adaptive Vertical-Slash budgets (spec §6.1 step 4, token granularity): pick the
//! smallest numbers of verticals and slashes whose estimated attention mass reaches a share `gamma`.
//!
//! A head with [`HeadPattern::AdaptiveVs`] is estimated exactly as a fixed VS head (the raw
//! [`VsScores`] of its last query rows, before forcing), gets its budgets from
//! [`adaptive_vs_budget`], and is then selected ([`select_vs`]) and converted as a VS head with those
//! budgets — per prompt, so a head that looks at a few columns on one prompt and at many on another
//! pays for what it needs each time.
//!
//! The selection always keeps the forced entries (the first 30 columns, the 100 nearest diagonals)
//! and fills the rest of its budget with the best other scores, so the budget counts the forced
//! entries first: `k = F + m` with `F` the forced count and `m` the fewest other entries, heaviest
//! first, that bring the kept mass to `gamma` of the total. The selection of `k` then keeps at
//! least `gamma` of the estimated mass, whatever the forced entries weigh.
//!
//! **Mass is counted in fixed point** so that the count does not depend on summation order: a score
//! `x` weighs `floor(min(x, 128) · 2^32)` units ([`quantize_mass`]; non-finite or negative scores
//! weigh 0), the target is `ceil(gamma · total)` units in IEEE f64 ([`mass_target`]), and `m` is
//! the fewest other entries whose units bring the forced entries' units to the target. The GPU
//! estimator (`kernels/adaptive.cu`, `vs_adaptive`) computes the same `k` from the same scores
//! with a threshold search instead of a sort. Entries below `2^-32` of one estimation row's mass
//! weigh 0.

use crate::error::{CoreError, Result};
use crate::index::VsSelection;
use crate::pattern::{HeadPattern, VS_FORCED_SLASHES, VS_FORCED_VERTICALS};
use crate::vs_estimate::{select_vs, VsScores};

/// Fractional bits of the fixed-point mass.
pub const MASS_FRAC_BITS: u32 = 32;
/// Scores above this weigh as this (a VS score is at most 64, the estimation rows' total mass).
pub const MASS_CAP: f32 = 128.0;
/// `gamma = 1` in the millionths [`HeadPattern::AdaptiveVs`] keeps.
pub const GAMMA_PPM_ONE: u32 = 1_000_000;

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

impl AdaptiveBudget {
    /// The budget rule of an adaptive head (`None` for every other pattern).
    pub fn of_pattern(p: &HeadPattern) -> Option<AdaptiveBudget> {
        match *p {
            HeadPattern::AdaptiveVs { gamma_ppm, min_v, max_v, min_s, max_s } => {
                Some(AdaptiveBudget { gamma: gamma_of_ppm(gamma_ppm), min_v, max_v, min_s, max_s })
            }
            _ => None,
        }
    }

    /// The per-head pattern of this rule: `gamma` in `(0, 1]` (kept to millionths), each minimum
    /// at most its maximum, both maxima > 0.
    pub fn to_pattern(&self) -> Result<HeadPattern> {
        let gamma_ppm = gamma_to_ppm(self.gamma)?;
        if self.max_v == 0 || self.max_s == 0 {
            return Err(CoreError::Budget(format!(
                "adaptive VS needs max_v and max_s > 0, got {} and {}",
                self.max_v, self.max_s
            )));
        }
        if self.min_v > self.max_v || self.min_s > self.max_s {
            return Err(CoreError::Budget(format!(
                "adaptive VS needs min_v <= max_v and min_s <= max_s, got [{}, {}] and [{}, {}]",
                self.min_v, self.max_v, self.min_s, self.max_s
            )));
        }
        Ok(HeadPattern::AdaptiveVs {
            gamma_ppm,
            min_v: self.min_v,
            max_v: self.max_v,
            min_s: self.min_s,
            max_s: self.max_s,
        })
    }
}

/// `gamma` in `(0, 1]` as millionths (rounded to the nearest).
pub fn gamma_to_ppm(gamma: f64) -> Result<u32> {
    if !(gamma.is_finite() && gamma > 0.0 && gamma <= 1.0) {
        return Err(CoreError::Budget(format!("adaptive gamma must be in (0, 1], got {gamma}")));
    }
    Ok(((gamma * GAMMA_PPM_ONE as f64).round() as u32).clamp(1, GAMMA_PPM_ONE))
}

/// The `gamma` of `ppm` millionths (`ppm / 1e6` in f64, the value both estimators use).
pub fn gamma_of_ppm(ppm: u32) -> f64 {
    ppm as f64 / GAMMA_PPM_ONE as f64
}

/// The fixed-point weight of one score (see the module docs).
pub fn quantize_mass(x: f32) -> u64 {
    if !(x.is_finite() && x > 0.0) {
        return 0;
    }
    // Exact: scaling by a power of two, then truncation of a value below 2^39.
    (x.min(MASS_CAP) as f64 * (1u64 << MASS_FRAC_BITS) as f64) as u64
}

/// The units `gamma` of `total` asks for: `ceil(gamma · total)` in IEEE f64, at most `total`
/// (`gamma` clamped to `[0, 1]`, NaN counts as 1).
pub fn mass_target(total: u64, gamma: f64) -> u64 {
    let gamma = if gamma.is_nan() { 1.0 } else { gamma.clamp(0.0, 1.0) };
    ((gamma * total as f64).ceil() as u64).min(total)
}

/// `(k_v, k_s)`: for each score vector, the budget whose VS selection keeps at least `gamma` of
/// the vector's total (fixed-point) mass — the forced entries (`VS_FORCED_VERTICALS`,
/// `VS_FORCED_SLASHES`) plus the fewest heaviest others ([`mass_count`]) — clamped to
/// `[min, max]`.
pub fn adaptive_vs_budget(scores: &VsScores, cfg: &AdaptiveBudget) -> (usize, usize) {
    let k_v = mass_count(&scores.vertical, VS_FORCED_VERTICALS, cfg.gamma).max(cfg.min_v).min(cfg.max_v);
    let k_s = mass_count(&scores.slash, VS_FORCED_SLASHES, cfg.gamma).max(cfg.min_s).min(cfg.max_s);
    (k_v, k_s)
}

/// `F + m`: the first `F = min(forced, len)` entries are kept whatever they weigh, and `m` is the
/// fewest of the others, heaviest first, that bring the kept fixed-point mass to `gamma` of the
/// total (`m = 0` when the forced entries reach it or the total is 0).
pub fn mass_count(scores: &[f32], forced: usize, gamma: f64) -> usize {
    let f = forced.min(scores.len());
    let sum = |u: &[u64]| u.iter().fold(0u64, |a, &x| a.saturating_add(x));
    let base: Vec<u64> = scores[..f].iter().map(|&x| quantize_mass(x)).collect();
    let mut rest: Vec<u64> = scores[f..].iter().map(|&x| quantize_mass(x)).collect();
    let kept = sum(&base);
    let target = mass_target(kept.saturating_add(sum(&rest)), gamma);
    if kept >= target {
        return f;
    }
    rest.sort_unstable_by(|a, b| b.cmp(a));
    let mut acc = kept;
    for (i, u) in rest.iter().enumerate() {
        acc = acc.saturating_add(*u);
        if acc >= target {
            return f + i + 1;
        }
    }
    scores.len()
}

/// The budgets of a Vertical-Slash head on these scores: the fixed ones, or the adaptive rule's
/// (before [`crate::clamp_vs_budget`]); `None` for other patterns.
pub fn vs_budget_of(pattern: &HeadPattern, scores: &VsScores) -> Option<(usize, usize)> {
    match *pattern {
        HeadPattern::VerticalSlash { k_v, k_s } => Some((k_v, k_s)),
        _ => AdaptiveBudget::of_pattern(pattern).map(|cfg| adaptive_vs_budget(scores, &cfg)),
    }
}

/// The VS selection of a Vertical-Slash head (fixed or adaptive) on these scores; `None` for
/// other patterns.
pub fn select_vs_pattern(pattern: &HeadPattern, scores: &VsScores) -> Option<VsSelection> {
    vs_budget_of(pattern, scores).map(|(k_v, k_s)| select_vs(scores, k_v, k_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_smallest_prefix_reaching_gamma() {
        let v = [0.5, 0.25, 0.125, 0.125];
        assert_eq!(mass_count(&v, 0, 0.75), 2);
        assert_eq!(mass_count(&v, 0, 0.76), 3);
        assert_eq!(mass_count(&[0.0; 4], 0, 0.5), 0);
        // Forced entries count first, whatever they weigh: entry 0 weighs nothing here.
        let w = [0.0, 0.5, 0.25, 0.25];
        assert_eq!(mass_count(&w, 1, 0.5), 2);
        assert_eq!(mass_count(&w, 1, 0.6), 3);
        assert_eq!(mass_count(&v, 1, 0.5), 1);
        assert_eq!(mass_count(&v, 9, 1.0), 4);
        // Forced counts 30 and 100: the budget starts there; then the bounds (max wins).
        let mut vertical = vec![0.0f32; 200];
        vertical[150] = 1.0;
        vertical[160] = 1.0;
        let s = VsScores { vertical, slash: vec![1.0; 200] };
        let cfg = AdaptiveBudget { gamma: 0.5, min_v: 0, max_v: 1000, min_s: 0, max_s: 1000 };
        assert_eq!(adaptive_vs_budget(&s, &cfg), (31, 100));
        let cfg = AdaptiveBudget { gamma: 1.0, ..cfg };
        assert_eq!(adaptive_vs_budget(&s, &cfg), (32, 200));
        let cfg = AdaptiveBudget { min_v: 40, max_s: 10, ..cfg };
        assert_eq!(adaptive_vs_budget(&s, &cfg), (40, 10));
    }

    #[test]
    fn weights_are_exact_fixed_point() {
        assert_eq!(quantize_mass(1.0), 1 << 32);
        assert_eq!(quantize_mass(0.5), 1 << 31);
        assert_eq!(quantize_mass(1e3), 128 << 32);
        for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1.0, 0.0, 1e-12] {
            assert_eq!(quantize_mass(x), 0, "{x}");
        }
        assert_eq!(mass_target(10, 0.25), 3);
        assert_eq!(mass_target(10, f64::NAN), 10);
        assert_eq!(mass_target(u64::MAX, 1.0), u64::MAX);
    }

    #[test]
    fn pattern_conversion_checks_its_rule() {
        let cfg = AdaptiveBudget::default();
        let p = cfg.to_pattern().unwrap();
        assert_eq!(p, HeadPattern::AdaptiveVs { gamma_ppm: 900_000, min_v: 30, max_v: 6096, min_s: 100, max_s: 6096 });
        assert_eq!(AdaptiveBudget::of_pattern(&p), Some(cfg));
        for gamma in [0.0, -0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert!(AdaptiveBudget { gamma, ..cfg }.to_pattern().is_err(), "{gamma}");
        }
        assert!(AdaptiveBudget { min_v: 7000, ..cfg }.to_pattern().is_err());
        assert!(AdaptiveBudget { max_s: 0, min_s: 0, ..cfg }.to_pattern().is_err());
        assert_eq!(AdaptiveBudget::of_pattern(&HeadPattern::DEFAULT), None);
    }
}
