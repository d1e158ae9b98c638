//! GPU forward == CPU forward (crates/model) within bf16 tolerance. Skips without a GPU; the real
//! SmolLM2 check also skips without the model file (`MINFERENCE_MODEL` or models/).

#[path = "../../model/tests/common/mod.rs"]
mod model_fixture;

use minference_core::HeadPattern;
use minference_cpu::CpuBackend;
use minference_cuda::Gpu;
use minference_engine::{random_tokens, AttentionChoice, CpuEngine, MInferencePlan};
use minference_engine_gpu::{AttentionGrouping, GpuEngine};
use minference_model::{Model, ModelConfig};
use minference_test_support::{agreement, assert_logits_close};
use std::sync::Arc;

fn random_small_model(layers: usize) -> Arc<Model> {
    let mut cfg = ModelConfig::named_shape("smollm2-135m").unwrap_or_else(|e| panic!("{e}"));
    cfg.layers = layers;
    Arc::new(Model::random_with_config(cfg, 11).unwrap_or_else(|e| panic!("{e}")))
}

/// Prefill, then three decode steps, on CPU and GPU.
fn run_both(gpu: Arc<Gpu>, model: Arc<Model>, tokens: &[u32], label: &str) {
    for grouping in [AttentionGrouping::PerLayer, AttentionGrouping::PerGroup] {
        let label = format!("{label}, {grouping:?}");
        run_both_with(Arc::clone(&gpu), Arc::clone(&model), tokens, &label, grouping);
    }
}

fn run_both_with(gpu: Arc<Gpu>, model: Arc<Model>, tokens: &[u32], label: &str, grouping: AttentionGrouping) {
    let mut cpu = CpuEngine::new(Arc::clone(&model), CpuBackend::new());
    let (cpu_logits, _) = cpu.prefill(tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let mut eng = GpuEngine::new(gpu, model).unwrap_or_else(|e| panic!("{e}"));
    eng.set_chunk_tokens(48); // several chunks, one partial
    eng.set_attention_grouping(grouping);
    let (gpu_logits, stats) =
        eng.prefill(tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{label}: GPU prefill of {} tokens in {:.4} s", tokens.len(), stats.seconds);
    assert_logits_close(&format!("{label} prefill"), &cpu_logits, &gpu_logits);
    let vocab = cpu.model().config().vocab as u32;
    for (i, t) in [5u32, 17, 400].map(|t| t % vocab).into_iter().enumerate() {
        let c = cpu.decode_step(t).unwrap_or_else(|e| panic!("{e}"));
        let g = eng.decode_step(t).unwrap_or_else(|e| panic!("{e}"));
        assert_logits_close(&format!("{label} decode step {i}"), &c, &g);
    }
    assert_eq!(eng.cached_tokens(), tokens.len() + 3);
}

#[test]
fn random_smollm2_shape_gpu_matches_cpu() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    let model = random_small_model(30);
    let tokens = random_tokens(200, model.config().vocab, 3);
    run_both(gpu, model, &tokens, "random smollm2-135m shape (random weights)");
}

/// Non-zero Q/K/V biases (Qwen2) and two KV groups: each group's bias rows, per layer and per group.
#[test]
fn qkv_biases_gpu_match_cpu() {
    // head_dim 64, the smallest the GPU kernels take.
    let shape =
        model_fixture::TinyShape { hidden: 256, heads: 4, kv_heads: 2, intermediate: 128, layers: 2, context: 512 };
    let file = minference_model::gguf::GgufFile::from_bytes(model_fixture::tiny_llama(&shape, "qwen2").build())
        .unwrap_or_else(|e| panic!("{e}"));
    let model = Arc::new(Model::from_gguf(&file).unwrap_or_else(|e| panic!("{e}")));
    assert!(model.config().qkv_bias);
    let Some(gpu) = minference_test_support::gpu() else { return };
    let tokens = random_tokens(100, model.config().vocab, 5);
    run_both(gpu, model, &tokens, "tiny qwen2 with Q/K/V biases");
}

#[test]
fn real_smollm2_gpu_matches_cpu() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    let Some(path) = minference_test_support::default_model() else { return };
    let model = Arc::new(Model::load(&path).unwrap_or_else(|e| panic!("{e}")));
    let tokens = model
        .tokenizer()
        .and_then(|t| t.encode("The capital of France is Paris. The capital of Germany is"))
        .unwrap_or_else(|e| panic!("{e}"));
    run_both(gpu, model, &tokens, "SmolLM2-135M-Instruct");
}

