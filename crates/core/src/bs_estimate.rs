//! Block-Sparse online estimation (spec §1.4) with the deviations this project adopts:
//!
//! * Mean-pooling uses only rows that exist (the last partial block is averaged over its real
//!   rows; no zero padding, no extra padded block when `N mod 64 == 0`).
//! * Key block 0 and the "diagonal" key blocks are always kept. The diagonal blocks are the key
//!   blocks that intersect the row block's position span `[first_pos, last_pos]` (one block when
//!   `offset mod 64 == 0`, otherwise up to two), so every row sees its own position's block.
//! * Scores are `Q̄·K̄ᵀ` (no scale, no softmax: same ranking), only over block-causal key blocks
//!   `n <= last_pos / 64`; top-`k_b` with the tie-break of [`crate::topk`] (higher score, then
//!   smaller block id). If the forced blocks alone exceed `k_b`, all forced blocks are still kept.
//!
//! Memory is `O((R + R_kv)·D)` for the pooled means plus `O(R_kv)` scores for one row block at a
//! time: no `R × R` matrix, so 1M tokens work.

use crate::error::{CoreError, Result};
use crate::index::RowBlockIndex;
use crate::pattern::TILE;
use crate::shape::SeqLen;
use crate::tensor::HostTensor;
use crate::topk::top_k_indices;
use crate::vs_estimate::dot;

/// Estimates the key blocks of every 64-row query block of one head. Query rows are
/// `q_row0 .. q_row0 + q_len` of `q`, key rows `k_row0 .. k_row0 + kv_len` of `k`. Returns one entry
/// per row block with `tiles` = ascending `64 · block id`, `columns` empty.
pub fn estimate_bs_head(
    q: HostTensor,
    q_row0: usize,
    k: HostTensor,
    k_row0: usize,
    head_dim: usize,
    seq: SeqLen,
    k_b: usize,
) -> Result<Vec<RowBlockIndex>> {
    if k_b == 0 {
        return Err(CoreError::Budget("block-sparse k_b must be > 0".into()));
    }
    if head_dim == 0 {
        return Err(CoreError::Shape("head_dim must be > 0".into()));
    }
    if seq.q_len == 0 || seq.q_len > seq.kv_len {
        return Err(CoreError::Shape(format!("need 0 < q_len <= kv_len, got {} / {}", seq.q_len, seq.kv_len)));
    }
    if seq.kv_len > i32::MAX as usize {
        return Err(CoreError::Shape(format!("kv_len {} exceeds i32 key positions", seq.kv_len)));
    }
    let q_means = block_means(q, q_row0, seq.q_len, head_dim, "queries")?;
    let k_means = block_means(k, k_row0, seq.kv_len, head_dim, "keys")?;
    let off = seq.offset();
    let mut out = Vec::with_capacity(seq.row_blocks());
    let mut scores = Vec::new();
    for m in 0..seq.row_blocks() {
        let first_pos = off + TILE * m;
        let last_pos = off + (TILE * m + TILE).min(seq.q_len) - 1;
        let visible = last_pos / TILE + 1;
        let diag_first = first_pos / TILE;
        let qm = &q_means[m * head_dim..(m + 1) * head_dim];
        scores.clear();
        scores.extend((0..visible).map(|n| dot(qm, &k_means[n * head_dim..(n + 1) * head_dim])));
        if let Some(n) = scores.iter().position(|s| !s.is_finite()) {
            return Err(CoreError::NonFinite(format!("block score of row block {m}, key block {n}")));
        }
        let forced = |n: usize| n == 0 || n >= diag_first;
        let forced_count = 1 + (visible - diag_first.max(1));
        let picks = top_k_indices(&scores, k_b.max(forced_count), forced);
        let tiles = picks.into_iter().map(|n| (n as usize * TILE) as i32).collect();
        out.push(RowBlockIndex { tiles, columns: Vec::new() });
    }
    Ok(out)
}

/// Per-64-row-block means over the real rows, `ceil(len / 64) × head_dim`, accumulated in f64.
fn block_means(t: HostTensor, row0: usize, len: usize, head_dim: usize, what: &str) -> Result<Vec<f32>> {
    let end = row0
        .checked_add(len)
        .and_then(|r| r.checked_mul(head_dim))
        .ok_or_else(|| CoreError::Overflow(format!("{what} row range")))?;
    if end > t.len() {
        return Err(CoreError::Shape(format!("{what} end at element {end} but the tensor has {}", t.len())));
    }
    let blocks = len.div_ceil(TILE);
    let mut means = vec![0.0f32; blocks * head_dim];
    let mut acc = vec![0.0f64; head_dim];
    let mut row = vec![0.0f32; head_dim];
    for b in 0..blocks {
        acc.iter_mut().for_each(|a| *a = 0.0);
        let rows = TILE.min(len - b * TILE);
        for r in 0..rows {
            t.read_into((row0 + b * TILE + r) * head_dim, &mut row);
            for (a, &x) in acc.iter_mut().zip(&row) {
                *a += x as f64;
            }
        }
        for (dst, a) in means[b * head_dim..(b + 1) * head_dim].iter_mut().zip(&acc) {
            *dst = (a / rows as f64) as f32;
        }
    }
    if means.iter().any(|x| !x.is_finite()) {
        return Err(CoreError::NonFinite(format!("block means of {what}")));
    }
    Ok(means)
}
