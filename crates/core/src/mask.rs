//! The single definition of which `(row, key)` pairs a sparse-attention kernel computes for one head.
//! The CPU oracle, the tests and the coverage accounting all call [`kernel_mask_keep`].

use crate::ashape::ashape_keep;
use crate::pattern::{HeadPattern, TILE};

/// Whether the kernel computes `(pos, key)` for a head with `pattern`.
///
/// * `Dense`: causal (`key <= pos`).
/// * `AShape`: [`ashape_keep`].
/// * `VerticalSlash` / `AdaptiveVs` / `BlockSparse`: `key` lies in a 64-wide tile `[t, t + 64)` of `tiles` or is one
///   of `columns` (the row block's entries of the sparse index), and `key <= pos`.
///
/// Always `key < kv_len`. `tiles` must be ascending and non-overlapping and `columns` ascending (the
/// index builders guarantee both); dense and A-shape ignore them.
pub fn kernel_mask_keep(
    pattern: &HeadPattern,
    tiles: &[i32],
    columns: &[i32],
    pos: usize,
    key: usize,
    kv_len: usize,
) -> bool {
    if key >= kv_len || key > pos {
        return false;
    }
    match *pattern {
        HeadPattern::Dense => true,
        HeadPattern::AShape { n_init, n_local } => ashape_keep(pos, key, n_init, n_local),
        HeadPattern::VerticalSlash { .. } | HeadPattern::AdaptiveVs { .. } | HeadPattern::BlockSparse { .. } => {
            in_tiles(tiles, key) || in_columns(columns, key)
        }
    }
}

/// Whether `key` is inside one of the ascending, non-overlapping 64-wide tiles.
pub fn in_tiles(tiles: &[i32], key: usize) -> bool {
    let key = key as i64;
    // Only the last tile starting at or before `key` can contain it.
    let n = tiles.partition_point(|&t| (t as i64) <= key);
    n > 0 && key < tiles[n - 1] as i64 + TILE as i64
}

/// Whether `key` is one of the ascending gathered columns.
pub fn in_columns(columns: &[i32], key: usize) -> bool {
    i32::try_from(key).is_ok_and(|k| columns.binary_search(&k).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_and_columns_membership() {
        let tiles = [-10, 54, 200];
        assert!(in_tiles(&tiles, 0));
        assert!(in_tiles(&tiles, 53));
        assert!(in_tiles(&tiles, 117));
        assert!(!in_tiles(&tiles, 118));
        assert!(in_tiles(&tiles, 263));
        assert!(!in_tiles(&tiles, 264));
        assert!(in_columns(&[3, 9], 9));
        assert!(!in_columns(&[3, 9], 4));
    }

    #[test]
    fn causal_and_kv_len_always_apply() {
        let vs = HeadPattern::VerticalSlash { k_v: 1, k_s: 1 };
        assert!(!kernel_mask_keep(&vs, &[0], &[], 5, 6, 100));
        assert!(kernel_mask_keep(&vs, &[0], &[], 6, 6, 100));
        assert!(!kernel_mask_keep(&HeadPattern::Dense, &[], &[], 10, 10, 10));
        assert!(kernel_mask_keep(&HeadPattern::Dense, &[], &[], 10, 9, 10));
    }
}
