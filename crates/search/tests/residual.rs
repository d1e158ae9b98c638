//! The output-residual objective: a head's output error weighed through its output-projection
//! columns against the layer's input stream.

use minference_core::synth::{generate_qkv, SynthConfig};
use minference_core::AttnShape;
use minference_model::{Model, ModelConfig};
use minference_search::candidates::{CandidateSpace, TargetCost};
use minference_search::dense::HeadInputs;
use minference_search::head::{search_head, SearchOptions};
use minference_search::{dense_output, search_model, ModelSearch, Objective, ResidualWeight};
use std::sync::Arc;

fn opts(objective: Objective) -> SearchOptions {
    SearchOptions {
        objective,
        space: CandidateSpace { target: TargetCost::Work(0.5), ..CandidateSpace::default() },
        floor: Some(100),
    }
}

#[test]
fn a_scaled_identity_projection_against_the_dense_energy_is_the_relative_error_scaled() {
    let (n, d) = (400, 16);
    let (q, k, v) = generate_qkv(&AttnShape::single(1, 1, d, n), &SynthConfig::structured(), 5);
    let dense = dense_output(&HeadInputs::new(&q, &k, Some(&v), d).unwrap()).unwrap();
    let energy: f64 = dense[100 * d..].iter().map(|&x| (x as f64) * (x as f64)).sum();
    // W = 3·I and every row weighed by rows / energy: sqrt(mean ‖W δ_r‖² · rows / energy) =
    // 3 ‖δ‖ / ‖O_dense‖ on the same rows.
    let mut wo = vec![0f32; d * d];
    for i in 0..d {
        wo[i * d + i] = 3.0;
    }
    let weights: Arc<[f64]> = vec![(n - 100) as f64 / energy; n].into();
    let w = ResidualWeight::of_head(&wo, d, d, 0, d, weights).unwrap();
    let h = HeadInputs::new(&q, &k, Some(&v), d).unwrap();
    let rel = search_head(&h, &opts(Objective::OutputRelL2), false).unwrap();
    let res = search_head(&h.with_residual(&w).unwrap(), &opts(Objective::OutputResidual), false).unwrap();
    assert_eq!(rel.candidates.len(), res.candidates.len());
    let mut nonzero = 0;
    for (a, b) in rel.candidates.iter().zip(&res.candidates) {
        assert_eq!(a.pattern, b.pattern);
        assert!(
            (b.score - 3.0 * a.score).abs() <= 1e-6 * (1.0 + a.score),
            "{:?}: {} vs 3 × {}",
            a.pattern,
            b.score,
            a.score
        );
        nonzero += (a.score > 1e-6) as usize;
    }
    assert!(nonzero > 0, "every candidate was exact: the check shows nothing");
}

#[test]
fn the_objective_needs_the_projection_and_a_matching_head_dim() {
    let (n, d) = (400, 16);
    let (q, k, v) = generate_qkv(&AttnShape::single(1, 1, d, n), &SynthConfig::structured(), 6);
    let h = HeadInputs::new(&q, &k, Some(&v), d).unwrap();
    let err = search_head(&h, &opts(Objective::OutputResidual), false).unwrap_err().to_string();
    assert!(err.contains("output projection"), "{err}");
    // Another head dimension, or weights for another number of rows.
    let w = ResidualWeight::of_head(&vec![1.0; 8 * 32], 8, 32, 0, 8, vec![1.0; n].into()).unwrap();
    assert!(h.with_residual(&w).is_err());
    let w = ResidualWeight::of_head(&vec![1.0; 16 * 32], 16, 32, 0, 16, vec![1.0; n - 1].into()).unwrap();
    assert!(h.with_residual(&w).is_err());
}

fn search(model: Model) -> ModelSearch {
    let prompt: Vec<u32> = (0..400).map(|i| ((i * 37 + 11) % 300) as u32).collect();
    search_model(Arc::new(model), &prompt, &opts(Objective::OutputResidual), &|_, _| {}).unwrap()
}

fn scores(s: &ModelSearch, layer: usize, head: usize) -> Vec<f64> {
    let r = s.heads.iter().find(|r| (r.layer, r.head) == (layer, head)).unwrap();
    r.search.candidates.iter().map(|c| c.score).collect()
}

#[test]
fn the_last_layers_scores_follow_its_output_projection_and_the_others_do_not_move() {
    let cfg = ModelConfig::tiny_llama(true);
    let (layers, heads, d) = (cfg.layers, cfg.heads, cfg.head_dim);
    let base = search(Model::random_with_config(cfg.clone(), 7).unwrap());
    // Double the last layer's projection and zero its head 1 columns: its input stream is the
    // same, so its heads' errors double (head 1's vanish) and no earlier layer changes.
    let mut model = Model::random_with_config(cfg, 7).unwrap();
    let wo = &mut model.weights_mut().layers[layers - 1].wo;
    let in_dim = wo.in_dim;
    for (i, x) in wo.weight.iter_mut().enumerate() {
        *x *= if (i % in_dim) / d == 1 { 0.0 } else { 2.0 };
    }
    let changed = search(model);
    for l in 0..layers {
        for h in 0..heads {
            let (a, b) = (scores(&base, l, h), scores(&changed, l, h));
            assert_eq!(a.len(), b.len());
            let factor = match (l == layers - 1, h == 1) {
                (false, _) => 1.0,
                (true, false) => 2.0,
                (true, true) => 0.0,
            };
            for (x, y) in a.iter().zip(&b) {
                assert!((y - factor * x).abs() <= 1e-5 * (1.0 + x), "layer {l} head {h}: {y} vs {factor} × {x}");
            }
        }
    }
    assert!(scores(&base, layers - 1, 0).iter().any(|&x| x > 1e-6), "nothing to scale");
    // Head 1's candidates all tie at 0: the cheapest wins.
    let r = changed.heads.iter().find(|r| (r.layer, r.head) == (layers - 1, 1)).unwrap();
    assert!(r.search.candidates.iter().all(|c| c.work >= r.search.chosen().work));
}
