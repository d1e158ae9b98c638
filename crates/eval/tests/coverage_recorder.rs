//! The density recorder counts every causal pair for dense calls and exactly the pairs of the
//! index it forwards for sparse calls, without changing any output.

use minference_core::coverage::index_head_coverage;
use minference_core::rng::SplitMix64;
use minference_core::{AttentionBackend, AttnShape, HeadPattern, HostTensor, SeqLen};
use minference_cpu::CpuBackend;
use minference_eval::CoverageRecorder;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.normal() as f32).collect()
}

#[test]
fn dense_is_full_and_sparse_matches_the_index() {
    let (heads, d, n) = (2, 64, 700);
    let shape = AttnShape { heads, kv_heads: 1, head_dim: d, seqs: vec![SeqLen { q_len: n, kv_len: n }] };
    let (q, k, v) = (random(heads * n * d, 1), random(n * d, 2), random(n * d, 3));
    let (qt, kt, vt) = (HostTensor::F32(&q), HostTensor::F32(&k), HostTensor::F32(&v));
    let rec = CoverageRecorder::new(CpuBackend::new());
    let plain = CpuBackend::new();

    let out = rec.dense(&shape, qt, kt, vt).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out, plain.dense(&shape, qt, kt, vt).unwrap_or_else(|e| panic!("{e}")));
    let cov = rec.take();
    assert_eq!(cov.entries, cov.causal);
    assert_eq!(cov.causal, (heads * n * (n + 1) / 2) as u64);
    assert_eq!(rec.take().causal, 0, "take clears the totals");

    let patterns = [HeadPattern::VerticalSlash { k_v: 30, k_s: 64 }, HeadPattern::Dense];
    let vs = rec.estimate_vs(&shape, qt, kt, &patterns).unwrap_or_else(|e| panic!("{e}"));
    let index = rec.build_index(&shape, qt, kt, &patterns, &vs).unwrap_or_else(|e| panic!("{e}"));
    let out = rec.sparse(&shape, qt, kt, vt, &patterns, &index).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out, plain.sparse(&shape, qt, kt, vt, &patterns, &index).unwrap_or_else(|e| panic!("{e}")));
    let cov = rec.take();
    let sparse_head = index_head_coverage(&patterns[0], &index, &shape, 0, 0).unwrap_or_else(|e| panic!("{e}"));
    let per_head = (n * (n + 1) / 2) as u64;
    assert_eq!(cov.causal, 2 * per_head);
    assert_eq!(cov.entries, sparse_head.entries + per_head);
    assert!(sparse_head.entries < per_head, "a small VS budget computes fewer pairs than dense");
    assert!(cov.density() < 1.0 && cov.density() > 0.5);
}
