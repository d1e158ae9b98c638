//! Adaptive Vertical-Slash candidates in the search: scored like fixed budgets, averaged over
//! calibration documents, and chosen by the density allocation when they are worth their cost.

use minference_core::rng::SplitMix64;
use minference_core::{AdaptiveBudget, HeadPattern, ModelPatternConfig};
use minference_search::{
    merge_searches, search_head, CandidateSpace, HeadInputs, HeadReport, ModelSearch, Objective, SearchOptions,
};

/// Every query is aligned with one direction; the `planted` keys are aligned with it so strongly
/// (logit 14 above the rest) that each row puts nearly all its mass on the planted columns it sees.
fn planted_head(n: usize, d: usize, planted: &[usize], seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
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
        k[j * d] = 14.0; // logit 8 · 14 / sqrt(64) = 14
    }
    (q, k, v)
}

fn one_head_search(n: usize, d: usize, planted: &[usize], opts: &SearchOptions) -> ModelSearch {
    let (q, k, v) = planted_head(n, d, planted, planted.len() as u64);
    let h = HeadInputs::new(&q, &k, Some(&v), d).unwrap();
    let search = search_head(&h, opts, false).unwrap();
    ModelSearch {
        config: ModelPatternConfig::uniform(1, 1, HeadPattern::Dense),
        heads: vec![HeadReport { layer: 0, head: 0, search }],
        tokens: n,
        seconds: 0.0,
    }
}

/// One head, two calibration documents: on the first it attends to 8 columns, on the second to
/// 400. A fixed budget must pay for 400 columns on both documents or lose the second; the
/// adaptive rule takes what each document needs, so under a density target between the two it
/// is the only low-loss choice.
#[test]
fn the_allocation_chooses_an_adaptive_head_where_the_need_varies_between_documents() {
    let (n, d) = (2048, 64);
    let few: Vec<usize> = (0..8).map(|i| 100 + 50 * i).collect();
    let many: Vec<usize> = (60..460).collect();
    let vs = |k_v| HeadPattern::VerticalSlash { k_v, k_s: 100 };
    let rule = AdaptiveBudget { gamma: 0.999, min_v: 30, max_v: 6096, min_s: 100, max_s: 100 };
    let opts = SearchOptions {
        objective: Objective::OutputRelL2,
        space: CandidateSpace {
            presets: Vec::new(),
            adaptive: vec![rule],
            given: vec![vs(40), vs(100), vs(250), vs(450), HeadPattern::Dense],
            ..CandidateSpace::default()
        },
        floor: None,
    };
    let docs = [one_head_search(n, d, &few, &opts), one_head_search(n, d, &many, &opts)];
    let adaptive = rule.to_pattern().unwrap();
    let of = |s: &ModelSearch, p: HeadPattern| s.heads[0].search.candidates.iter().find(|c| c.pattern == p).cloned();
    // On each document the adaptive head costs what the cheapest fixed budget that keeps the
    // planted columns costs, and loses about as little.
    for (doc, fits) in docs.iter().zip([vs(40), vs(450)]) {
        let (a, f) = (of(doc, adaptive).unwrap(), of(doc, fits).unwrap());
        assert!(a.density <= f.density * 1.05, "adaptive density {} vs {:?} {}", a.density, fits, f.density);
        assert!(a.score <= f.score + 0.02, "adaptive error {} vs {:?} {}", a.score, fits, f.score);
    }
    let mut merged = merge_searches(&docs, &opts.objective).unwrap();
    let (a, wide) = (of(&merged, adaptive).unwrap(), of(&merged, vs(450)).unwrap());
    let narrow = of(&merged, vs(40)).unwrap();
    assert!(a.density < wide.density - 0.05, "adaptive {} vs wide {}", a.density, wide.density);
    assert!(a.score < narrow.score / 4.0, "adaptive error {} vs narrow {}", a.score, narrow.score);
    // A density target between the adaptive head's mean density and the wide budget's.
    let target = (a.density + wide.density) / 2.0;
    merged.allocate_density(target, &opts.objective).unwrap();
    assert_eq!(merged.heads[0].search.chosen().pattern, adaptive);
    let cfg = &merged.config;
    assert_eq!(cfg.pattern(0, 0).unwrap(), adaptive);
    // And the written config says so.
    let back = ModelPatternConfig::from_json_str(&cfg.to_json_string(), "searched.json").unwrap();
    assert_eq!(back.pattern(0, 0).unwrap(), adaptive);
}
