//! The one attention mainloop: a 64-row query block against a stream of key tiles, with a single
//! online softmax (base 2, f32) per row over everything the stream yields.

use crate::exp2::{exp2_nonpositive, exp2_shift_sum};
use crate::gemm::{sgemm, Mat};
use crate::tiles::{KeyTile, RowSpan};
use minference_core::TILE;

/// Per-thread scratch, allocated once per worker and reused for every query block.
pub(crate) struct Workspace {
    head_dim: usize,
    /// Query block, pre-multiplied by `scale · log2(e)`, `[64, D]`.
    pub q: Vec<f32>,
    /// Logits, then probabilities, of one tile, `[64, 64]`.
    scores: Vec<f32>,
    /// Gathered K / V rows of a column group, `[64, D]`.
    k_gather: Vec<f32>,
    v_gather: Vec<f32>,
    /// Unnormalised output `[64, D]`, running max and denominator per row.
    acc: Vec<f32>,
    row_max: [f32; TILE],
    row_sum: [f32; TILE],
}

impl Workspace {
    pub fn new(head_dim: usize) -> Self {
        Workspace {
            head_dim,
            q: vec![0.0; TILE * head_dim],
            scores: vec![0.0; TILE * TILE],
            k_gather: vec![0.0; TILE * head_dim],
            v_gather: vec![0.0; TILE * head_dim],
            acc: vec![0.0; TILE * head_dim],
            row_max: [f32::NEG_INFINITY; TILE],
            row_sum: [0.0; TILE],
        }
    }
}

/// K and V rows of one KV head of one sequence, as f32, `[kv_len, D]` each.
#[derive(Clone, Copy)]
pub(crate) struct KvRows<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
}

/// Attends `span.rows()` query rows already staged in `ws.q` over `tiles`, writing the normalised
/// output `[rows, D]` to `out`. Rows that no tile reaches get 0 (documented empty-mask behaviour).
pub(crate) fn attend_block<'t>(
    ws: &mut Workspace,
    kv: KvRows,
    span: RowSpan,
    tiles: impl Iterator<Item = KeyTile<'t>>,
    out: &mut [f32],
) {
    let d = ws.head_dim;
    let rows = span.rows();
    ws.acc[..rows * d].fill(0.0);
    ws.row_max[..rows].fill(f32::NEG_INFINITY);
    ws.row_sum[..rows].fill(0.0);

    for tile in tiles {
        let keys = match tile {
            KeyTile::Range { start, end, ashape } => {
                let n = end - start;
                let k_tile = Mat { data: &kv.k[start * d..end * d], rs: 1, cs: d };
                sgemm(rows, d, n, 1.0, Mat { data: &ws.q, rs: d, cs: 1 }, k_tile, 0.0, &mut ws.scores, TILE);
                // Fully visible tile: every key is at or before the first row and passes A-shape.
                let causal_ok = end - 1 <= span.first;
                let ashape_ok = ashape.is_none_or(|a| span.last - start < a.n_local || end <= a.n_init);
                if !(causal_ok && ashape_ok) {
                    for r in 0..rows {
                        let pos = span.first + r;
                        let row = &mut ws.scores[r * TILE..r * TILE + n];
                        for (j, s) in row.iter_mut().enumerate() {
                            let key = start + j;
                            let keep = key <= pos && ashape.is_none_or(|a| a.keeps(pos, key));
                            if !keep {
                                *s = f32::NEG_INFINITY;
                            }
                        }
                    }
                }
                online_softmax_update(ws, rows, n);
                let v_tile = Mat { data: &kv.v[start * d..end * d], rs: d, cs: 1 };
                sgemm(rows, n, d, 1.0, Mat { data: &ws.scores, rs: TILE, cs: 1 }, v_tile, 1.0, &mut ws.acc, d);
                continue;
            }
            KeyTile::Columns(cols) => cols,
        };
        // Column group: gather K/V rows into dense tiles (callers validated 0 <= col < kv_len).
        let n = keys.len();
        for (j, &c) in keys.iter().enumerate() {
            let c = c as usize;
            ws.k_gather[j * d..(j + 1) * d].copy_from_slice(&kv.k[c * d..(c + 1) * d]);
            ws.v_gather[j * d..(j + 1) * d].copy_from_slice(&kv.v[c * d..(c + 1) * d]);
        }
        let k_tile = Mat { data: &ws.k_gather, rs: 1, cs: d };
        sgemm(rows, d, n, 1.0, Mat { data: &ws.q, rs: d, cs: 1 }, k_tile, 0.0, &mut ws.scores, TILE);
        if keys.iter().any(|&c| c as usize > span.first) {
            for r in 0..rows {
                let pos = span.first + r;
                for (s, &c) in ws.scores[r * TILE..r * TILE + n].iter_mut().zip(keys) {
                    if c as usize > pos {
                        *s = f32::NEG_INFINITY;
                    }
                }
            }
        }
        online_softmax_update(ws, rows, n);
        let v_tile = Mat { data: &ws.v_gather, rs: d, cs: 1 };
        sgemm(rows, n, d, 1.0, Mat { data: &ws.scores, rs: TILE, cs: 1 }, v_tile, 1.0, &mut ws.acc, d);
    }

    for r in 0..rows {
        let l = ws.row_sum[r];
        let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
        for (o, a) in out[r * d..(r + 1) * d].iter_mut().zip(&ws.acc[r * d..(r + 1) * d]) {
            *o = a * inv;
        }
    }
}

/// Turns the logits of `rows × n` in `ws.scores` into probabilities relative to the updated running
/// max, rescaling the accumulator and denominator of rows whose max grew.
fn online_softmax_update(ws: &mut Workspace, rows: usize, n: usize) {
    let d = ws.head_dim;
    for r in 0..rows {
        let row = &mut ws.scores[r * TILE..r * TILE + n];
        let tile_max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let old_max = ws.row_max[r];
        let new_max = old_max.max(tile_max);
        if new_max == f32::NEG_INFINITY {
            // Nothing visible yet for this row: contribute nothing, keep state.
            row.fill(0.0);
            continue;
        }
        let sum = exp2_shift_sum(row, new_max);
        if new_max > old_max {
            let alpha = exp2_nonpositive(old_max - new_max);
            ws.row_sum[r] = ws.row_sum[r] * alpha + sum;
            for a in &mut ws.acc[r * d..(r + 1) * d] {
                *a *= alpha;
            }
            ws.row_max[r] = new_max;
        } else {
            ws.row_sum[r] += sum;
        }
    }
}
