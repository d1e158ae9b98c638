//! Coverage accounting against brute force over `kernel_mask_keep`.

use minference_core::{
    attention_recall, causal_entries, convert_vs_head, estimate_bs_head, head_coverage, index_head_coverage,
    kernel_mask_keep, AttnShape, HeadPattern, HostTensor, RowBlockIndex, SeqLen, SparseIndex, VsSelection,
};
use proptest::prelude::*;

fn brute_entries(pattern: &HeadPattern, rows: &[RowBlockIndex], seq: SeqLen) -> u64 {
    let mut count = 0;
    for i in 0..seq.q_len {
        let pos = i + seq.offset();
        let (tiles, cols) = rows.get(i / 64).map_or((&[][..], &[][..]), |r| (&r.tiles[..], &r.columns[..]));
        count += (0..seq.kv_len).filter(|&j| kernel_mask_keep(pattern, tiles, cols, pos, j, seq.kv_len)).count() as u64;
    }
    count
}

fn seq_strategy() -> impl Strategy<Value = SeqLen> {
    (1usize..400, 0usize..200).prop_map(|(q_len, off)| SeqLen { q_len, kv_len: q_len + off })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn dense_and_ashape_counts(seq in seq_strategy(), n_init in 0usize..100, n_local in 0usize..300) {
        let dense = head_coverage(&HeadPattern::Dense, &[], seq).unwrap();
        prop_assert_eq!(dense.entries, causal_entries(&seq));
        prop_assert_eq!(dense.density(), 1.0);
        let a = HeadPattern::AShape { n_init, n_local };
        let cov = head_coverage(&a, &[], seq).unwrap();
        prop_assert_eq!(cov.entries, brute_entries(&a, &[], seq));
        prop_assert!(cov.tiles64 <= dense.tiles64 + seq.row_blocks() as u64);
    }

    #[test]
    fn vs_counts_match_brute_force(seq in seq_strategy(), stride_v in 1usize..40, stride_s in 1usize..60) {
        let n = seq.kv_len as u32;
        let verticals: Vec<u32> = (0..n).step_by(stride_v).collect();
        let slashes: Vec<u32> = (0..n).step_by(stride_s).collect::<Vec<_>>().into_iter().rev().collect();
        let sel = VsSelection { verticals, slashes };
        let rows = convert_vs_head(&sel, seq).unwrap();
        let pattern = HeadPattern::VerticalSlash { k_v: 1, k_s: 1 };
        let cov = head_coverage(&pattern, &rows, seq).unwrap();
        prop_assert_eq!(cov.entries, brute_entries(&pattern, &rows, seq));
        prop_assert_eq!(cov.tiles64, rows.iter().map(|r| r.tiles.len() as u64).sum::<u64>());
        prop_assert_eq!(cov.column_strips, rows.iter().map(|r| r.columns.len() as u64).sum::<u64>());
        prop_assert_eq!(cov.gather_groups, rows.iter().map(|r| r.columns.len().div_ceil(64) as u64).sum::<u64>());
        prop_assert_eq!(cov.kernel_flops(128), 4.0 * 128.0 * 4096.0 * (cov.tiles64 + cov.gather_groups) as f64);

        // The same through a CSR index (second head of a two-sequence shape).
        let other = SeqLen::prefill(70);
        let shape = AttnShape { heads: 2, kv_heads: 1, head_dim: 4, seqs: vec![other, seq] };
        let mut index = SparseIndex::empty(&shape);
        index.set_head(&shape, 1, 1, &rows).unwrap();
        prop_assert_eq!(index_head_coverage(&pattern, &index, &shape, 1, 1).unwrap(), cov);
    }

    #[test]
    fn bs_counts_match_brute_force(seq in seq_strategy(), k_b in 1usize..6) {
        let d = 2;
        let q: Vec<f32> = (0..seq.q_len * d).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3).collect();
        let k: Vec<f32> = (0..seq.kv_len * d).map(|i| ((i * 17 % 13) as f32 - 6.0) * 0.2).collect();
        let rows = estimate_bs_head(HostTensor::F32(&q), 0, HostTensor::F32(&k), 0, d, seq, k_b).unwrap();
        let pattern = HeadPattern::BlockSparse { k_b };
        let cov = head_coverage(&pattern, &rows, seq).unwrap();
        prop_assert_eq!(cov.entries, brute_entries(&pattern, &rows, seq));
        // Enough blocks: block-sparse is dense.
        let all = estimate_bs_head(HostTensor::F32(&q), 0, HostTensor::F32(&k), 0, d, seq, 1 << 20).unwrap();
        prop_assert_eq!(head_coverage(&pattern, &all, seq).unwrap().entries, causal_entries(&seq));
    }
}

#[test]
fn wrong_row_count_is_an_error() {
    let p = HeadPattern::VerticalSlash { k_v: 1, k_s: 1 };
    assert!(head_coverage(&p, &[], SeqLen::prefill(100)).is_err());
}

#[test]
fn recall_sums_kept_mass() {
    // Two rows of 4 keys.
    let probs = [0.5, 0.5, 0.0, 0.0, 0.25, 0.25, 0.25, 0.25];
    let r = attention_recall(&probs, &[1, 3], |pos, key| key <= pos && key % 2 == 0).unwrap();
    assert!((r - (0.5 + 0.5) / 2.0).abs() < 1e-12);
    assert!(attention_recall(&probs, &[1, 2, 3], |_, _| true).is_err());
    assert!(attention_recall(&probs, &[], |_, _| true).is_err());
}
