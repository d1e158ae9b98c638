//! Tensor-parallel output == single-GPU output within bf16 tolerance, prefill and decode, dense
//! and MInference (per-head patterns looked up by global head id), and a failing rank ends the
//! group with its error instead of hanging. Needs 2 GPUs (skips otherwise); the real SmolLM2
//! check also needs the model file (`MINFERENCE_MODEL` or models/).

use minference_core::HeadPattern;
use minference_cuda::Gpu;
use minference_engine::PrefillEngine;
use minference_engine::{random_tokens, AttentionChoice, MInferencePlan};
use minference_engine_gpu::GpuEngine;
use minference_model::{Model, ModelConfig};
use minference_multi_gpu::{TpEngine, TpError, TpModel, TpOptions};
use minference_test_support::{agreement, assert_logits_close};
use std::sync::Arc;

/// GPU 0 of at least two (the test skips on one GPU, see `minference_test_support::gpus`).
fn two_gpus() -> Option<Arc<Gpu>> {
    minference_test_support::gpus(2).map(|g| Arc::clone(&g[0]))
}
use std::time::{Duration, Instant};

fn gqa128_config() -> ModelConfig {
    let mut cfg = ModelConfig::named_shape("llama-3-8b").unwrap_or_else(|e| panic!("{e}"));
    cfg.name = "llama-like D=128 (random weights)".into();
    cfg.hidden = 512;
    cfg.intermediate = 1000;
    cfg.layers = 3;
    cfg.heads = 8;
    cfg.kv_heads = 2;
    cfg.head_dim = 128;
    cfg.vocab = 2000;
    cfg
}

fn smollm2_shape(layers: usize) -> ModelConfig {
    let mut cfg = ModelConfig::named_shape("smollm2-135m").unwrap_or_else(|e| panic!("{e}"));
    cfg.layers = layers;
    cfg
}

/// Mixed patterns, so a wrong global head id would change the output.
fn mixed_plan(cfg: &ModelConfig) -> AttentionChoice {
    AttentionChoice::MInference(MInferencePlan::from_lookup(cfg, |l, h| match (l + h) % 4 {
        0 => HeadPattern::Dense,
        1 => HeadPattern::VerticalSlash { k_v: 40, k_s: 64 },
        2 => HeadPattern::BlockSparse { k_b: 3 },
        _ => HeadPattern::AShape { n_init: 64, n_local: 128 },
    }))
}

