//! Layer sensitivity: the final residual's change when one layer runs its allocated patterns, and
//! the scores it weighs.

use minference_model::{Model, ModelConfig};
use minference_search::candidates::{CandidateSpace, TargetCost};
use minference_search::head::SearchOptions;
use minference_search::sensitivity::{factors, measure, sample_rows, scale, SensitivityMetric};
use minference_search::ModelSearch;
use minference_search::{search_model, Objective};
use std::sync::Arc;

fn prompt() -> Vec<u32> {
    (0..400).map(|i| ((i * 37 + 11) % 300) as u32).collect()
}

/// `search`'s layer factors for `measured`, applied to it.
fn weigh(search: &mut ModelSearch, measured: &[f64]) -> minference_search::Result<Vec<f64>> {
    let f = factors(search, measured)?;
    scale(search, &f)?;
    Ok(f)
}

fn opts() -> SearchOptions {
    SearchOptions {
        objective: Objective::OutputResidual,
        space: CandidateSpace { target: TargetCost::Work(0.5), ..CandidateSpace::default() },
        floor: Some(100),
    }
}

#[test]
fn a_layer_whose_output_is_cut_has_no_effect_and_its_scores_vanish() {
    let cfg = ModelConfig::tiny_llama(true);
    let mut model = Model::random_with_config(cfg.clone(), 7).unwrap();
    // Layer 0's attention never reaches the stream: whatever its patterns, nothing changes.
    for x in &mut model.weights_mut().layers[0].wo.weight {
        *x = 0.0;
    }
    let model = Arc::new(model);
    let search = search_model(Arc::clone(&model), &prompt(), &opts(), &|_, _| {}).unwrap();
    let sparse_last = search.heads.iter().filter(|r| r.layer == 1).any(|r| r.search.chosen().pattern.name() != "dense");
    assert!(sparse_last, "layer 1 chose dense everywhere: nothing to measure");
    let seen = std::sync::Mutex::new(Vec::new());
    let measured =
        measure(&model, &prompt(), &search, 100, SensitivityMetric::Residual, &|l| seen.lock().unwrap().push(l))
            .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![0, 1]);
    assert_eq!(measured[0], 0.0, "a cut layer changes nothing");
    assert!(measured[1] > 0.0, "layer 1's sparse patterns change the final stream");

    // Layer 0 predicted no error either (its projection is zero): it keeps factor 1 and its
    // scores stay 0; layer 1 is the only layer with a ratio, so its factor is 1 too.
    let mut weighed = search.clone();
    let factors = weigh(&mut weighed, &measured).unwrap();
    assert_eq!(factors, vec![1.0, 1.0]);
    assert_eq!(weighed, search);

    // Two layers with ratios: each factor is sqrt(ratio / mean ratio), applied to every candidate.
    let mut twice = search.clone();
    for r in &mut twice.heads {
        for c in &mut r.search.candidates {
            c.score = if r.layer == 0 { c.score + 1e-3 } else { c.score };
        }
    }
    let predicted: Vec<f64> = (0..2)
        .map(|l| twice.heads.iter().filter(|r| r.layer == l).map(|r| r.search.chosen().score.powi(2)).sum())
        .collect();
    let m = [2.0 * predicted[0], 8.0 * predicted[1]];
    let before = twice.clone();
    let f = weigh(&mut twice, &m).unwrap();
    let want = [(2.0f64 / 5.0).sqrt(), (8.0f64 / 5.0).sqrt()];
    for l in 0..2 {
        assert!((f[l] - want[l]).abs() < 1e-9, "factor {l}: {} vs {}", f[l], want[l]);
    }
    for (a, b) in before.heads.iter().zip(&twice.heads) {
        for (x, y) in a.search.candidates.iter().zip(&b.search.candidates) {
            assert!((y.score - f[a.layer] * x.score).abs() <= 1e-12 * (1.0 + x.score));
        }
    }
}

#[test]
fn wrong_lengths_are_errors() {
    let model = Arc::new(Model::random_with_config(ModelConfig::tiny_llama(true), 3).unwrap());
    let mut search = search_model(Arc::clone(&model), &prompt(), &opts(), &|_, _| {}).unwrap();
    assert!(weigh(&mut search, &[1.0]).is_err());
    assert!(weigh(&mut search, &[1.0, f64::NAN]).is_err());
    assert!(weigh(&mut search, &[1.0, -1.0]).is_err());
    let mut short = search.clone();
    short.heads.pop();
    assert!(measure(&model, &prompt(), &short, 0, SensitivityMetric::Residual, &|_| {}).is_err());
    assert!(measure(&model, &prompt(), &search, 0, SensitivityMetric::Kl { rows: 0 }, &|_| {}).is_err());
}

#[test]
fn the_kl_of_a_cut_layer_is_zero_and_of_a_sparse_one_positive() {
    let cfg = ModelConfig::tiny_llama(true);
    let mut model = Model::random_with_config(cfg, 7).unwrap();
    for x in &mut model.weights_mut().layers[0].wo.weight {
        *x = 0.0;
    }
    let model = Arc::new(model);
    let search = search_model(Arc::clone(&model), &prompt(), &opts(), &|_, _| {}).unwrap();
    let kl = measure(&model, &prompt(), &search, 100, SensitivityMetric::Kl { rows: 64 }, &|_| {}).unwrap();
    assert_eq!(kl[0], 0.0, "a cut layer changes no distribution");
    assert!(kl[1] > 0.0 && kl[1].is_finite(), "layer 1's sparse patterns move the next-token distributions");
    // Past the prompt's end nothing is sampled.
    let none = measure(&model, &prompt(), &search, 400, SensitivityMetric::Kl { rows: 64 }, &|_| {}).unwrap();
    assert_eq!(none, vec![0.0, 0.0]);
}

#[test]
fn sampled_rows_are_evenly_spaced_from_the_floor() {
    assert_eq!(sample_rows(100, 400, 3), vec![100, 200, 300]);
    assert_eq!(sample_rows(0, 5, 10), vec![0, 1, 2, 3, 4]);
    assert_eq!(sample_rows(10, 10, 4), Vec::<usize>::new());
    assert!(sample_rows(2048, 8192, 512).windows(2).all(|w| w[1] - w[0] == 12));
}
