//! Global kernel-density budget (issue 14 item 2): instead of fitting every head to one per-head
//! cost, choose one candidate per head so that the mean kernel density over all heads and layers
//! stays within a target while the summed loss is smallest, by marginal gain per unit of density.
//!
//! Each head's candidates are reduced to their lower convex hull in (density, loss); every head
//! starts at its cheapest hull point, then the upgrade (next hull point of one head) with the
//! largest loss decrease per unit of added density that still fits is taken, until none fits. A
//! head whose loss falls steeply with density (one that copies from far context) climbs to 90% or
//! dense; a local head stays at a sliver. Include `Dense` among the candidates
//! (`CandidateSpace::given`) so a head can stay dense.

use crate::driver::ModelSearch;
use crate::error::{Result, SearchError};
use crate::head::CandidateScore;
use crate::objective::Objective;
use minference_core::config::{HeadEntry, LayerPatterns};
use std::collections::BTreeMap;

/// One option of one head: its kernel density (share of causal pairs computed) and its loss
/// (lower is better).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostPoint {
    pub density: f64,
    pub loss: f64,
}

/// A candidate's loss under `objective`: `1 − recall` for recall, the score itself otherwise.
pub fn candidate_loss(c: &CandidateScore, objective: &Objective) -> f64 {
    match objective {
        Objective::Recall => 1.0 - c.recall,
        _ => c.score,
    }
}

/// Checks a density target: finite, in (0, 1].
pub fn check_density(density: f64) -> Result<()> {
    if !(density.is_finite() && density > 0.0 && density <= 1.0) {
        return Err(SearchError::Input(format!("--density must be in (0, 1] (mean kernel density), got {density}")));
    }
    Ok(())
}

/// Indices of the lower convex hull of `points` in (density, loss), cheapest first; loss
/// strictly decreases along it.
fn hull(points: &[CostPoint]) -> Vec<usize> {
    let mut order: Vec<usize> =
        (0..points.len()).filter(|&i| points[i].density.is_finite() && points[i].loss.is_finite()).collect();
    // Cheapest first; at equal density the lower loss first.
    order.sort_by(|&a, &b| {
        points[a].density.total_cmp(&points[b].density).then(points[a].loss.total_cmp(&points[b].loss)).then(a.cmp(&b))
    });
    let mut h: Vec<usize> = Vec::new();
    for i in order {
        let p = points[i];
        // Not an improvement on the last kept point: dominated.
        if let Some(&last) = h.last() {
            if p.loss >= points[last].loss {
                continue;
            }
        }
        // Keep the hull convex: drop the last point while it lies on or above the chord.
        while h.len() >= 2 {
            let (a, b) = (points[h[h.len() - 2]], points[h[h.len() - 1]]);
            let cross = (b.density - a.density) * (p.loss - a.loss) - (b.loss - a.loss) * (p.density - a.density);
            if cross <= 0.0 {
                h.pop();
            } else {
                break;
            }
        }
        h.push(i);
    }
    h
}

/// One index per head into its `options`, with mean density `≤ density` (over heads) and the
/// summed loss made small by marginal gain per unit of density. An error when a head has no
/// finite option or when even the cheapest options exceed the target.
pub fn allocate(options: &[Vec<CostPoint>], density: f64) -> Result<Vec<usize>> {
    check_density(density)?;
    let hulls: Vec<Vec<usize>> = options.iter().map(|o| hull(o)).collect();
    if let Some(i) = hulls.iter().position(Vec::is_empty) {
        return Err(SearchError::Input(format!("head {i} has no candidate with a finite density and loss")));
    }
    let total_budget = density * options.len() as f64;
    let mut at = vec![0usize; options.len()];
    let mut used: f64 = hulls.iter().zip(options).map(|(h, o)| o[h[0]].density).sum();
    if used > total_budget * (1.0 + 1e-12) {
        return Err(SearchError::Input(format!(
            "--density {density}: even the cheapest candidates have mean kernel density {:.4}",
            used / options.len().max(1) as f64
        )));
    }
    loop {
        let mut best: Option<(usize, f64)> = None;
        for (i, h) in hulls.iter().enumerate() {
            let Some(&next) = h.get(at[i] + 1) else { continue };
            let (cur, nxt) = (options[i][h[at[i]]], options[i][next]);
            let extra = nxt.density - cur.density;
            if used + extra > total_budget * (1.0 + 1e-12) {
                continue;
            }
            let gain = (cur.loss - nxt.loss) / extra.max(1e-300);
            if best.is_none_or(|(_, g)| gain > g) {
                best = Some((i, gain));
            }
        }
        let Some((i, _)) = best else { break };
        let h = &hulls[i];
        used += options[i][h[at[i] + 1]].density - options[i][h[at[i]]].density;
        at[i] += 1;
    }
    Ok(at.iter().zip(&hulls).map(|(&a, h)| h[a]).collect())
}

impl ModelSearch {
    /// Re-chooses every head's candidate under a global mean kernel-density target (see the
    /// module docs) and rebuilds the config; returns the mean density reached.
    pub fn allocate_density(&mut self, density: f64, objective: &Objective) -> Result<f64> {
        self.allocate_density_by(density, &|c| candidate_loss(c, objective))
    }

    /// [`Self::allocate_density`] with the summed loss of each candidate given by `loss`
    /// (e.g. a power of [`candidate_loss`]).
    pub fn allocate_density_by(&mut self, density: f64, loss: &dyn Fn(&CandidateScore) -> f64) -> Result<f64> {
        let options: Vec<Vec<CostPoint>> = self
            .heads
            .iter()
            .map(|r| r.search.candidates.iter().map(|c| CostPoint { density: c.density, loss: loss(c) }).collect())
            .collect();
        let picks = allocate(&options, density)?;
        let layers = self.config.layers.len();
        let mut out = vec![LayerPatterns { heads: BTreeMap::new() }; layers];
        let mut sum = 0.0;
        for (r, &p) in self.heads.iter_mut().zip(&picks) {
            r.search.best = p;
            let c = r.search.chosen();
            sum += c.density;
            let layer = out
                .get_mut(r.layer)
                .ok_or_else(|| SearchError::Input(format!("head report for layer {} of {layers}", r.layer)))?;
            layer.heads.insert(r.head, HeadEntry { pattern: c.pattern, score: c.score });
        }
        self.config.layers = out;
        Ok(sum / self.heads.len().max(1) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[(f64, f64)]) -> Vec<CostPoint> {
        v.iter().map(|&(density, loss)| CostPoint { density, loss }).collect()
    }

    #[test]
    fn hull_drops_dominated_and_concave_points() {
        // (0.5, 0.6) is dominated by (0.3, 0.5); (0.6, 0.45) lies above the chord (0.3,0.5)-(1,0).
        let p = pts(&[(1.0, 0.0), (0.1, 1.0), (0.3, 0.5), (0.5, 0.6), (0.6, 0.45)]);
        assert_eq!(hull(&p), vec![1, 2, 0]);
    }

    #[test]
    fn bad_targets_and_empty_heads_are_errors() {
        for d in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(allocate(&[pts(&[(0.1, 0.0)])], d).is_err(), "{d}");
        }
        assert!(allocate(&[pts(&[(f64::NAN, 0.0)])], 0.5).unwrap_err().to_string().contains("head 0"));
        let e = allocate(&[pts(&[(0.6, 0.0)])], 0.5).unwrap_err().to_string();
        assert!(e.contains("cheapest"), "{e}");
    }
}