#[test]
fn kv_offload_gives_identical_logits() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    let model = random_small_model(8);
    let tokens = random_tokens(300, model.config().vocab, 5);
    let mut eng = GpuEngine::new(gpu, model).unwrap_or_else(|e| panic!("{e}"));
    // Offload needs per-group attention; compare like with like.
    eng.set_attention_grouping(AttentionGrouping::PerGroup);
    let (resident, s0) = eng.prefill(&tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let d0 = eng.decode_step(9).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s0.plan.kv_offloaded_layers, 0);
    assert!(!s0.plan.per_layer_attention);
    // Room for everything but about three layers of KV cache.
    let limit = s0.plan.device_needed_bytes - 3 * s0.plan.kv_layer_bytes;
    eng.set_memory_limit(Some(limit));
    let (offloaded, s1) = eng.prefill(&tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let d1 = eng.decode_step(9).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("offload: {}", s1.plan.describe());
    assert!(s1.plan.kv_offloaded_layers >= 3, "{}", s1.plan.describe());
    assert_eq!(resident, offloaded, "offload must not change the prefill");
    assert_eq!(d0, d1, "offload must not change decode");
    eng.set_memory_limit(Some(s0.plan.weights_bytes));
    let err = eng.prefill(&tokens, &AttentionChoice::Dense, &mut |_| {}).expect_err("weights alone fill the limit");
    assert!(err.to_string().contains("GiB"), "{err}");
}

