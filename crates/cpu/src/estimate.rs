//! VS estimation and index building for all heads, in parallel over (sequence, head); the per-head
//! semantics live in `minference_core`.

use crate::error::{CpuError, CpuResult};
use minference_core::{
    convert_vs_head, estimate_bs_head, gather_last_q, select_vs_pattern, vs_scores, AttnShape, HeadPattern, HostTensor,
    RowBlockIndex, SparseIndex, VsSelection,
};
use rayon::prelude::*;

/// Row offsets of head `h` of sequence `b` in Q and in K.
fn head_rows(shape: &AttnShape, b: usize, h: usize) -> (usize, usize) {
    let q_row0 = h * shape.total_q() + shape.q_start(b);
    let k_row0 = shape.kv_head_of(h) * shape.total_kv() + shape.kv_start(b);
    (q_row0, k_row0)
}

fn heads_of(shape: &AttnShape) -> Vec<(usize, usize)> {
    (0..shape.seqs.len()).flat_map(|b| (0..shape.heads).map(move |h| (b, h))).collect()
}

/// The selection of every Vertical-Slash head (fixed budgets, or adaptive ones picked from the
/// same scores by `minference_core::adaptive`); other heads get an empty selection.
pub(crate) fn estimate_vs_all(
    shape: &AttnShape,
    q: HostTensor,
    k: HostTensor,
    patterns: &[HeadPattern],
) -> CpuResult<Vec<VsSelection>> {
    heads_of(shape)
        .into_par_iter()
        .map(|(b, h)| {
            if !patterns[h].is_vertical_slash() {
                return Ok(VsSelection::default());
            }
            let seq = shape.seqs[b];
            let (q_row0, k_row0) = head_rows(shape, b, h);
            let q_last = gather_last_q(q, q_row0, shape.head_dim, seq.q_len)?;
            let scores = vs_scores(&q_last, k, k_row0, shape.head_dim, seq)?;
            Ok(select_vs_pattern(&patterns[h], &scores).unwrap_or_default())
        })
        .collect()
}

pub(crate) fn build_index_all(
    shape: &AttnShape,
    q: HostTensor,
    k: HostTensor,
    patterns: &[HeadPattern],
    vs: &[VsSelection],
) -> CpuResult<SparseIndex> {
    let expected = shape.seqs.len() * shape.heads;
    if vs.len() != expected {
        return Err(CpuError::InvalidIndex(format!(
            "{} VS selections for {expected} (sequence, head) pairs",
            vs.len()
        )));
    }
    let per_head: Vec<Vec<RowBlockIndex>> = heads_of(shape)
        .into_par_iter()
        .map(|(b, h)| -> CpuResult<Vec<RowBlockIndex>> {
            let seq = shape.seqs[b];
            let (q_row0, k_row0) = head_rows(shape, b, h);
            Ok(match patterns[h] {
                HeadPattern::VerticalSlash { .. } | HeadPattern::AdaptiveVs { .. } => {
                    convert_vs_head(&vs[b * shape.heads + h], seq)?
                }
                HeadPattern::BlockSparse { k_b } => estimate_bs_head(q, q_row0, k, k_row0, shape.head_dim, seq, k_b)?,
                HeadPattern::Dense | HeadPattern::AShape { .. } => vec![RowBlockIndex::default(); seq.row_blocks()],
            })
        })
        .collect::<CpuResult<_>>()?;
    // heads_of is in (b, h) order and each entry lists row blocks in order: exactly slot order.
    Ok(SparseIndex::from_slots(shape, per_head.into_iter().flatten().collect())?)
}
