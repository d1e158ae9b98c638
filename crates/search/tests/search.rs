//! Search properties on synthetic heads (no model needed).

use minference_core::config::ModelPatternConfig;
use minference_core::rng::SplitMix64;
use minference_core::synth::{generate_qkv, SynthConfig};
use minference_core::{AttnShape, HeadPattern};
use minference_search::candidates::{CandidateSpace, HeadCandidates, Preset, TargetCost};
use minference_search::dense::{for_each_prob_block, HeadInputs};
use minference_search::head::{search_head, SearchOptions};
use minference_search::mask::{prefix_sums, HeadMask};
use minference_search::Objective;

fn structured_head(n: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    generate_qkv(&AttnShape::single(1, 1, d, n), &SynthConfig::structured(), seed)
}

/// Every query is aligned with one direction `u`; `planted` keys are strongly aligned with it, so
/// each row puts most of its mass on those columns wherever they are.
fn planted_vertical_head(n: usize, d: usize, planted: &[usize], seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = SplitMix64::new(seed);
    let mut q = vec![0f32; n * d];
    let mut k = vec![0f32; n * d];
    let v: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
    for i in 0..n {
        q[i * d] = 8.0;
        for c in 1..d {
            q[i * d + c] = 0.3 * rng.normal() as f32;
            k[i * d + c] = 0.3 * rng.normal() as f32;
        }
    }
    for &j in planted {
        k[j * d] = 6.0; // logit 8 · 6 / sqrt(64) = 6 above the rest
    }
    (q, k, v)
}

#[test]
fn kernel_aware_candidates_hit_the_target_on_their_step_grid() {
    let (n, d) = (4096, 64);
    let (q, k, _) = structured_head(n, d, 11);
    let h = HeadInputs::new(&q, &k, None, d).unwrap();
    let hc = HeadCandidates::new(&h).unwrap();
    for target in [0.2, 0.35, 0.6] {
        let space = CandidateSpace { target: TargetCost::Work(target), ..CandidateSpace::default() };
        let cands = hc.kernel_aware(&space).unwrap();
        // VS with 500 fixed columns can be too expensive for a small target; the others fit.
        assert!(
            cands.len() >= 5 || (target < 0.3 && cands.len() >= 4),
            "target {target}: {} families fitted",
            cands.len()
        );
        assert!(cands.iter().any(|c| matches!(c.pattern, HeadPattern::AShape { .. })));
        assert!(cands.iter().any(|c| matches!(c.pattern, HeadPattern::BlockSparse { .. })));
        for c in &cands {
            let err = (c.work - target).abs();
            // Neighbours on the grid (50 tokens, 1 block for BS) must not be closer. A VS candidate
            // may come from the free-k_s or the free-k_v family; one of them must hold.
            let neighbour_sets: Vec<Vec<HeadPattern>> = match c.pattern {
                HeadPattern::AShape { n_local, .. } => vec![[n_local.saturating_sub(50).max(50), n_local + 50]
                    .iter()
                    .map(|&x| HeadPattern::AShape { n_init: x / 4, n_local: x })
                    .collect()],
                HeadPattern::VerticalSlash { k_v, k_s } => vec![
                    vec![
                        HeadPattern::VerticalSlash { k_v, k_s: k_s.saturating_sub(50).max(100) },
                        HeadPattern::VerticalSlash { k_v, k_s: k_s + 50 },
                    ],
                    vec![
                        HeadPattern::VerticalSlash { k_v: k_v.saturating_sub(50).max(50), k_s },
                        HeadPattern::VerticalSlash { k_v: k_v + 50, k_s },
                    ],
                ],
                HeadPattern::BlockSparse { k_b } => {
                    vec![vec![
                        HeadPattern::BlockSparse { k_b: k_b.saturating_sub(1).max(1) },
                        HeadPattern::BlockSparse { k_b: k_b + 1 },
                    ]]
                }
                HeadPattern::Dense | HeadPattern::AdaptiveVs { .. } => vec![vec![]],
            };
            let grid_optimal = neighbour_sets.iter().any(|set| {
                set.iter().all(|nb| err <= (hc.candidate(*nb, "test").unwrap().work - target).abs() + 1e-12)
            });
            assert!(grid_optimal, "{:?} work {} is not the closest on its grid to {target}", c.pattern, c.work);
            if matches!(c.pattern, HeadPattern::AShape { .. } | HeadPattern::BlockSparse { .. }) {
                assert!(err < 0.05, "{:?}: work {} target {target}", c.pattern, c.work);
            }
        }
    }
}

