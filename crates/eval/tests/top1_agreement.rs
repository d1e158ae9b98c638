//! `score_streams`' next-token top-1 agreement with the reference (issue 14 item 5) equals a
//! brute-force count of matching argmaxes over the full logits, on the tiny model with a sparse
//! prefill that really differs from dense.

mod common;

use minference_core::HeadPattern;
use minference_cpu::CpuBackend;
use minference_engine::lm_head::logits_rows;
use minference_engine::{AttentionChoice, CpuEngine, MInferencePlan};
use minference_eval::ppl::argmax;
use minference_eval::score_streams;
use std::sync::Arc;

#[test]
fn top1_agreement_counts_matching_argmaxes() {
    let model = Arc::new(common::tiny_model(true));
    let cfg = model.config().clone();
    let tokens: Vec<u32> = (0..400u32).map(|i| (i * 53 + 7) % 300).collect();
    let mut engine = CpuEngine::new(model.clone(), CpuBackend::new());
    let (dense, _) = engine.prefill_hidden(&tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap();
    let sparse_plan = MInferencePlan::uniform(&cfg, HeadPattern::AShape { n_init: 1, n_local: 8 });
    let (sparse, _) = engine.prefill_hidden(&tokens, &AttentionChoice::MInference(sparse_plan), &mut |_| {}).unwrap();
    // Positions past the first 64-row block, so the A-shape drops keys.
    let positions = 100..399;
    let scores = score_streams(&model, &tokens, positions.clone(), &[&dense, &sparse, &dense]).unwrap();

    let top1 = |stream: &[f32]| -> Vec<usize> {
        let mut logits = vec![0f32; positions.len() * cfg.vocab];
        logits_rows(&model, &stream[positions.start * cfg.hidden..positions.end * cfg.hidden], &mut logits).unwrap();
        logits.chunks(cfg.vocab).map(argmax).collect()
    };
    let (d, s) = (top1(&dense), top1(&sparse));
    let expected = d.iter().zip(&s).filter(|(a, b)| a == b).count() as f64 / positions.len() as f64;
    assert_eq!(scores[0].top1_agreement, 1.0);
    assert_eq!(scores[2].top1_agreement, 1.0);
    assert!((scores[1].top1_agreement - expected).abs() < 1e-12, "{} vs {expected}", scores[1].top1_agreement);
    assert!(scores[1].mean_kl > 0.0, "the sparse prefill must differ from dense");
    assert!(expected < 1.0, "a local-only tiny model should change some argmaxes ({expected})");
}
