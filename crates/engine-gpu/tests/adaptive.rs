//! Adaptive Vertical-Slash heads through the GPU forward (`minference_cuda::layer_attention`): a rule
//! that keeps all the estimated mass is dense attention, and a rule that keeps some of it agrees
//! with the CPU forward of the same plan. Skips without a GPU.

use minference_core::{AdaptiveBudget, HeadPattern};
use minference_cpu::CpuBackend;
use minference_engine::{random_tokens, AttentionChoice, CpuEngine, MInferencePlan};
use minference_engine_gpu::GpuEngine;
use minference_model::{Model, ModelConfig};
use minference_test_support::assert_logits_close;
use std::sync::Arc;

fn random_small_model(layers: usize) -> Arc<Model> {
    let mut cfg = ModelConfig::named_shape("smollm2-135m").unwrap_or_else(|e| panic!("{e}"));
    cfg.layers = layers;
    Arc::new(Model::random_with_config(cfg, 11).unwrap_or_else(|e| panic!("{e}")))
}

fn adaptive(gamma: f64, max: usize) -> HeadPattern {
    AdaptiveBudget { gamma, min_v: 0, max_v: max, min_s: 0, max_s: max }.to_pattern().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn adaptive_heads_on_the_gpu_match_dense_when_keeping_everything_and_the_cpu_otherwise() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    let model = random_small_model(3);
    let cfg = model.config().clone();
    let tokens = random_tokens(700, cfg.vocab, 5);
    let mut eng = GpuEngine::new(gpu, Arc::clone(&model)).unwrap_or_else(|e| panic!("{e}"));
    let (dense, _) = eng.prefill(&tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let all = MInferencePlan::uniform(&cfg, adaptive(1.0, 1 << 20));
    let (kept_all, stats) =
        eng.prefill(&tokens, &AttentionChoice::MInference(all), &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.sparse_heads, cfg.layers * cfg.heads);
    assert_logits_close("adaptive gamma 1 vs dense (GPU)", &dense, &kept_all);
    let plan = MInferencePlan::uniform(&cfg, adaptive(0.9, 6096));
    let (gpu_logits, _) =
        eng.prefill(&tokens, &AttentionChoice::MInference(plan.clone()), &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let mut cpu = CpuEngine::new(Arc::clone(&model), CpuBackend::new());
    let (cpu_logits, _) =
        cpu.prefill(&tokens, &AttentionChoice::MInference(plan), &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_logits_close("adaptive gamma 0.9, GPU vs CPU", &cpu_logits, &gpu_logits);
}