#[test]
fn minference_with_a_covering_budget_equals_dense() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    let model = random_small_model(4);
    let tokens = random_tokens(1000, model.config().vocab, 9);
    let mut eng = GpuEngine::new(gpu, Arc::clone(&model)).unwrap_or_else(|e| panic!("{e}"));
    let (dense, s) = eng.prefill(&tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert!(s.plan.per_layer_attention, "1000 tokens fit per-layer attention");
    assert_eq!(s.kernel_density(), Some(1.0), "dense computes every causal pair");
    eng.set_attention_grouping(AttentionGrouping::PerGroup);
    let (grouped, _) = eng.prefill(&tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_logits_close("per-group vs per-layer attention", &dense, &grouped);
    eng.set_attention_grouping(AttentionGrouping::Auto);
    let full = MInferencePlan::uniform(model.config(), HeadPattern::VerticalSlash { k_v: 2048, k_s: 2048 });
    let (sparse, stats) =
        eng.prefill(&tokens, &AttentionChoice::MInference(full), &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.sparse_heads, 4 * model.config().heads);
    assert_eq!(stats.kernel_density(), Some(1.0), "a covering budget computes every causal pair");
    assert_eq!(stats.causal_entries, s.causal_entries);
    assert_logits_close("VS covering every key vs dense", &dense, &sparse);
    let narrow = MInferencePlan::uniform(model.config(), HeadPattern::VerticalSlash { k_v: 64, k_s: 128 });
    let (narrow_logits, ns) = eng
        .prefill(&tokens, &AttentionChoice::MInference(narrow.clone()), &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(narrow_logits.iter().all(|v| v.is_finite()));
    // The same plan on the CPU engine: its estimation differs from the GPU's only at near-ties, so
    // the pairs its kernels compute nearly match.
    let mut cpu = CpuEngine::new(Arc::clone(&model), CpuBackend::new());
    let (_, cs) =
        cpu.prefill(&tokens, &AttentionChoice::MInference(narrow), &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let (gpu_density, cpu_density) = (ns.kernel_density().unwrap_or(-1.0), cs.kernel_density().unwrap_or(-2.0));
    assert_eq!(ns.causal_entries, cs.causal_entries);
    assert!(
        (gpu_density - cpu_density).abs() < 0.03,
        "VS(64, 128) kernel density: GPU {gpu_density:.4}, CPU {cpu_density:.4}"
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    let model = random_small_model(2);
    let vocab = model.config().vocab as u32;
    let mut eng = GpuEngine::new(gpu, model).unwrap_or_else(|e| panic!("{e}"));
    assert!(eng.decode_step(1).is_err(), "decode before prefill");
    assert!(eng.prefill(&[], &AttentionChoice::Dense, &mut |_| {}).is_err());
    assert!(eng.prefill(&[1, vocab], &AttentionChoice::Dense, &mut |_| {}).is_err());
    let too_long = vec![1u32; 8193];
    assert!(eng.prefill(&too_long, &AttentionChoice::Dense, &mut |_| {}).is_err(), "past the 8K context");
    eng.set_max_new_tokens(1);
    eng.prefill(&[1, 2, 3], &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert!(eng.decode_step(4).is_ok());
    assert!(eng.decode_step(5).is_err(), "decode tail is full");
}

#[test]
fn residual_stream_matches_the_cpu_engine() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    let model = random_small_model(4);
    let tokens = random_tokens(150, model.config().vocab, 8);
    let mut cpu = CpuEngine::new(Arc::clone(&model), CpuBackend::new());
    let (want, _) = cpu.prefill_hidden(&tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let mut eng = GpuEngine::new(gpu, model).unwrap_or_else(|e| panic!("{e}"));
    let (got, _) =
        eng.prefill_residual(&tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(want.len(), got.len());
    let a = agreement(&want, &got);
    eprintln!("residual stream GPU vs CPU: cosine {:.6}, max rel diff {:.4}", a.cosine, a.rel_max);
    assert!(a.cosine > 0.999, "cosine {}", a.cosine);
}

/// Two engines on one GPU, the second a sibling sharing the first's weights: prefills and decode
/// steps interleaved between them give what each request gives on an engine of its own (the
/// server's GPU slots).
#[test]
fn sibling_engines_interleave_and_match_running_alone() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    let model = random_small_model(4);
    let vocab = model.config().vocab as u32;
    let (ta, tb) = (random_tokens(90, model.config().vocab, 1), random_tokens(170, model.config().vocab, 2));
    let steps = [3u32, 50, 7].map(|t| t % vocab);
    let alone = |tokens: &[u32]| {
        let mut e = GpuEngine::new(Arc::clone(&gpu), Arc::clone(&model)).unwrap_or_else(|e| panic!("{e}"));
        let (p, _) = e.prefill(tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
        let d: Vec<Vec<f32>> = steps.iter().map(|&t| e.decode_step(t).unwrap_or_else(|e| panic!("{e}"))).collect();
        (p, d)
    };
    let (pa, da) = alone(&ta);
    let (pb, db) = alone(&tb);
    let mut a = GpuEngine::new(Arc::clone(&gpu), Arc::clone(&model)).unwrap_or_else(|e| panic!("{e}"));
    let mut b = a.sibling().unwrap_or_else(|e| panic!("{e}"));
    let (qa, _) = a.prefill(&ta, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let (qb, _) = b.prefill(&tb, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_logits_close("sibling A prefill", &pa, &qa);
    assert_logits_close("sibling B prefill", &pb, &qb);
    for (i, &t) in steps.iter().enumerate() {
        let ga = a.decode_step(t).unwrap_or_else(|e| panic!("{e}"));
        let gb = b.decode_step(t).unwrap_or_else(|e| panic!("{e}"));
        assert_logits_close(&format!("sibling A decode {i}"), &da[i], &ga);
        assert_logits_close(&format!("sibling B decode {i}"), &db[i], &gb);
    }
    // B's cache was not A's: its answer differs from A's on the same step.
    assert_ne!(da[0], db[0]);
}
