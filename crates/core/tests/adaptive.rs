//! Adaptive (FlexPrefill-style) VS budgets.

use minference_core::{adaptive_vs_budget, AdaptiveBudget, VsScores};
use proptest::prelude::*;

proptest! {
    #[test]
    fn budget_reaches_gamma_minimally_and_is_monotone(
        vertical in prop::collection::vec(0.0f32..1.0, 1..300),
        slash in prop::collection::vec(0.0f32..1.0, 1..300),
        gamma in 0.0f64..1.0,
        extra in 0.0f64..0.5,
    ) {
        let scores = VsScores { vertical: vertical.clone(), slash };
        let open = AdaptiveBudget { gamma, min_v: 0, max_v: usize::MAX, min_s: 0, max_s: usize::MAX };
        let (k_v, _) = adaptive_vs_budget(&scores, &open);
        let mut sorted: Vec<f64> = vertical.iter().map(|&x| x as f64).collect();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let total: f64 = sorted.iter().sum();
        let mass = |k: usize| sorted[..k].iter().sum::<f64>();
        prop_assert!(mass(k_v) >= gamma * total - 1e-9 * total.max(1.0));
        if k_v > 0 {
            prop_assert!(mass(k_v - 1) < gamma * total);
        }
        let more = AdaptiveBudget { gamma: (gamma + extra).min(1.0), ..open };
        prop_assert!(adaptive_vs_budget(&scores, &more).0 >= k_v);
        let bounded = AdaptiveBudget { gamma, min_v: 5, max_v: 40, min_s: 7, max_s: 9 };
        let (bv, bs) = adaptive_vs_budget(&scores, &bounded);
        prop_assert!((5..=40).contains(&bv));
        prop_assert!((7..=9).contains(&bs));
    }
}
