//! Drives the mainloop over every (sequence, head, row block) work item with rayon.

use crate::kernels::Isa;
use crate::mainloop::{attend_block, KvRows, Workspace};
use crate::staging::as_f32;
use crate::tiles::{RowSpan, TileIter};
use minference_core::{AttnShape, HostTensor, TILE};
use rayon::prelude::*;

/// Identifies one work item: sequence `b`, query head `h`, row block `m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockId {
    pub b: usize,
    pub h: usize,
    pub m: usize,
}

/// What a caller supplies per work item: the tile stream and a cost estimate (tiles) used to start
/// expensive items first, so the last threads do not idle behind one long item.
pub(crate) trait TilePlan: Sync {
    fn tiles(&self, id: BlockId, span: RowSpan) -> TileIter<'_>;
    fn cost(&self, id: BlockId, span: RowSpan) -> usize;
}

/// Attention of all heads with inputs already validated; returns `O` `[heads, total_q, D]` in f32.
pub(crate) fn run(
    shape: &AttnShape,
    q: HostTensor,
    k: HostTensor,
    v: HostTensor,
    plan: &impl TilePlan,
    isa: Isa,
) -> Vec<f32> {
    let d = shape.head_dim;
    let total_q = shape.total_q();
    let total_kv = shape.total_kv();
    let k32 = as_f32(&k);
    let v32 = as_f32(&v);
    // Q pre-scaled for exp2: softmax(x/√D) = 2^(x·log2(e)/√D) normalised.
    let q_scale = std::f32::consts::LOG2_E / (d as f32).sqrt();

    let mut out = vec![0.0f32; shape.q_elems()];
    let mut items = Vec::new();
    for (h, head_out) in out.chunks_mut(total_q * d).enumerate() {
        let mut rest = head_out;
        for (b, seq) in shape.seqs.iter().enumerate() {
            let (seq_out, tail) = rest.split_at_mut(seq.q_len * d);
            rest = tail;
            for (m, block_out) in seq_out.chunks_mut(TILE * d).enumerate() {
                let first = seq.offset() + m * TILE;
                let span = RowSpan { first, last: first + block_out.len() / d - 1, kv_len: seq.kv_len };
                let id = BlockId { b, h, m };
                items.push((plan.cost(id, span), id, span, block_out));
            }
        }
    }
    items.sort_by_key(|item| std::cmp::Reverse(item.0));

    let kv_starts: Vec<usize> = (0..shape.seqs.len()).map(|b| shape.kv_start(b)).collect();
    let q_starts: Vec<usize> = (0..shape.seqs.len()).map(|b| shape.q_start(b)).collect();
    items.into_par_iter().for_each_init(
        || Workspace::new(d, isa),
        |ws, (_, id, span, block_out)| {
            let rows = span.rows();
            let q_row = id.h * total_q + q_starts[id.b] + id.m * TILE;
            ws.stage_q(&q, q_row * d, rows, q_scale);
            let kv_row = shape.kv_head_of(id.h) * total_kv + kv_starts[id.b];
            let kv_range = kv_row * d..(kv_row + span.kv_len) * d;
            let kv = KvRows { k: &k32[kv_range.clone()], v: &v32[kv_range] };
            attend_block(ws, kv, span, plan.tiles(id, span), block_out);
        },
    );
    out
}

/// Dense causal attention plan.
pub(crate) struct DensePlan;

impl TilePlan for DensePlan {
    fn tiles(&self, _id: BlockId, span: RowSpan) -> TileIter<'_> {
        TileIter::dense(span)
    }
    fn cost(&self, _id: BlockId, span: RowSpan) -> usize {
        span.last / TILE + 1
    }
}
