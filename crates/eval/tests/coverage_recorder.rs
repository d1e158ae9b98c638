//! The density recorder counts every causal pair of a dense pass and exactly the pairs of the
//! index a sparse pass ran with, and it measures a real CPU prefill's passes through the engine's
//! observer without changing its output.

use minference_core::coverage::index_head_coverage;
use minference_core::rng::SplitMix64;
use minference_core::{AttnShape, HeadPattern, HostRoundTrip, HostTensor, SeqLen};
use minference_cpu::CpuBackend;
use minference_engine::{cpu_engine, AttentionChoice, AttentionPass, MInferencePlan, Observer};
use minference_eval::{prefill_hidden_with_coverage, CoverageRecorder};
use minference_model::{Model, ModelConfig};

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn pass<'a>(
    n: usize,
    heads: usize,
    d: usize,
    qkv: (&'a [f32], &'a [f32], &'a [f32]),
    o: &'a [f32],
    patterns: &'a [HeadPattern],
    index: Option<&'a minference_core::SparseIndex>,
) -> AttentionPass<'a, [f32]> {
    let (q, k, v) = qkv;
    AttentionPass {
        layer: 0,
        first_head: 0,
        heads,
        first_kv_head: 0,
        kv_heads: 1,
        tokens: n,
        kv_tokens: n,
        head_dim: d,
        q,
        k,
        v,
        o,
        patterns,
        index,
    }
}

#[test]
fn dense_is_full_and_sparse_matches_the_index() {
    let (heads, d, n) = (2, 64, 700);
    let shape = AttnShape { heads, kv_heads: 1, head_dim: d, seqs: vec![SeqLen { q_len: n, kv_len: n }] };
    let (q, k, v) = (random(heads * n * d, 1), random(n * d, 2), random(n * d, 3));
    let (qt, kt, vt) = (HostTensor::F32(&q), HostTensor::F32(&k), HostTensor::F32(&v));
    let cpu = CpuBackend::new();
    let mut rec = CoverageRecorder::new();
    let obs: &mut dyn Observer<[f32], ()> = &mut rec;

    let out = cpu.dense(&shape, qt, kt, vt).unwrap_or_else(|e| panic!("{e}"));
    obs.attention(&pass(n, heads, d, (&q, &k, &v), &out, &[], None)).unwrap_or(());
    let cov = rec.take();
    assert_eq!(cov.entries, cov.causal);
    assert_eq!(cov.causal, (heads * n * (n + 1) / 2) as u64);
    assert_eq!(rec.take().causal, 0, "take clears the totals");

    let patterns = [HeadPattern::VerticalSlash { k_v: 30, k_s: 64 }, HeadPattern::Dense];
    let vs = cpu.estimate_vs(&shape, qt, kt, &patterns).unwrap_or_else(|e| panic!("{e}"));
    let index = cpu.build_index(&shape, qt, kt, &patterns, &vs).unwrap_or_else(|e| panic!("{e}"));
    let out = cpu.sparse(&shape, qt, kt, vt, &patterns, &index).unwrap_or_else(|e| panic!("{e}"));
    let obs: &mut dyn Observer<[f32], ()> = &mut rec;
    obs.attention(&pass(n, heads, d, (&q, &k, &v), &out, &patterns, Some(&index))).unwrap_or(());
    let cov = rec.take();
    let sparse_head = index_head_coverage(&patterns[0], &index, &shape, 0, 0).unwrap_or_else(|e| panic!("{e}"));
    let per_head = (n * (n + 1) / 2) as u64;
    assert_eq!(cov.causal, 2 * per_head);
    assert_eq!(cov.entries, sparse_head.entries + per_head);
    assert!(sparse_head.entries < per_head, "a small VS budget computes fewer pairs than dense");
    assert!(cov.density() < 1.0 && cov.density() > 0.5);
}

#[test]
fn a_cpu_prefill_is_measured_without_changing_its_hidden_states() {
    let cfg = ModelConfig::tiny_llama(false);
    let model = std::sync::Arc::new(Model::random_with_config(cfg.clone(), 7).unwrap_or_else(|e| panic!("{e}")));
    let n = 600;
    let tokens: Vec<u32> = (0..n).map(|i| (i * 31 % cfg.vocab) as u32).collect();
    let mut engine = cpu_engine(model);
    let dense = AttentionChoice::Dense;
    let (hidden, _, cov) =
        prefill_hidden_with_coverage(&mut engine, &tokens, &dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let (plain, _) = engine.prefill_hidden(&tokens, &dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hidden, plain);
    let pairs = (cfg.layers * cfg.heads * n * (n + 1) / 2) as u64;
    assert_eq!((cov.entries, cov.causal), (pairs, pairs), "every pass of every layer, all dense");

    let vs = HeadPattern::VerticalSlash { k_v: 16, k_s: 32 };
    let sparse = AttentionChoice::MInference(MInferencePlan::uniform(&cfg, vs));
    let (_, stats, cov) =
        prefill_hidden_with_coverage(&mut engine, &tokens, &sparse, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.sparse_heads, cfg.layers * cfg.heads);
    assert_eq!(cov.causal, pairs);
    assert!(cov.entries < pairs, "a small VS budget computes fewer pairs than dense");
}
