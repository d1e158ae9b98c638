//! Deterministic top-k shared by the VS and BS estimators.
//!
//! Order: forced entries first (among themselves smaller index first), then higher score, then
//! smaller index. Scores are compared with
//! `f32::total_cmp`, so the result is fully determined even for equal scores (and NaN, which sorts
//! above `+inf`; the estimators reject non-finite inputs before getting here).

use std::cmp::Ordering;

/// Indices of the `k` best entries of `scores` (all of them if `k >= scores.len()`), where
/// `is_forced(i)` entries outrank every score. Returned in ascending index order.
pub fn top_k_indices(scores: &[f32], k: usize, is_forced: impl Fn(usize) -> bool) -> Vec<u32> {
    let n = scores.len();
    if k >= n {
        return (0..n as u32).collect();
    }
    if k == 0 {
        return Vec::new();
    }
    let better = |a: &u32, b: &u32| -> Ordering {
        let (a, b) = (*a as usize, *b as usize);
        match (is_forced(a), is_forced(b)) {
            (true, true) => a.cmp(&b),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => scores[b].total_cmp(&scores[a]).then_with(|| a.cmp(&b)),
        }
    };
    let mut idx: Vec<u32> = (0..n as u32).collect();
    idx.select_nth_unstable_by(k - 1, better);
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_prefer_smaller_index_and_forced_win() {
        let s = [1.0, 5.0, 5.0, 0.0, 5.0];
        assert_eq!(top_k_indices(&s, 2, |_| false), vec![1, 2]);
        assert_eq!(top_k_indices(&s, 2, |i| i == 3), vec![1, 3]);
        assert_eq!(top_k_indices(&s, 9, |_| false), vec![0, 1, 2, 3, 4]);
        assert!(top_k_indices(&s, 0, |_| false).is_empty());
    }
}
