//! Synthetic generator: layout, determinism, per-sequence independence, structure, speed (printed).

use std::time::Instant;

use minference_core::{generate_qkv, AttnShape, SeqLen, SynthConfig, SynthMode};

#[test]
fn layout_sizes_and_determinism() {
    let shape = AttnShape {
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        seqs: vec![SeqLen::prefill(100), SeqLen { q_len: 30, kv_len: 90 }],
    };
    for cfg in [SynthConfig::structured(), SynthConfig::random()] {
        let (q, k, v) = generate_qkv(&shape, &cfg, 5);
        assert_eq!(q.len(), shape.q_elems());
        assert_eq!(k.len(), shape.kv_elems());
        assert_eq!(v.len(), shape.kv_elems());
        assert!(q.iter().chain(&k).chain(&v).all(|x| x.is_finite()));
        assert_eq!(generate_qkv(&shape, &cfg, 5), (q.clone(), k.clone(), v.clone()));
        let (q2, _, _) = generate_qkv(&shape, &cfg, 6);
        assert_ne!(q, q2);
    }
}

#[test]
fn sequences_are_independent_of_their_neighbours() {
    let cfg = SynthConfig::structured();
    let alone = AttnShape { heads: 2, kv_heads: 1, head_dim: 8, seqs: vec![SeqLen::prefill(50)] };
    let packed = AttnShape { heads: 2, kv_heads: 1, head_dim: 8, seqs: vec![SeqLen::prefill(50), SeqLen::prefill(20)] };
    let (qa, ka, _) = generate_qkv(&alone, &cfg, 9);
    let (qp, kp, _) = generate_qkv(&packed, &cfg, 9);
    // Head 1 of sequence 0 sits at rows 70.. in the packed layout.
    assert_eq!(&qa[50 * 8..100 * 8], &qp[70 * 8..120 * 8]);
    assert_eq!(&ka[..50 * 8], &kp[..50 * 8]);
}

#[test]
fn structured_mode_has_sinks_and_locality() {
    let n = 2048;
    let d = 64;
    let shape = AttnShape::single(1, 1, d, n);
    let cfg = SynthConfig { n_far_slashes: 0, n_retrieval_columns: 0, ..SynthConfig::structured() };
    let (q, k, _) = generate_qkv(&shape, &cfg, 3);
    let logit = |i: usize, j: usize| {
        q[i * d..][..d].iter().zip(&k[j * d..][..d]).map(|(a, b)| a * b).sum::<f32>() / (d as f32).sqrt()
    };
    let i = n - 1;
    let mean = |js: std::ops::Range<usize>| js.clone().map(|j| logit(i, j)).sum::<f32>() / js.len() as f32;
    let sink = mean(0..4);
    let near = mean(i - 8..i);
    let far = mean(512..1024);
    println!("mean logits: sinks {sink:.2}, nearest 8 {near:.2}, distance ~1000-1500 {far:.2}");
    assert!(sink > far + 5.0);
    assert!(near > far + 2.0);
    assert_eq!(cfg.mode, SynthMode::Structured);
}

#[test]
fn large_problem_generates_quickly_enough_to_print() {
    let shape = AttnShape::single(4, 4, 128, 1 << 16);
    let start = Instant::now();
    let (q, _, _) = generate_qkv(&shape, &SynthConfig::structured(), 1);
    println!("structured 64K × 4 heads × 128: {:.2} s", start.elapsed().as_secs_f64());
    assert_eq!(q.len(), shape.q_elems());
}
