//! The GPU forward of the default model (SmolLM2-135M-Instruct Q4_1, bf16 on the device) against
//! HF transformers' forward of the same file: the fixture crates/model/tests/fixtures/smollm2_logits.json
//! (regenerate with scripts/hf_reference.py). Skips without a GPU or without the model file
//! (`MINFERENCE_MODEL` or models/).

use minference_engine::AttentionChoice;
use minference_engine_gpu::{EngineSetup, GpuEngine, Precision};
use minference_model::Model;
use std::sync::Arc;

fn numbers(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().into_iter().flatten().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()
}

/// Max over the fixture of |ours − HF| / max(1, |HF|) on the HF top-5 logits, and top-1 agreement:
/// within 1e-2 in f16; bf16 (three fewer mantissa bits) is held to 3e-2 and its figure printed.
#[test]
fn gpu_dense_logits_match_hf() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    let Some(path) = minference_test_support::default_model() else { return };
    let model = Arc::new(Model::load(&path).unwrap_or_else(|e| panic!("{e}")));
    let fixture_path = minference_test_support::crate_dir(env!("CARGO_MANIFEST_DIR"))
        .join("../model/tests/fixtures/smollm2_logits.json");
    let text = std::fs::read_to_string(&fixture_path).unwrap_or_else(|e| panic!("{}: {e}", fixture_path.display()));
    let fx: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    for (precision, bound) in [(Precision::F16, 1e-2), (Precision::Bf16, 3e-2)] {
        let setup = EngineSetup { precision, ..EngineSetup::default() };
        let engine = GpuEngine::new_with(Arc::clone(&gpu), Arc::clone(&model), setup).unwrap_or_else(|e| panic!("{e}"));
        check_against_fixture(engine, &fx, precision, bound);
    }
}

fn check_against_fixture(mut engine: GpuEngine, fx: &serde_json::Value, precision: Precision, bound: f64) {
    let (mut worst, mut checked, mut top1_same) = (0f64, 0usize, 0usize);
    for case in fx["cases"].as_array().into_iter().flatten() {
        let ids: Vec<u32> = numbers(&case["ids"]).iter().map(|x| *x as u32).collect();
        for pos in case["positions"].as_array().into_iter().flatten() {
            let p = pos["position"].as_u64().unwrap_or(0) as usize;
            let (logits, _) =
                engine.prefill(&ids[..=p], &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
            let top: Vec<usize> = numbers(&pos["top_ids"]).iter().map(|x| *x as usize).collect();
            let want = numbers(&pos["top_logits"]);
            let ours_top1 = logits.iter().enumerate().fold(0, |b, (i, x)| if *x > logits[b] { i } else { b });
            top1_same += usize::from(ours_top1 == top[0]);
            checked += 1;
            for (&t, &w) in top.iter().zip(&want) {
                worst = worst.max((logits[t] as f64 - w).abs() / w.abs().max(1.0));
            }
        }
    }
    eprintln!(
        "GPU ({}) vs HF: {checked} positions, top-1 same at {top1_same}, max relative error {worst:.2e}",
        precision.name()
    );
    assert!(checked > 0, "empty fixture");
    assert_eq!(top1_same, checked, "{} top-1 differs from HF", precision.name());
    assert!(worst <= bound, "{}: max relative error {worst} above {bound}", precision.name());
}
