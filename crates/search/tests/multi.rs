//! Several calibration documents: later documents score the first one's patterns, and the merged
//! search averages every pattern over the documents.

use minference_core::HeadPattern;
use minference_model::{Model, ModelConfig};
use minference_search::head::CandidateScore;
use minference_search::{
    extras_of, merge_searches, search_model, search_model_with, CandidateSpace, HeadReport, HeadSearch, ModelSearch,
    Objective, SearchOptions, TargetCost,
};
use proptest::prelude::*;
use std::sync::Arc;

fn doc(n: usize, a: usize, b: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * a + b) % 300) as u32).collect()
}

#[test]
fn later_documents_score_the_first_ones_patterns_and_the_merge_averages_them() {
    let model = Arc::new(Model::random_with_config(ModelConfig::tiny_llama(true), 7).unwrap());
    let opts = SearchOptions {
        objective: Objective::OutputRelL2,
        space: CandidateSpace { target: TargetCost::Work(0.5), ..CandidateSpace::default() },
        floor: None,
    };
    let first = search_model(Arc::clone(&model), &doc(400, 37, 11), &opts, &|_, _| {}).unwrap();
    let extras = extras_of(&first);
    let second = search_model_with(Arc::clone(&model), &doc(333, 53, 5), &opts, Some(&extras), &|_, _| {}).unwrap();
    let merged = merge_searches(&[first.clone(), second.clone()], &opts.objective).unwrap();
    assert_eq!(merged.tokens, 733);
    merged.config.validate_model(2, 4).unwrap();
    for ((a, b), m) in first.heads.iter().zip(&second.heads).zip(&merged.heads) {
        // Every pattern of the first document is scored on the second, so none is lost.
        assert_eq!(m.search.candidates.len(), a.search.candidates.len());
        for (ca, cm) in a.search.candidates.iter().zip(&m.search.candidates) {
            let cb = b.search.candidates.iter().find(|x| x.pattern == ca.pattern).expect("scored on doc 2");
            assert_eq!(cm.pattern, ca.pattern);
            assert!((cm.score - (ca.score + cb.score) / 2.0).abs() < 1e-12);
            assert!((cm.recall - (ca.recall + cb.recall) / 2.0).abs() < 1e-12);
            assert!((cm.density - (ca.density + cb.density) / 2.0).abs() < 1e-12);
        }
        let best = m.search.chosen();
        assert!(m.search.candidates.iter().all(|c| c.score >= best.score - 1e-12), "the mean score's best wins");
        assert_eq!(merged.config.pattern(m.layer, m.head).unwrap(), best.pattern);
    }
    // One document merges to itself.
    let alone = merge_searches(std::slice::from_ref(&first), &opts.objective).unwrap();
    assert_eq!(alone.config, first.config);
    assert!(merge_searches(&[], &opts.objective).is_err());
}

fn score(pattern: HeadPattern, score: f64, density: f64) -> CandidateScore {
    CandidateScore { pattern, origin: "given", score, recall: 1.0 - score, density, work: density }
}

fn one_head(cands: Vec<CandidateScore>) -> ModelSearch {
    ModelSearch {
        config: minference_core::ModelPatternConfig::uniform(1, 1, HeadPattern::Dense),
        heads: vec![HeadReport {
            layer: 0,
            head: 0,
            search: HeadSearch { candidates: cands, best: 0, dense_output: None },
        }],
        tokens: 10,
        seconds: 0.0,
    }
}

#[test]
fn a_pattern_missing_from_a_document_is_dropped_and_mismatched_searches_are_errors() {
    let vs = |k_v, k_s| HeadPattern::VerticalSlash { k_v, k_s };
    let a = one_head(vec![score(vs(1, 2), 0.5, 0.2), score(HeadPattern::Dense, 0.0, 1.0)]);
    let b = one_head(vec![score(HeadPattern::Dense, 0.0, 1.0)]);
    let m = merge_searches(&[a.clone(), b], &Objective::OutputRelL2).unwrap();
    assert_eq!(m.heads[0].search.candidates.len(), 1);
    assert_eq!(m.heads[0].search.chosen().pattern, HeadPattern::Dense);
    let none = one_head(vec![score(vs(3, 4), 0.1, 0.1)]);
    let err = merge_searches(&[a.clone(), none], &Objective::OutputRelL2).unwrap_err().to_string();
    assert!(err.contains("no candidate was scored on every calibration document"), "{err}");
    let mut two = a.clone();
    two.heads.push(two.heads[0].clone());
    assert!(merge_searches(&[a, two], &Objective::OutputRelL2).is_err());
}

proptest! {
    /// The merged score of a pattern is the mean of its scores; the chosen one has the least mean.
    #[test]
    fn merged_scores_are_means(scores in prop::collection::vec(prop::collection::vec(0.0f64..1.0, 4), 1..5)) {
        let pats: Vec<HeadPattern> = (1..=4).map(|k| HeadPattern::VerticalSlash { k_v: k, k_s: 10 * k }).collect();
        let docs: Vec<ModelSearch> = scores
            .iter()
            .map(|s| one_head(pats.iter().zip(s).map(|(&p, &x)| score(p, x, 0.1)).collect()))
            .collect();
        let m = merge_searches(&docs, &Objective::OutputRelL2).unwrap();
        let cands = &m.heads[0].search.candidates;
        prop_assert_eq!(cands.len(), 4);
        for (i, c) in cands.iter().enumerate() {
            let mean = scores.iter().map(|s| s[i]).sum::<f64>() / scores.len() as f64;
            prop_assert!((c.score - mean).abs() < 1e-12);
        }
        let best = m.heads[0].search.chosen().score;
        prop_assert!(cands.iter().all(|c| c.score >= best - 1e-12));
    }
}