#[test]
fn ashape_target_equals_the_ashape_work() {
    let (n, d) = (4096, 64);
    let (q, k, _) = structured_head(n, d, 2);
    let h = HeadInputs::new(&q, &k, None, d).unwrap();
    let hc = HeadCandidates::new(&h).unwrap();
    let target = TargetCost::AShape { n_init: 128, n_local: 1024 };
    let t = hc.target_work(&target).unwrap();
    let direct = hc.candidate(HeadPattern::AShape { n_init: 128, n_local: 1024 }, "x").unwrap().work;
    assert_eq!(t, direct);
    let space = CandidateSpace { target, ..CandidateSpace::default() };
    let cands = hc.kernel_aware(&space).unwrap();
    assert!(cands.iter().any(|c| c.pattern == HeadPattern::AShape { n_init: 128, n_local: 1000 }
        || c.pattern == HeadPattern::AShape { n_init: 128, n_local: 1050 }));
}

#[test]
fn planted_verticals_choose_vertical_slash_with_enough_columns() {
    let (n, d) = (2048, 64);
    let mut rng = SplitMix64::new(5);
    let mut planted: Vec<usize> = (0..200).map(|_| 100 + rng.below(1800) as usize).collect();
    planted.sort_unstable();
    planted.dedup();
    let (q, k, v) = planted_vertical_head(n, d, &planted, 9);
    let h = HeadInputs::new(&q, &k, Some(&v), d).unwrap();
    for objective in [Objective::Recall, Objective::OutputRelL2] {
        let opts = SearchOptions {
            objective,
            space: CandidateSpace { target: TargetCost::Work(0.3), ..CandidateSpace::default() },
            floor: None,
        };
        let r = search_head(&h, &opts, false).unwrap();
        let chosen = r.chosen();
        match chosen.pattern {
            HeadPattern::VerticalSlash { k_v, .. } => {
                assert!(k_v >= planted.len(), "{objective:?}: chose {:?}", chosen.pattern)
            }
            other => panic!("{objective:?}: chose {other:?}, expected vertical-slash; all: {:#?}", r.candidates),
        }
        assert!(chosen.recall > 0.9, "recall {}", chosen.recall);
        let ashape = r.candidates.iter().find(|c| matches!(c.pattern, HeadPattern::AShape { .. })).unwrap();
        assert!(ashape.recall < chosen.recall - 0.1, "A-shape recall {} vs {}", ashape.recall, chosen.recall);
    }
}

#[test]
fn local_heads_are_nearly_fully_recalled() {
    let (n, d) = (2048, 64);
    let cfg = SynthConfig { n_far_slashes: 0, n_retrieval_columns: 0, ..SynthConfig::structured() };
    let (q, k, _) = generate_qkv(&AttnShape::single(1, 1, d, n), &cfg, 3);
    let h = HeadInputs::new(&q, &k, None, d).unwrap();
    let opts = SearchOptions {
        space: CandidateSpace {
            target: TargetCost::Work(0.3),
            presets: vec![Preset::KernelAware, Preset::Code],
            ..Default::default()
        },
        ..Default::default()
    };
    let r = search_head(&h, &opts, false).unwrap();
    assert!(r.chosen().recall > 0.95, "{:#?}", r.candidates);
    // The winner is at least as good as every other candidate.
    assert!(r.candidates.iter().all(|c| c.score <= r.chosen().score + 1e-12));
}

#[test]
fn masked_mass_and_numerator_match_brute_force() {
    let (n, d) = (300, 16);
    let (q, k, v) = structured_head(n, d, 4);
    let h = HeadInputs::new(&q, &k, Some(&v), d).unwrap();
    let hc = HeadCandidates::new(&h).unwrap();
    let patterns = [
        HeadPattern::Dense,
        HeadPattern::AShape { n_init: 10, n_local: 70 },
        HeadPattern::VerticalSlash { k_v: 40, k_s: 120 },
        HeadPattern::BlockSparse { k_b: 2 },
    ];
    for pattern in patterns {
        let mask: HeadMask = hc.mask(&pattern).unwrap();
        let (mut prefix, mut acc, mut scratch) = (Vec::new(), vec![0f32; 64 * d], Vec::new());
        for_each_prob_block(&h, 0, |p| {
            mask.block_numerator(p, &v, d, &mut acc, &mut scratch);
            for a in 0..p.rows {
                let pos = p.row0 + a;
                let row = p.row(a);
                prefix_sums(row, &mut prefix);
                let mass = mask.row_mass(pos, &prefix, row);
                let want_mass: f64 = (0..=pos).filter(|&j| mask.keep(pos, j, n)).map(|j| row[j] as f64).sum();
                assert!((mass - want_mass).abs() < 1e-9, "{pattern:?} row {pos}: {mass} vs {want_mass}");
                for c in 0..d {
                    let want: f64 =
                        (0..=pos).filter(|&j| mask.keep(pos, j, n)).map(|j| row[j] as f64 * v[j * d + c] as f64).sum();
                    let got = acc[a * d + c] as f64;
                    assert!((got - want).abs() < 1e-4, "{pattern:?} row {pos} dim {c}: {got} vs {want}");
                }
            }
            Ok(())
        })
        .unwrap();
    }
}

