//! Global kernel-density budget allocation (issue 14 item 2).

use minference_core::config::ModelPatternConfig;
use minference_core::HeadPattern;
use minference_model::{Model, ModelConfig};
use minference_search::budget::candidate_loss;
use minference_search::{
    allocate, search_model, CandidateSpace, CostPoint, Objective, Preset, SearchOptions, TargetCost,
};
use proptest::prelude::*;
use std::sync::Arc;

fn pts(v: &[(f64, f64)]) -> Vec<CostPoint> {
    v.iter().map(|&(density, loss)| CostPoint { density, loss }).collect()
}

fn mean_density(options: &[Vec<CostPoint>], picks: &[usize]) -> f64 {
    picks.iter().zip(options).map(|(&p, o)| o[p].density).sum::<f64>() / options.len() as f64
}

#[test]
fn a_head_needing_high_density_gets_it_and_local_heads_get_a_sliver() {
    // Head 0 copies from far context: its loss only vanishes near dense. Heads 1..9 are local:
    // almost nothing is lost at 5% density. One per-head target of 40% would cost head 0 dearly
    // and waste density on the others.
    let far = pts(&[(0.05, 0.9), (0.2, 0.7), (0.4, 0.5), (0.6, 0.3), (0.9, 0.02), (1.0, 0.0)]);
    let local = pts(&[(0.05, 0.002), (0.2, 0.001), (0.4, 0.0005), (0.6, 0.0002), (0.9, 0.0), (1.0, 0.0)]);
    let mut options = vec![far];
    options.extend(std::iter::repeat_n(local, 9));
    let picks = allocate(&options, 0.2).unwrap();
    assert!(options[0][picks[0]].density >= 0.9, "far head got {}", options[0][picks[0]].density);
    for (o, &p) in options.iter().zip(&picks).skip(1) {
        assert!(o[p].density <= 0.2, "local head got {}", o[p].density);
    }
    assert!(mean_density(&options, &picks) <= 0.2 + 1e-12);
    // With the whole budget every head is dense-equivalent (loss 0).
    let all = allocate(&options, 1.0).unwrap();
    assert!(all.iter().zip(&options).all(|(&p, o)| o[p].loss == 0.0));
}

#[test]
fn tiny_model_search_reallocates_within_the_target() {
    let model = Arc::new(Model::random_with_config(ModelConfig::tiny_llama(true), 7).unwrap());
    let tokens: Vec<u32> = (0..400).map(|i| ((i * 37 + 11) % 300) as u32).collect();
    let opts = SearchOptions {
        objective: Objective::OutputRelL2,
        space: CandidateSpace {
            presets: vec![Preset::KernelAware, Preset::Code],
            target: TargetCost::Work(0.3),
            given: vec![HeadPattern::Dense, HeadPattern::AShape { n_init: 64, n_local: 64 }],
            ..CandidateSpace::default()
        },
        floor: Some(64),
    };
    let mut s = search_model(Arc::clone(&model), &tokens, &opts, &|_, _| {}).unwrap();
    let cheapest: f64 = s
        .heads
        .iter()
        .map(|r| r.search.candidates.iter().map(|c| c.density).fold(f64::INFINITY, f64::min))
        .sum::<f64>()
        / s.heads.len() as f64;
    let target = (cheapest + 0.1).min(1.0);
    let reached = s.allocate_density(target, &opts.objective).unwrap();
    assert!(reached <= target + 1e-9, "{reached} > {target}");
    let back = ModelPatternConfig::from_json_str(&s.config.to_json_string(), "allocated").unwrap();
    back.validate_model(2, 4).unwrap();
    for r in &s.heads {
        assert_eq!(back.pattern(r.layer, r.head).unwrap(), r.search.chosen().pattern);
    }
    // The whole budget: every head takes a lowest-loss candidate (dense is one, loss 0).
    s.allocate_density(1.0, &opts.objective).unwrap();
    for r in &s.heads {
        let best = r.search.candidates.iter().map(|c| candidate_loss(c, &opts.objective)).fold(f64::INFINITY, f64::min);
        assert!(candidate_loss(r.search.chosen(), &opts.objective) <= best + 1e-12);
    }
    assert!(s.allocate_density(1.5, &opts.objective).is_err());
}

fn options_strategy() -> impl Strategy<Value = Vec<Vec<CostPoint>>> {
    prop::collection::vec(
        prop::collection::vec(
            (0.01f64..=1.0, 0.0f64..1.0).prop_map(|(density, loss)| CostPoint { density, loss }),
            1..8,
        ),
        1..12,
    )
}

proptest! {
    #[test]
    fn allocation_fits_the_target_and_beats_the_cheapest_choice(options in options_strategy(), target in 0.01f64..=1.0) {
        let cheapest: Vec<usize> = options
            .iter()
            .map(|o| (0..o.len()).min_by(|&a, &b| o[a].density.total_cmp(&o[b].density).then(o[a].loss.total_cmp(&o[b].loss))).unwrap())
            .collect();
        match allocate(&options, target) {
            Ok(picks) => {
                prop_assert!(mean_density(&options, &picks) <= target * (1.0 + 1e-9));
                let loss = |p: &[usize]| p.iter().zip(&options).map(|(&i, o)| o[i].loss).sum::<f64>();
                prop_assert!(loss(&picks) <= loss(&cheapest) + 1e-12);
                // No head could move to a strictly better option that is no more expensive.
                for (o, &p) in options.iter().zip(&picks) {
                    prop_assert!(!o.iter().any(|x| x.density <= o[p].density && x.loss < o[p].loss - 1e-12));
                }
            }
            Err(_) => prop_assert!(mean_density(&options, &cheapest) > target),
        }
    }
}
