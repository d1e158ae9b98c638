//! Adaptive Vertical-Slash heads (core's adaptive.rs) through a backend's own pipeline: budgets in
//! their bounds, the selection a fixed VS head of the same budgets gets, and the kernel output
//! equal to the masked reference.

use super::*;
use minference_core::clamp_vs_budget;

/// Adaptive heads (several gammas and bounds) beside a fixed VS and a dense head: each adaptive
/// head's budgets lie in its clamped bounds (gamma = 1 with open bounds keeps every entry), its
/// selection equals the backend's selection for a fixed VS head with those budgets, and the
/// attention equals the masked reference of the resulting kernel mask.
pub fn check_adaptive_vs_matches_masked_with<B: BackendTransfer>(
    backend: &B,
    seed: u64,
    dtype: DType,
) -> Result<(), String> {
    let adaptive =
        |gamma_ppm, min_v, max_v, min_s, max_s| HeadPattern::AdaptiveVs { gamma_ppm, min_v, max_v, min_s, max_s };
    let patterns = [
        adaptive(500_000, 30, 6096, 100, 6096),
        adaptive(900_000, 40, 200, 100, 300),
        adaptive(1_000_000, 0, usize::MAX, 0, usize::MAX),
        adaptive(800_000, 0, 10, 0, 20),
        HeadPattern::VerticalSlash { k_v: 40, k_s: 150 },
        HeadPattern::Dense,
    ];
    for (n, d) in [(700usize, 64usize), (257, 128), (63, 64)] {
        let case = Case::random(AttnShape::single(patterns.len(), 2, d, n), dtype, seed ^ n as u64);
        let what = format!("adaptive VS N={n} D={d}");
        let (q, k) = (case.q.view(), case.k.view());
        let vs = backend.estimate_vs(&case.shape, q, k, &patterns).map_err(err(&what))?;
        let mut fixed = patterns.to_vec();
        for (h, p) in patterns.iter().enumerate() {
            let HeadPattern::AdaptiveVs { min_v, max_v, min_s, max_s, gamma_ppm } = *p else { continue };
            let (k_v, k_s) = (vs[h].verticals.len(), vs[h].slashes.len());
            let (lo_v, lo_s) = clamp_vs_budget(min_v.min(max_v), min_s.min(max_s), n);
            let (hi_v, hi_s) = clamp_vs_budget(max_v, max_s, n);
            if !(lo_v..=hi_v).contains(&k_v) || !(lo_s..=hi_s).contains(&k_s) {
                return Err(format!(
                    "{what}: head {h} picked ({k_v}, {k_s}) outside [{lo_v}, {hi_v}] x [{lo_s}, {hi_s}]"
                ));
            }
            if gamma_ppm == 1_000_000 && max_v == usize::MAX && (k_v, k_s) != (n, n) {
                return Err(format!("{what}: head {h} with gamma 1 kept ({k_v}, {k_s}) of {n}"));
            }
            fixed[h] = HeadPattern::VerticalSlash { k_v, k_s };
        }
        let again = backend.estimate_vs(&case.shape, q, k, &fixed).map_err(err(&what))?;
        if let Some(h) = (0..patterns.len()).find(|&h| vs[h] != again[h]) {
            return Err(format!("{what}: head {h} selects otherwise than a fixed VS head of its budgets"));
        }
        let index = sparse_vs_masked(backend, &case, &patterns, Some(vs.clone()), &what)?;
        check_ideal_in_kernel(&case.shape, &patterns, &vs, &index, &what)?;
    }
    Ok(())
}