#[test]
fn output_objective_without_values_is_an_error() {
    let (q, k, _) = structured_head(256, 16, 1);
    let h = HeadInputs::new(&q, &k, None, 16).unwrap();
    let opts = SearchOptions { objective: Objective::OutputRelL2, ..Default::default() };
    assert!(search_head(&h, &opts, false).is_err());
}

#[test]
fn searched_config_round_trips_and_published_format_loads_unchanged() {
    let (n, d) = (1024, 32);
    let mut config = ModelPatternConfig::uniform(2, 3, HeadPattern::DEFAULT);
    let opts = SearchOptions {
        space: CandidateSpace {
            target: TargetCost::Work(0.4),
            presets: vec![Preset::KernelAware, Preset::Paper, Preset::Code],
            ..Default::default()
        },
        ..Default::default()
    };
    for l in 0..2 {
        for hd in 0..3 {
            let (q, k, _) = structured_head(n, d, 100 + (l * 3 + hd) as u64);
            let h = HeadInputs::new(&q, &k, None, d).unwrap();
            let c = search_head(&h, &opts, false).unwrap().chosen().clone();
            config.layers[l]
                .heads
                .insert(hd, minference_core::config::HeadEntry { pattern: c.pattern, score: c.score });
        }
    }
    let text = config.to_json_string();
    let back = ModelPatternConfig::from_json_str(&text, "searched").unwrap();
    assert_eq!(back, config);
    back.validate_model(2, 3).unwrap();
    assert!(back.validate_model(3, 3).is_err());
    assert!(back.validate_model(2, 2).is_err());

    let published =
        std::fs::read_to_string(crate_dir().join("../core/tests/fixtures/minference_two_layers.json")).unwrap();
    let parsed = ModelPatternConfig::from_json_str(&published, "fixture").unwrap();
    assert_eq!(parsed.pattern(0, 2).unwrap(), HeadPattern::VerticalSlash { k_v: 3500, k_s: 100 });
    assert_eq!(ModelPatternConfig::from_json_str(&parsed.to_json_string(), "again").unwrap(), parsed);
}

#[test]
fn shipped_smollm2_config_loads_and_fits_the_model_shape() {
    let path = crate_dir().join("../../configs/smollm2-135m-instruct.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = ModelPatternConfig::from_json_str(&text, &path.display().to_string()).unwrap();
    c.validate_model(30, 9).unwrap();
    assert!(c.layers.iter().all(|l| l.heads.len() == 9));
    // Scores are each head's output error against the residual stream (near 0 for a head kept
    // dense), far below 1 for every chosen pattern: a head's update is small next to the stream.
    for l in &c.layers {
        for e in l.heads.values() {
            assert!(e.score >= 0.0 && e.score < 0.1, "output-residual error {}", e.score);
        }
    }
    assert_eq!(ModelPatternConfig::from_json_str(&c.to_json_string(), "again").unwrap(), c);
}

#[test]
fn adaptive_rules_are_candidates_of_their_own() {
    let (n, d) = (2048, 64);
    let (q, k, _) = structured_head(n, d, 21);
    let h = HeadInputs::new(&q, &k, None, d).unwrap();
    let hc = HeadCandidates::new(&h).unwrap();
    let rules: Vec<_> =
        [0.8, 0.95].iter().map(|&gamma| minference_core::AdaptiveBudget { gamma, ..Default::default() }).collect();
    let space = CandidateSpace {
        presets: vec![Preset::Paper],
        target: TargetCost::Work(0.3),
        adaptive: rules.clone(),
        ..CandidateSpace::default()
    };
    let cands = hc.build(&space).unwrap();
    // The paper's four fixed VS budgets stay; each rule is one more candidate.
    assert_eq!(cands.iter().filter(|c| matches!(c.pattern, HeadPattern::VerticalSlash { .. })).count(), 4);
    let adaptive: Vec<_> = cands.iter().filter(|c| c.origin == "adaptive").collect();
    assert_eq!(adaptive.len(), 2);
    for (c, rule) in adaptive.iter().zip(&rules) {
        assert_eq!(c.pattern, rule.to_pattern().unwrap());
        // Its mask on this head is the fixed VS mask of the budgets the rule picks here.
        let (k_v, k_s) = minference_core::adaptive_vs_budget(hc.scores(), rule);
        let fixed = hc.candidate(HeadPattern::VerticalSlash { k_v, k_s }, "given").unwrap();
        assert_eq!(c.mask, fixed.mask);
        assert_eq!(c.coverage, fixed.coverage);
    }
    // More mass kept, no cheaper.
    assert!(adaptive[1].work >= adaptive[0].work);
    let bad = CandidateSpace {
        adaptive: vec![minference_core::AdaptiveBudget { gamma: 1.5, ..Default::default() }],
        ..space
    };
    assert!(hc.build(&bad).unwrap_err().to_string().contains("gamma"));
}

fn crate_dir() -> std::path::PathBuf {
    minference_test_support::crate_dir(env!("CARGO_MANIFEST_DIR"))
}
