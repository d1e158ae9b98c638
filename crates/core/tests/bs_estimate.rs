//! Block-Sparse estimation: spec §8 item 19 and the project's deviations (real-row pooling, block 0
//! and diagonal blocks forced, offsets).

use minference_core::{estimate_bs_head, CoreError, HostTensor, SeqLen};
use proptest::prelude::*;

fn means(x: &[f32], len: usize, d: usize) -> Vec<Vec<f64>> {
    (0..len.div_ceil(64))
        .map(|b| {
            let rows = 64.min(len - 64 * b);
            (0..d).map(|e| (0..rows).map(|r| x[(64 * b + r) * d + e] as f64).sum::<f64>() / rows as f64).collect()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn blocks_match_brute_force(
        q_len in 1usize..600,
        off in 0usize..300,
        d in 1usize..6,
        k_b in 1usize..12,
        seed in any::<u64>(),
    ) {
        let seq = SeqLen { q_len, kv_len: q_len + off };
        let mut x = seed | 1;
        let mut draw = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; ((x >> 40) % 9) as f32 - 4.0 };
        let q: Vec<f32> = (0..q_len * d).map(|_| draw()).collect();
        let k: Vec<f32> = (0..seq.kv_len * d).map(|_| draw()).collect();
        let rows = estimate_bs_head(HostTensor::F32(&q), 0, HostTensor::F32(&k), 0, d, seq, k_b).unwrap();
        prop_assert_eq!(rows.len(), seq.row_blocks());
        let (qm, km) = (means(&q, q_len, d), means(&k, seq.kv_len, d));
        for (m, r) in rows.iter().enumerate() {
            let first = off + 64 * m;
            let last = off + (64 * m + 64).min(q_len) - 1;
            let visible = last / 64 + 1;
            let blocks: Vec<usize> = r.tiles.iter().map(|&t| t as usize / 64).collect();
            prop_assert!(r.columns.is_empty());
            prop_assert!(r.tiles.iter().all(|&t| t % 64 == 0));
            prop_assert!(blocks.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(blocks.iter().all(|&b| b < visible));
            prop_assert!(blocks.contains(&0));
            for diag in first / 64..=last / 64 {
                prop_assert!(blocks.contains(&diag), "diagonal block {} missing in row block {}", diag, m);
            }
            let forced = |b: usize| b == 0 || b >= first / 64;
            let forced_count = (0..visible).filter(|&b| forced(b)).count();
            prop_assert_eq!(blocks.len(), k_b.max(forced_count).min(visible));
            if off == 0 && m < k_b {
                prop_assert_eq!(&blocks, &(0..=m).collect::<Vec<_>>());
            }
            // Every unpicked free block scores no higher than every picked free block (ties: the
            // smaller id wins).
            let score = |b: usize| (0..d).map(|e| qm[m][e] * km[b][e]).sum::<f64>();
            for b in (0..visible).filter(|&b| !forced(b) && !blocks.contains(&b)) {
                for &p in blocks.iter().filter(|&&p| !forced(p)) {
                    let (sp, sb) = (score(p), score(b));
                    prop_assert!(sp > sb + 1e-9 || ((sp - sb).abs() <= 1e-9 && p < b) || (sp - sb).abs() <= 1e-6,
                        "picked {} ({}) over {} ({})", p, sp, b, sb);
                }
            }
        }
    }
}

#[test]
fn budgets_and_shapes_are_checked() {
    let q = vec![0.0f32; 10];
    assert!(matches!(
        estimate_bs_head(HostTensor::F32(&q), 0, HostTensor::F32(&q), 0, 1, SeqLen::prefill(10), 0),
        Err(CoreError::Budget(_))
    ));
    assert!(estimate_bs_head(HostTensor::F32(&q), 1, HostTensor::F32(&q), 0, 1, SeqLen::prefill(10), 2).is_err());
    let mut bad = q.clone();
    bad[3] = f32::NAN;
    assert!(matches!(
        estimate_bs_head(HostTensor::F32(&bad), 0, HostTensor::F32(&q), 0, 1, SeqLen::prefill(10), 2),
        Err(CoreError::NonFinite(_))
    ));
}

/// Memory stays O(R·D): a long sequence with a tiny head dim runs without an R × R matrix.
#[test]
fn long_sequence_runs() {
    let n = 1 << 18;
    let d = 2;
    let q: Vec<f32> = (0..n * d).map(|i| ((i % 17) as f32) * 0.01).collect();
    let rows = estimate_bs_head(HostTensor::F32(&q), 0, HostTensor::F32(&q), 0, d, SeqLen::prefill(n), 100).unwrap();
    assert_eq!(rows.len(), n / 64);
    assert!(rows.iter().all(|r| r.tiles.len() <= 100));
}
