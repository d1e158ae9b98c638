//! VS online estimation: spec §8 items 1–5, generalised to q_len <= kv_len.

use minference_core::{
    clamp_vs_budget, estimate_vs_head, gather_last_q, select_vs, vs_scores, CoreError, HostTensor, SeqLen, VsScores,
};
use proptest::prelude::*;

/// Brute force in f64: probabilities of the last L rows, straight from the definition.
fn brute_probs(q: &[f32], k: &[f32], d: usize, seq: SeqLen) -> Vec<Vec<f64>> {
    let l = seq.q_len.min(64);
    let n = seq.kv_len;
    (0..l)
        .map(|a| {
            let i = seq.q_len - l + a;
            let pos = i + seq.offset();
            let qr = &q[i * d..(i + 1) * d];
            let logits: Vec<f64> = (0..n)
                .map(|j| {
                    if j > pos {
                        f64::NEG_INFINITY
                    } else {
                        qr.iter().zip(&k[j * d..(j + 1) * d]).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>()
                            / (d as f64).sqrt()
                    }
                })
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = logits.iter().map(|&x| (x - max).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|x| x / s).collect()
        })
        .collect()
}

fn problem() -> impl Strategy<Value = (SeqLen, usize, Vec<f32>, Vec<f32>)> {
    (1usize..200, 0usize..150, 1usize..12).prop_flat_map(|(q_len, off, d)| {
        let seq = SeqLen { q_len, kv_len: q_len + off };
        (
            Just(seq),
            Just(d),
            prop::collection::vec(-2.0f32..2.0, q_len * d),
            prop::collection::vec(-2.0f32..2.0, seq.kv_len * d),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Items 3 and 4: vertical and slash sums equal the brute-force sums of the fp32-softmax
    /// probabilities; every estimation row contributes mass 1; super-diagonals contribute nothing.
    #[test]
    fn scores_match_brute_force((seq, d, q, k) in problem()) {
        let q_last = gather_last_q(HostTensor::F32(&q), 0, d, seq.q_len).unwrap();
        let s = vs_scores(&q_last, HostTensor::F32(&k), 0, d, seq).unwrap();
        let p = brute_probs(&q, &k, d, seq);
        let l = p.len();
        let n = seq.kv_len;
        prop_assert_eq!(s.vertical.len(), n);
        prop_assert_eq!(s.slash.len(), n);
        for j in 0..n {
            let v: f64 = p.iter().map(|r| r[j]).sum();
            prop_assert!((s.vertical[j] as f64 - v).abs() < 1e-4, "vertical {} {} {}", j, s.vertical[j], v);
        }
        for dist in 0..n {
            // t <-> d mapping of the reference: diagonal t = N-1-d holds entries with pos - j = d.
            let v: f64 = (0..l).filter_map(|a| {
                let pos = n - l + a;
                pos.checked_sub(dist).map(|j| p[a][j])
            }).sum();
            prop_assert!((s.slash[dist] as f64 - v).abs() < 1e-4, "slash {} {} {}", dist, s.slash[dist], v);
        }
        let total: f64 = s.vertical.iter().map(|&x| x as f64).sum();
        prop_assert!((total - l as f64).abs() < 1e-3 * l as f64);
        let total_s: f64 = s.slash.iter().map(|&x| x as f64).sum();
        prop_assert!((total_s - l as f64).abs() < 1e-3 * l as f64);
    }

    /// Items 1, 2 and 5: budget sizes, uniqueness, range, order, forced sets, determinism, and the
    /// top-k equals a full sort with the documented tie-break.
    #[test]
    fn selection_sizes_forced_sets_and_tie_break(
        n in 1usize..400,
        k_v in 0usize..500,
        k_s in 0usize..500,
        levels in 1u32..6,
        seed in any::<u64>(),
    ) {
        // Few distinct score levels, so ties are common.
        let mut x = seed | 1;
        let mut draw = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; (x % levels as u64) as f32 };
        let scores = VsScores { vertical: (0..n).map(|_| draw()).collect(), slash: (0..n).map(|_| draw()).collect() };
        let sel = select_vs(&scores, k_v, k_s);
        let (ev, es) = clamp_vs_budget(k_v, k_s, n);
        prop_assert_eq!(ev, n.min(k_v.max(30)));
        prop_assert_eq!(es, n.min(k_s.max(50)));
        prop_assert_eq!(sel.verticals.len(), ev);
        prop_assert_eq!(sel.slashes.len(), es);
        prop_assert!(sel.verticals.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(sel.slashes.windows(2).all(|w| w[0] > w[1]));
        prop_assert!(sel.verticals.iter().all(|&v| (v as usize) < n));
        prop_assert!(sel.slashes.iter().all(|&v| (v as usize) < n));
        for j in 0..30.min(n).min(ev) {
            prop_assert!(sel.verticals.contains(&(j as u32)));
        }
        for dist in 0..100.min(n).min(es) {
            prop_assert!(sel.slashes.contains(&(dist as u32)));
        }
        prop_assert_eq!(&select_vs(&scores, k_v, k_s), &sel);
        // Reference: full sort by (forced, score desc, index asc).
        let reference = |s: &[f32], k: usize, forced: usize| {
            let mut idx: Vec<usize> = (0..s.len()).collect();
            idx.sort_by(|&a, &b| {
                (b < forced).cmp(&(a < forced))
                    .then_with(|| if a < forced && b < forced { std::cmp::Ordering::Equal } else { s[b].total_cmp(&s[a]) })
                    .then(a.cmp(&b))
            });
            let mut top: Vec<u32> = idx[..k].iter().map(|&i| i as u32).collect();
            top.sort();
            top
        };
        prop_assert_eq!(&sel.verticals, &reference(&scores.vertical, ev, 30));
        let mut s_ref = reference(&scores.slash, es, 100);
        s_ref.reverse();
        prop_assert_eq!(&sel.slashes, &s_ref);
    }
}

#[test]
fn budgets_between_50_and_100_keep_the_nearest_diagonals() {
    let scores = VsScores { vertical: vec![0.0; 500], slash: (0..500).map(|d| d as f32).collect() };
    let sel = select_vs(&scores, 30, 60);
    let expected: Vec<u32> = (0..60).rev().collect();
    assert_eq!(sel.slashes, expected);
}

#[test]
fn tiny_sequences() {
    for n in [1usize, 2, 63, 64, 65] {
        let d = 4;
        let q: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let k: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.11).cos()).collect();
        let seq = SeqLen::prefill(n);
        let q_last = gather_last_q(HostTensor::F32(&q), 0, d, n).unwrap();
        let sel = estimate_vs_head(&q_last, HostTensor::F32(&k), 0, d, seq, 1000, 6096).unwrap();
        let all: Vec<u32> = (0..n as u32).collect();
        assert_eq!(sel.verticals, all);
        assert_eq!(sel.slashes, all.iter().rev().cloned().collect::<Vec<_>>());
    }
}

#[test]
fn non_finite_and_bad_shapes_are_errors() {
    let d = 4;
    let seq = SeqLen::prefill(10);
    let q = vec![0.5f32; 10 * d];
    let mut k = vec![0.5f32; 10 * d];
    assert!(vs_scores(&q, HostTensor::F32(&k), 0, d, seq).is_ok());
    k[7] = f32::NAN;
    assert!(matches!(vs_scores(&q, HostTensor::F32(&k), 0, d, seq), Err(CoreError::NonFinite(_))));
    let mut q2 = q.clone();
    q2[0] = f32::INFINITY;
    let k = vec![0.5f32; 10 * d];
    assert!(matches!(vs_scores(&q2, HostTensor::F32(&k), 0, d, seq), Err(CoreError::NonFinite(_))));
    let big = vec![1e30f32; 10 * d];
    assert!(matches!(vs_scores(&big, HostTensor::F32(&big), 0, d, seq), Err(CoreError::NonFinite(_))));
    assert!(matches!(vs_scores(&q[..8], HostTensor::F32(&k), 0, d, seq), Err(CoreError::Shape(_))));
    assert!(matches!(vs_scores(&q, HostTensor::F32(&k), 1, d, seq), Err(CoreError::Shape(_))));
    let bad = SeqLen { q_len: 11, kv_len: 10 };
    assert!(vs_scores(&q, HostTensor::F32(&k), 0, d, bad).is_err());
}

#[test]
fn half_precision_keys_and_row_offsets() {
    use half::bf16;
    let (d, n) = (8, 150);
    let q: Vec<f32> = (0..n * d).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1).collect();
    let k: Vec<f32> = (0..(n + 5) * d).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1).collect();
    let kb: Vec<bf16> = k.iter().map(|&x| bf16::from_f32(x)).collect();
    let kr: Vec<f32> = kb.iter().map(|x| x.to_f32()).collect();
    let seq = SeqLen::prefill(n);
    let q_last = gather_last_q(HostTensor::F32(&q), 0, d, n).unwrap();
    // Keys start at row 5 of the tensor.
    let a = vs_scores(&q_last, HostTensor::Bf16(&kb), 5, d, seq).unwrap();
    let b = vs_scores(&q_last, HostTensor::F32(&kr[5 * d..]), 0, d, seq).unwrap();
    assert_eq!(a, b);
}
