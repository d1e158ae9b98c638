//! The default model (SmolLM2-135M-Instruct Q4_1) against HF transformers' forward of the same
//! file (fixture written by scripts/hf_reference.py). Skips when the model file is absent.

#[path = "../../model/tests/common/mod.rs"]
mod common;

use minference_core::HeadPattern;
use minference_cpu::CpuBackend;
use minference_engine::{generate, AttentionChoice, CpuEngine as Engine, GenerateOptions, MInferencePlan, Sampler};
use minference_model::Model;
use std::sync::{Arc, OnceLock};

fn model() -> Option<Arc<Model>> {
    static MODEL: OnceLock<Option<Arc<Model>>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = common::default_model()?;
            Some(Arc::new(Model::load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))))
        })
        .clone()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap_or(u64::MAX) as u32)
        .collect()
}

#[test]
fn config_matches_the_published_shape() {
    let Some(m) = model() else { return };
    let c = m.config();
    assert_eq!((c.layers, c.heads, c.kv_heads, c.head_dim, c.hidden, c.vocab), (30, 9, 3, 64, 576, 49152));
    assert!(c.tie_embeddings);
}

#[test]
fn tokenizer_matches_hf() {
    let Some(m) = model() else { return };
    let tok = m.tokenizer().unwrap_or_else(|e| panic!("{e}"));
    let fx = common::fixture("smollm2_logits.json");
    for case in fx["cases"].as_array().into_iter().flatten() {
        let prompt = case["prompt"].as_str().unwrap_or_default();
        let ours = tok.encode(prompt).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ours, ids(&case["ids"]), "prompt {prompt:?}");
        assert_eq!(tok.decode(&ours, false).unwrap_or_default(), prompt);
    }
    // The chat template renders the same ChatML text HF's template does for one user turn.
    let chat = tok.chat_prompt("What is the tallest mountain in the world?", None);
    assert_eq!(chat, fx["cases"][1]["prompt"].as_str().unwrap_or_default());
}

/// Max over the fixture of |ours − HF| / max(1, |HF|) on the HF top-5 logits.
#[test]
fn dense_logits_match_hf_within_1e_2() {
    let Some(m) = model() else { return };
    let fx = common::fixture("smollm2_logits.json");
    let mut engine = Engine::new(m, CpuBackend::new());
    let mut worst = 0f32;
    for case in fx["cases"].as_array().into_iter().flatten() {
        let tokens = ids(&case["ids"]);
        for pos in case["positions"].as_array().into_iter().flatten() {
            let p = pos["position"].as_u64().unwrap_or(0) as usize;
            let (logits, _) =
                engine.prefill(&tokens[..=p], &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
            let top = ids(&pos["top_ids"]);
            let want: Vec<f32> = pos["top_logits"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
                .collect();
            assert_eq!(minference_engine::sampling::argmax(&logits), top[0], "top-1 at position {p}");
            for (&t, &w) in top.iter().zip(&want) {
                let rel = (logits[t as usize] - w).abs() / w.abs().max(1.0);
                worst = worst.max(rel);
            }
        }
    }
    eprintln!("max relative error vs HF: {worst:.2e}");
    assert!(worst <= 1e-2, "max relative error {worst}");
}

#[test]
fn greedy_generation_matches_hf() {
    let Some(m) = model() else { return };
    let fx = common::fixture("smollm2_logits.json");
    let mut engine = Engine::new(m, CpuBackend::new());
    for case in fx["cases"].as_array().into_iter().flatten() {
        let want = ids(&case["greedy"]);
        let opts = GenerateOptions { max_new_tokens: want.len(), sampler: Sampler::greedy(), stop_tokens: vec![] };
        let gen = generate(&mut engine, &ids(&case["ids"]), &AttentionChoice::Dense, &opts, &mut |_| {}, &mut |_| true)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gen.tokens, want, "prompt {:?}", case["prompt"]);
    }
}

/// A long prompt (~1.5K tokens) with a deliberately small sparse budget: MInference prefill must
/// still agree with dense on the next token. KL(dense ‖ sparse) is printed.
#[test]
fn minference_prefill_agrees_with_dense_on_top1() {
    let Some(m) = model() else { return };
    let tok = m.tokenizer().unwrap_or_else(|e| panic!("{e}"));
    let mut text = String::from("Here is a list of facts about cities.\n");
    for i in 0..60 {
        text.push_str(&format!("Fact {i}: the city number {i} has {} parks and {} bridges.\n", i * 7 % 13, i * 5 % 11));
    }
    text.push_str("The secret password is 'blue falcon'. Remember it.\n");
    for i in 60..90 {
        text.push_str(&format!("Fact {i}: the city number {i} has {} parks and {} bridges.\n", i * 7 % 13, i * 5 % 11));
    }
    let prompt =
        tok.encode(&tok.chat_prompt(&format!("{text}\nWhat is the secret password?"), None)).unwrap_or_default();
    assert!(prompt.len() > 1000, "prompt has {} tokens", prompt.len());
    let cfg = m.config().clone();
    let mut engine = Engine::new(m, CpuBackend::new());
    let (dense, _) = engine.prefill(&prompt, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    for (name, pattern) in [
        ("vertical_and_slash(64, 256)", HeadPattern::VerticalSlash { k_v: 64, k_s: 256 }),
        ("stream_llm(64, 256)", HeadPattern::AShape { n_init: 64, n_local: 256 }),
        ("block_sparse(8)", HeadPattern::BlockSparse { k_b: 8 }),
    ] {
        let plan = MInferencePlan::uniform(&cfg, pattern);
        let (sparse, stats) = engine
            .prefill(&prompt, &AttentionChoice::MInference(plan), &mut |_| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(stats.sparse_heads, cfg.layers * cfg.heads);
        let kl = kl_divergence(&dense, &sparse);
        eprintln!(
            "{name}: {} tokens, top-1 dense {} sparse {}, KL {kl:.4}",
            prompt.len(),
            argmax(&dense),
            argmax(&sparse)
        );
        assert_eq!(argmax(&dense), argmax(&sparse), "{name}");
    }
}

fn argmax(v: &[f32]) -> u32 {
    minference_engine::sampling::argmax(v)
}

fn log_softmax(v: &[f32]) -> Vec<f64> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = v.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
    v.iter().map(|&x| x as f64 - lse).collect()
}

fn kl_divergence(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let (p, q) = (log_softmax(p_logits), log_softmax(q_logits));
    p.iter().zip(&q).map(|(lp, lq)| lp.exp() * (lp - lq)).sum()
}
