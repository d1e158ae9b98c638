//! Adaptive (FlexPrefill-style) VS budgets.

use minference_core::adaptive::{mass_count, mass_target, quantize_mass};
use minference_core::{
    adaptive_vs_budget, select_vs, select_vs_pattern, vs_budget_of, AdaptiveBudget, HeadPattern, VsScores,
    VS_FORCED_SLASHES, VS_FORCED_VERTICALS,
};
use proptest::prelude::*;

/// Fixed-point mass of the first `forced` entries plus the `m` heaviest others.
fn kept_mass(scores: &[f32], forced: usize, m: usize) -> u64 {
    let f = forced.min(scores.len());
    let mut rest: Vec<u64> = scores[f..].iter().map(|&x| quantize_mass(x)).collect();
    rest.sort_by(|a, b| b.cmp(a));
    scores[..f].iter().map(|&x| quantize_mass(x)).sum::<u64>() + rest[..m].iter().sum::<u64>()
}

proptest! {
    #[test]
    fn budget_keeps_gamma_minimally_and_is_monotone(
        vertical in prop::collection::vec(0.0f32..1.0, 1..300),
        slash in prop::collection::vec(0.0f32..1.0, 1..300),
        gamma in 0.0f64..1.0,
        extra in 0.0f64..0.5,
        forced in 0usize..40,
    ) {
        // Exact in fixed point: F + m reaches the target, F + m - 1 does not (when m > 0).
        let k = mass_count(&vertical, forced, gamma);
        let f = forced.min(vertical.len());
        prop_assert!(k >= f && k <= vertical.len());
        let total = kept_mass(&vertical, 0, vertical.len());
        let target = mass_target(total, gamma);
        prop_assert!(kept_mass(&vertical, forced, k - f) >= target);
        if k > f {
            prop_assert!(kept_mass(&vertical, forced, k - f - 1) < target);
        }
        // Within the 2^-32 quantisation of the real-valued rule (no forcing).
        let k0 = mass_count(&vertical, 0, gamma);
        let mut sorted: Vec<f64> = vertical.iter().map(|&x| x as f64).collect();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let real: f64 = sorted.iter().sum();
        let slack = vertical.len() as f64 * 2f64.powi(-32) + 1e-12;
        prop_assert!(sorted[..k0].iter().sum::<f64>() >= gamma * real - slack);
        prop_assert!(mass_count(&vertical, forced, (gamma + extra).min(1.0)) >= k);
        // adaptive_vs_budget: forced counts 30 / 100, then the bounds.
        let scores = VsScores { vertical: vertical.clone(), slash: slash.clone() };
        let open = AdaptiveBudget { gamma, min_v: 0, max_v: usize::MAX, min_s: 0, max_s: usize::MAX };
        prop_assert_eq!(
            adaptive_vs_budget(&scores, &open),
            (mass_count(&vertical, VS_FORCED_VERTICALS, gamma), mass_count(&slash, VS_FORCED_SLASHES, gamma))
        );
        let bounded = AdaptiveBudget { gamma, min_v: 5, max_v: 40, min_s: 7, max_s: 9 };
        let (bv, bs) = adaptive_vs_budget(&scores, &bounded);
        prop_assert!((5..=40).contains(&bv));
        prop_assert!((7..=9).contains(&bs));
    }

    /// The count depends on the multiset of the non-forced scores only (the GPU sums in another
    /// order).
    #[test]
    fn count_ignores_the_order_of_the_other_scores(
        scores in prop::collection::vec(prop_oneof![0.0f32..2.0, Just(0.0f32), Just(f32::INFINITY), Just(-1.0f32)], 1..200),
        gamma in 0.0f64..=1.0,
        forced in 0usize..10,
        seed in any::<u64>(),
    ) {
        let mut shuffled = scores.clone();
        let f = forced.min(scores.len());
        let mut s = seed;
        for i in (f + 1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, f + (s >> 33) as usize % (i + 1 - f));
        }
        prop_assert_eq!(mass_count(&scores, forced, gamma), mass_count(&shuffled, forced, gamma));
    }

    /// An adaptive head selects exactly what a fixed VS head of its chosen budgets selects, and
    /// that selection keeps at least gamma of the fixed-point mass.
    #[test]
    fn adaptive_selection_is_the_fixed_selection_of_its_budgets(
        vertical in prop::collection::vec(0.0f32..1.0, 1..400),
        gamma_ppm in 1u32..=1_000_000,
        max_v in 1usize..500,
        max_s in 1usize..500,
    ) {
        let slash: Vec<f32> = vertical.iter().rev().map(|x| x * 0.5).collect();
        let scores = VsScores { vertical, slash };
        let p = HeadPattern::AdaptiveVs { gamma_ppm, min_v: 0, max_v, min_s: 0, max_s };
        let (k_v, k_s) = vs_budget_of(&p, &scores).unwrap();
        prop_assert!(k_v <= max_v && k_s <= max_s);
        let sel = select_vs_pattern(&p, &scores).unwrap();
        prop_assert_eq!(&sel, &select_vs(&scores, k_v, k_s));
        let fixed = HeadPattern::VerticalSlash { k_v, k_s };
        prop_assert_eq!(&select_vs_pattern(&fixed, &scores).unwrap(), &sel);
        let units = |v: &[f32], idx: &[u32]| idx.iter().map(|&i| quantize_mass(v[i as usize])).sum::<u64>();
        let total: u64 = scores.vertical.iter().map(|&x| quantize_mass(x)).sum();
        let gamma = gamma_ppm as f64 / 1e6;
        if max_v >= scores.vertical.len() {
            prop_assert!(units(&scores.vertical, &sel.verticals) >= mass_target(total, gamma));
        }
    }
}

#[test]
fn non_vertical_slash_patterns_have_no_budget() {
    let scores = VsScores { vertical: vec![1.0; 10], slash: vec![1.0; 10] };
    for p in [HeadPattern::Dense, HeadPattern::AShape { n_init: 1, n_local: 4 }, HeadPattern::BlockSparse { k_b: 2 }] {
        assert_eq!(vs_budget_of(&p, &scores), None);
        assert_eq!(select_vs_pattern(&p, &scores), None);
    }
}