/// Same prompt, same attention, one GPU vs a group of two: prefill and three decode steps.
/// (bf16 rounding of the residual differs between one GPU, one GEMM over all heads, and a group,
/// partial sums added in bf16; so the logits bounds are those of GPU vs CPU.)
fn compare(gpu: Arc<Gpu>, model: Arc<Model>, tokens: &[u32], attention: &AttentionChoice, label: &str) {
    let mut single = GpuEngine::new(gpu, Arc::clone(&model)).unwrap_or_else(|e| panic!("{e}"));
    let (want, _) = single.prefill(tokens, attention, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let mut want_steps = Vec::new();
    for t in [5u32, 17, 400] {
        want_steps.push(single.decode_step(t).unwrap_or_else(|e| panic!("{e}")));
    }
    let (want_stream, _) = single.prefill_residual(tokens, attention, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    drop(single);

    let mut group =
        TpEngine::new(&[0, 1], TpModel::Host(model), TpOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut layers_seen = 0;
    let (got, stats) = group.prefill(tokens, attention, &mut |_| layers_seen += 1).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{label}: group of 2 prefilled {} tokens in {:.3} s", tokens.len(), stats.seconds);
    assert_eq!(layers_seen, group.config().layers);
    assert_eq!(stats.sparse_heads + stats.dense_heads, group.config().layers * group.config().heads);
    assert_logits_close(&format!("{label} prefill"), &want, &got);
    for (i, (t, w)) in [5u32, 17, 400].into_iter().zip(&want_steps).enumerate() {
        let g = group.decode_step(t).unwrap_or_else(|e| panic!("{e}"));
        assert_logits_close(&format!("{label} decode step {i}"), w, &g);
    }
    // The final residual stream (what eval ppl scores) is the same too.
    let (stream, _) = group.prefill_residual(tokens, attention, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let cos = agreement(&want_stream, &stream).cosine;
    eprintln!("{label} residual stream: cosine {cos:.6}");
    assert!(cos > 0.999, "{label} residual stream cosine {cos}");
}

#[test]
fn smollm2_shape_uneven_split_matches_one_gpu() {
    let Some(gpu) = two_gpus() else { return };
    // 3 KV heads over 2 GPUs: 1 + 2.
    let model = Arc::new(Model::random_with_config(smollm2_shape(4), 7).unwrap_or_else(|e| panic!("{e}")));
    let tokens = random_tokens(333, model.config().vocab, 1);
    compare(Arc::clone(&gpu), Arc::clone(&model), &tokens, &AttentionChoice::Dense, "smollm2 shape dense");
    let plan = mixed_plan(model.config());
    compare(gpu, model, &tokens, &plan, "smollm2 shape mixed patterns");
}

#[test]
fn d128_gqa4_matches_one_gpu() {
    let Some(gpu) = two_gpus() else { return };
    let model = Arc::new(Model::random_with_config(gqa128_config(), 9).unwrap_or_else(|e| panic!("{e}")));
    let tokens = random_tokens(700, model.config().vocab, 2);
    let plan = mixed_plan(model.config());
    compare(gpu, model, &tokens, &plan, "D=128 GQA 4 mixed patterns");
}

#[test]
fn real_smollm2_matches_one_gpu() {
    let Some(gpu) = two_gpus() else { return };
    let Some(path) = minference_test_support::default_model() else { return };
    let model = Arc::new(Model::load(&path).unwrap_or_else(|e| panic!("{e}")));
    let tokenizer = model.tokenizer().unwrap_or_else(|e| panic!("{e}"));
    let text = "The capital of France is Paris. The capital of Germany is Berlin. ".repeat(20);
    let tokens = tokenizer.encode(&text).unwrap_or_else(|e| panic!("{e}"));
    compare(Arc::clone(&gpu), Arc::clone(&model), &tokens, &AttentionChoice::Dense, "SmolLM2 dense");
    let plan = mixed_plan(model.config());
    compare(gpu, model, &tokens, &plan, "SmolLM2 mixed patterns");
}

#[test]
fn failing_rank_ends_the_group_with_its_error() {
    let Some(_gpu) = two_gpus() else { return };
    let model = Arc::new(Model::random_with_config(smollm2_shape(3), 5).unwrap_or_else(|e| panic!("{e}")));
    let tokens = random_tokens(200, model.config().vocab, 4);
    let opts = TpOptions { timeout: Duration::from_secs(60), fail_at: Some((1, 1)), ..TpOptions::default() };
    let mut group = TpEngine::new(&[0, 1], TpModel::Host(model), opts).unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    let err = group
        .prefill(&tokens, &AttentionChoice::Dense, &mut |_| {})
        .err()
        .unwrap_or_else(|| panic!("the injected failure was not reported"));
    let msg = err.to_string();
    eprintln!("group error after {:.2} s: {msg}", start.elapsed().as_secs_f64());
    assert!(msg.contains("GPU 1") && msg.contains("injected failure"), "{msg}");
    // The group is stopped: later calls fail at once instead of waiting on a dead peer.
    let again = group.decode_step(1).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(again.contains("stopped"), "{again}");
    drop(group);
}

#[test]
fn out_of_memory_on_a_rank_is_one_clear_error() {
    let Some(_gpu) = two_gpus() else { return };
    let model = Arc::new(Model::random_with_config(smollm2_shape(2), 5).unwrap_or_else(|e| panic!("{e}")));
    let opts = TpOptions { memory_limit: Some(64 << 20), ..TpOptions::default() };
    let mut group = TpEngine::new(&[0, 1], TpModel::Host(model), opts).unwrap_or_else(|e| panic!("{e}"));
    let tokens = random_tokens(4096, 49152, 4);
    let msg = group
        .prefill(&tokens, &AttentionChoice::Dense, &mut |_| {})
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| panic!("a 64 MiB budget should not fit"));
    eprintln!("{msg}");
    assert!(msg.contains("GPU") && msg.to_lowercase().contains("memory"), "{msg}");
}

#[test]
fn bad_groups_are_refused_before_touching_a_gpu() {
    let model = Arc::new(Model::random_with_config(smollm2_shape(1), 5).unwrap_or_else(|e| panic!("{e}")));
    let err =
        |ordinals: &[usize]| match TpEngine::new(ordinals, TpModel::Host(Arc::clone(&model)), TpOptions::default()) {
            Err(e) => e,
            Ok(_) => panic!("{ordinals:?} accepted"),
        };
    assert!(matches!(err(&[0]), TpError::Input(_)));
    assert!(matches!(err(&[0, 0]), TpError::Input(_)));
    // SmolLM2 has 3 KV heads: 4 GPUs cannot share them.
    let e = err(&[0, 1, 2, 3]);
    assert!(e.to_string().contains("3 KV heads"), "{e}");
}
