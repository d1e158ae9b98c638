//! Model-level search on a tiny random-weight Llama (no files needed) and, when the default model
//! is present, the calibration prompt and its bad-input errors.

use minference_core::config::ModelPatternConfig;
use minference_core::{AttnShape, HeadPattern, HostTensor};
use minference_cpu::CpuBackend;
use minference_engine::{AttentionChoice, CpuEngine};
use minference_model::{Model, ModelConfig};
use minference_search::calibration::{load_calibration, load_calibrations, CalibrationSource};
use minference_search::capture::capture_layer;
use minference_search::{
    dense_output, kv_retrieval_prompt, search_model, CandidateSpace, HeadInputs, SearchOptions, TargetCost,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn tiny_model() -> Model {
    let cfg = ModelConfig::tiny_llama(true);
    Model::random_with_config(cfg, 7).unwrap()
}

fn prompt(n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 37 + 11) % 300) as u32).collect()
}

fn real_model() -> Option<PathBuf> {
    minference_test_support::default_model()
}

#[test]
fn model_search_covers_every_head_and_writes_a_loadable_config() {
    let model = Arc::new(tiny_model());
    let opts = SearchOptions {
        space: CandidateSpace { target: TargetCost::Work(0.5), ..CandidateSpace::default() },
        ..SearchOptions::default()
    };
    let calls = AtomicUsize::new(0);
    let s = search_model(Arc::clone(&model), &prompt(400), &opts, &|_, _| {
        calls.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 8);
    assert_eq!(s.heads.len(), 8);
    let text = s.config.to_json_string();
    let back = ModelPatternConfig::from_json_str(&text, "searched").unwrap();
    assert_eq!(back, s.config);
    back.validate_model(2, 4).unwrap();
    for r in &s.heads {
        let c = r.search.chosen();
        assert_eq!(back.pattern(r.layer, r.head).unwrap(), c.pattern);
        assert!(c.recall > 0.0 && c.recall <= 1.0 + 1e-9);
        assert!(r.search.candidates.iter().all(|x| x.score <= c.score + 1e-12), "winner has the best recall");
    }
    assert!(s.summary().contains("8 heads"));
    // A config for another model shape is rejected.
    assert!(back.validate_model(3, 4).is_err());
    assert!(back.validate_model(2, 3).is_err());
}

#[test]
fn search_forward_equals_the_cpu_backend_forward() {
    // The search backend computes attention with its own dense path: on one layer's captured
    // inputs it must equal the CPU backend's.
    let model = Arc::new(tiny_model());
    let tokens = prompt(150);
    let mut engine = CpuEngine::new(Arc::clone(&model), CpuBackend::new());
    let (want, _) = engine.prefill(&tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap();
    let captured = capture_layer(Arc::clone(&model), &tokens, 1).unwrap();
    assert_eq!(captured.len(), 4);
    // Layer 1's attention through our dense path equals the CPU backend's on the same inputs.
    let d = captured[0].head_dim;
    let shape = AttnShape::single(1, 1, d, tokens.len());
    for c in &captured {
        let ours = dense_output(&HeadInputs::new(&c.q, &c.k, Some(&c.v), d).unwrap()).unwrap();
        let cpu = minference_core::HostRoundTrip::dense(
            &CpuBackend::new(),
            &shape,
            HostTensor::F32(&c.q),
            HostTensor::F32(&c.k),
            HostTensor::F32(&c.v),
        )
        .unwrap();
        let err = ours.iter().zip(&cpu).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(err < 1e-4, "head {}: {err}", c.head);
    }
    assert!(want.iter().all(|x| x.is_finite()));
}

#[test]
fn a_layer_capture_holds_what_the_engine_captures_for_each_head() {
    // Both watch the same forward (engine observers): every head's Q and its group's K agree
    // exactly, and V has K's shape.
    let model = Arc::new(tiny_model());
    let tokens = prompt(90);
    let captured = capture_layer(Arc::clone(&model), &tokens, 1).unwrap();
    let mut engine = CpuEngine::new(Arc::clone(&model), CpuBackend::new());
    for c in &captured {
        let qk = engine.capture_qk(&tokens, 1, c.head).unwrap();
        assert_eq!((qk.head, qk.tokens, qk.head_dim), (c.head, c.n, c.head_dim));
        assert_eq!(qk.q, c.q, "head {}", c.head);
        assert_eq!(qk.k, c.k, "head {}", c.head);
        assert_eq!(c.v.len(), c.k.len());
    }
    let heads: Vec<usize> = captured.iter().map(|c| c.head).collect();
    assert_eq!(heads, (0..model.config().heads).collect::<Vec<_>>());
}

#[test]
fn model_search_rejects_bad_prompts() {
    let model = Arc::new(tiny_model());
    let opts = SearchOptions::default();
    assert!(search_model(Arc::clone(&model), &[], &opts, &|_, _| {}).is_err());
    let err = search_model(model, &prompt(2000), &opts, &|_, _| {}).unwrap_err().to_string();
    assert!(err.contains("context"), "{err}");
    assert!(capture_layer(Arc::new(tiny_model()), &prompt(10), 5).is_err());
}

#[test]
fn kv_prompt_fits_its_budget_and_bad_calibrations_are_errors() {
    let Some(path) = real_model() else { return };
    let model = Model::load(&path).unwrap();
    let tok = model.tokenizer().unwrap();
    let p = kv_retrieval_prompt(tok, 1500, 3).unwrap();
    assert!(p.tokens.len() <= 1500 && p.tokens.len() > 1300, "{} tokens", p.tokens.len());
    assert!(p.text.contains(&format!("\"{}\": \"{}\"", p.key, p.value)));
    assert!(p.text.ends_with("The value associated with the specified key is: "));
    assert_eq!(kv_retrieval_prompt(tok, 1500, 3).unwrap(), p, "seeded");
    assert_ne!(kv_retrieval_prompt(tok, 1500, 4).unwrap().text, p.text);
    assert!(kv_retrieval_prompt(tok, 10, 3).is_err());

    let ctx = model.config().context_length;
    let synth = CalibrationSource::SyntheticKvRetrieval { seed: 1 };
    assert!(load_calibration(tok, &synth, Some(ctx + 1), ctx).unwrap_err().to_string().contains("context"));
    assert!(load_calibration(tok, &synth, Some(0), ctx).is_err());
    let dir = std::env::temp_dir().join(format!("minference-search-cal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    assert!(load_calibration(tok, &CalibrationSource::File(empty), None, ctx)
        .unwrap_err()
        .to_string()
        .contains("empty"));
    let short = dir.join("short.txt");
    std::fs::write(&short, "a few words only").unwrap();
    assert!(load_calibration(tok, &CalibrationSource::File(short.clone()), Some(100), ctx).is_err());
    let long = dir.join("long.txt");
    std::fs::write(&long, "word ".repeat(ctx + 100)).unwrap();
    assert!(load_calibration(tok, &CalibrationSource::File(long.clone()), None, ctx)
        .unwrap_err()
        .to_string()
        .contains("context"));
    assert_eq!(
        load_calibration(tok, &CalibrationSource::File(long.clone()), Some(500), ctx).unwrap().tokens.len(),
        500
    );
    assert!(load_calibration(tok, &CalibrationSource::File(dir.join("missing.txt")), None, ctx).is_err());
    let latin1 = dir.join("latin1.txt");
    std::fs::write(&latin1, b"fn caf\xe9() {}").unwrap();
    let err = load_calibration(tok, &CalibrationSource::File(latin1.clone()), None, ctx).unwrap_err().to_string();
    assert!(err.contains("not UTF-8") && err.contains("offset 6") && err.contains("latin1.txt"), "{err}");
    // Several documents: every one is checked, the bad one is named.
    let good = CalibrationSource::File(dir.join("long.txt"));
    let docs = load_calibrations(tok, &[good.clone(), synth.clone()], Some(500), ctx).unwrap();
    assert_eq!(docs[0].tokens.len(), 500);
    assert!(docs[1].tokens.len() <= 500 && docs[1].tokens.len() > 400, "{}", docs[1].tokens.len());
    let err = load_calibrations(tok, &[good, CalibrationSource::File(short)], Some(500), ctx).unwrap_err().to_string();
    assert!(err.contains("short.txt") && err.contains("fewer than the requested 500"), "{err}");
    assert!(load_calibrations(tok, &[], Some(500), ctx).unwrap_err().to_string().contains("no calibration"));
    std::fs::remove_dir_all(&dir).unwrap();
    let _ = HeadPattern::DEFAULT;
}
