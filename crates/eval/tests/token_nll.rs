//! Per-token NLL from one prefill (all positions scored in chunks) equals the NLL from dense
//! token-by-token decoding; the scorer's KL of a prefill against itself is zero.

mod common;

use minference_cpu::CpuBackend;
use minference_engine::lm_head::log_softmax_rows;
use minference_engine::{AttentionChoice, CpuEngine};
use minference_eval::score_streams;
use minference_model::Model;
use std::sync::Arc;

/// `-log p(tokens[t + 1])` for every t, feeding one token at a time through the KV cache.
fn decode_nll(engine: &mut CpuEngine<CpuBackend>, tokens: &[u32]) -> Vec<f32> {
    let vocab = engine.model().config().vocab;
    let (mut logits, _) =
        engine.prefill(&tokens[..1], &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for t in 0..tokens.len() - 1 {
        log_softmax_rows(&mut logits, vocab);
        out.push(-logits[tokens[t + 1] as usize]);
        if t + 2 < tokens.len() {
            logits = engine.decode_step(tokens[t + 1]).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    out
}

fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (t, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "position {t}: prefill NLL {x} vs decode NLL {y}");
    }
}

fn check(model: Model, tokens: &[u32], tol: f32) {
    let model = Arc::new(model);
    let mut engine = CpuEngine::new(model.clone(), CpuBackend::new());
    let from_prefill =
        engine.prefill_token_nll(tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let from_decode = decode_nll(&mut engine, tokens);
    assert_close(&from_prefill, &from_decode, tol);

    // The chunked scorer agrees, and a prefill has zero KL against itself.
    let (hidden, _) =
        engine.prefill_hidden(tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let scores =
        score_streams(&model, tokens, 0..tokens.len() - 1, &[&hidden, &hidden]).unwrap_or_else(|e| panic!("{e}"));
    let mean = from_prefill.iter().map(|&v| v as f64).sum::<f64>() / from_prefill.len() as f64;
    assert!((scores[0].mean_nll - mean).abs() < 1e-4 * (1.0 + mean), "{} vs {mean}", scores[0].mean_nll);
    assert!((scores[0].perplexity - mean.exp()).abs() < 1e-3 * mean.exp());
    assert!(scores[1].mean_kl.abs() < 1e-6, "self KL {}", scores[1].mean_kl);
}

#[test]
fn prefill_nll_equals_decode_nll_tiny_tied_and_untied() {
    // 300 tokens: more than one scoring chunk and more than one 64-row block.
    let tokens: Vec<u32> = (0..300u32).map(|i| (i * 37 + 11) % 300).collect();
    check(common::tiny_model(true), &tokens, 1e-3);
    check(common::tiny_model(false), &tokens, 1e-3);
}

#[test]
fn prefill_nll_equals_decode_nll_real_model() {
    let Some(path) = common::real_model() else { return };
    let model = Model::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let tokens = model
        .tokenizer()
        .unwrap_or_else(|e| panic!("{e}"))
        .encode("fn main() {\n    let xs: Vec<u32> = (0..10).collect();\n    println!(\"{}\", xs.iter().sum::<u32>());\n}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(tokens.len() > 20);
    check(model, &tokens, 2e-3);
}

#[test]
fn scoring_rejects_bad_ranges() {
    let model = Arc::new(common::tiny_model(true));
    let tokens: Vec<u32> = (0..10).collect();
    let mut engine = CpuEngine::new(model.clone(), CpuBackend::new());
    assert!(engine.prefill_token_nll(&tokens[..1], &AttentionChoice::Dense, &mut |_| {}).is_err());
    let (hidden, _) =
        engine.prefill_hidden(&tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    // The last token has no next token to predict.
    assert!(score_streams(&model, &tokens, 0..10, &[&hidden]).is_err());
    assert!(score_streams(&model, &tokens, 3..3, &[&hidden]).is_err());
    assert!(score_streams(&model, &tokens[..9], 0..5, &[&hidden]).is_err());
    assert!(score_streams(&model, &tokens, 0..9, &[]).is_err());
}
