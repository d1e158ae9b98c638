//! The one attention mainloop: a 64-row query block against a stream of key tiles, with a single
//! online softmax (base 2, f32) per row over everything the stream yields. Scores are kept
//! transposed (`st[key * 64 + row]`, see `kernels.rs`).

use crate::kernels::{accumulate_pv, scores_t, softmax_update, Isa, SoftmaxState};
use crate::tiles::{KeyTile, RowSpan};
use minference_core::{HostTensor, TILE};

/// Per-thread scratch, allocated once per worker and reused for every query block.
pub(crate) struct Workspace {
    isa: Isa,
    head_dim: usize,
    /// Query block transposed and pre-multiplied by `scale · log2(e)`, `[D, 64]`; rows past the
    /// block's end are zero.
    qt: Vec<f32>,
    /// Logits, then probabilities, of one tile, `[64 keys, 64 rows]`.
    st: Vec<f32>,
    /// Gathered K / V rows of a column group (and Q staging), `[64, D]`.
    k_gather: Vec<f32>,
    v_gather: Vec<f32>,
    /// Unnormalised output `[64, D]`.
    acc: Vec<f32>,
    softmax: SoftmaxState,
}

impl Workspace {
    pub fn new(head_dim: usize, isa: Isa) -> Self {
        Workspace {
            isa,
            head_dim,
            qt: vec![0.0; TILE * head_dim],
            st: vec![0.0; TILE * TILE],
            k_gather: vec![0.0; TILE * head_dim],
            v_gather: vec![0.0; TILE * head_dim],
            acc: vec![0.0; TILE * head_dim],
            softmax: SoftmaxState::new(),
        }
    }

    /// Stages `rows` query rows starting at element `start` of `q`, scaled by `scale`.
    pub fn stage_q(&mut self, q: &HostTensor, start: usize, rows: usize, scale: f32) {
        let d = self.head_dim;
        let staged = &mut self.k_gather[..rows * d];
        q.read_into(start, staged);
        self.qt.fill(0.0);
        for (r, row) in staged.chunks_exact(d).enumerate() {
            for (x, &val) in row.iter().enumerate() {
                self.qt[x * TILE + r] = val * scale;
            }
        }
    }
}

/// K and V rows of one KV head of one sequence, as f32, `[kv_len, D]` each.
#[derive(Clone, Copy)]
pub(crate) struct KvRows<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
}

/// Attends the query rows staged by [`Workspace::stage_q`] over `tiles`, writing the normalised
/// output `[rows, D]` to `out`. Rows that no tile reaches get 0 (documented empty-mask behaviour).
pub(crate) fn attend_block<'t>(
    ws: &mut Workspace,
    kv: KvRows,
    span: RowSpan,
    tiles: impl Iterator<Item = KeyTile<'t>>,
    out: &mut [f32],
) {
    let (d, isa) = (ws.head_dim, ws.isa);
    let rows = span.rows();
    ws.acc.fill(0.0);
    ws.softmax.reset();

    for tile in tiles {
        let (v_rows, n) = match tile {
            KeyTile::Range { start, end, ashape } => {
                let n = end - start;
                scores_t(isa, &kv.k[start * d..end * d], n, d, &ws.qt, &mut ws.st);
                // Only keys past the first row's position, or an A-shape window edge, need masking.
                let causal_ok = end - 1 <= span.first;
                let ashape_ok = ashape.is_none_or(|a| span.last - start < a.n_local || end <= a.n_init);
                if !(causal_ok && ashape_ok) {
                    for (j, scores) in ws.st[..n * TILE].chunks_exact_mut(TILE).enumerate() {
                        let key = start + j;
                        for (r, s) in scores.iter_mut().enumerate() {
                            let pos = span.first + r;
                            if !(key <= pos && ashape.is_none_or(|a| a.keeps(pos, key))) {
                                *s = f32::NEG_INFINITY;
                            }
                        }
                    }
                }
                (&kv.v[start * d..end * d], n)
            }
            KeyTile::Columns(keys) => {
                // Gather K/V rows into dense tiles (callers validated 0 <= col < kv_len).
                let n = keys.len();
                for (j, &c) in keys.iter().enumerate() {
                    let c = c as usize;
                    ws.k_gather[j * d..(j + 1) * d].copy_from_slice(&kv.k[c * d..(c + 1) * d]);
                    ws.v_gather[j * d..(j + 1) * d].copy_from_slice(&kv.v[c * d..(c + 1) * d]);
                }
                scores_t(isa, &ws.k_gather, n, d, &ws.qt, &mut ws.st);
                // Valid indices put every column before the block; mask defensively otherwise.
                for (scores, &c) in ws.st[..n * TILE].chunks_exact_mut(TILE).zip(keys) {
                    let hidden = (c as usize).saturating_sub(span.first).min(TILE);
                    scores[..hidden].fill(f32::NEG_INFINITY);
                }
                (&ws.v_gather[..], n)
            }
        };
        softmax_update(isa, &mut ws.st, n, &mut ws.softmax);
        accumulate_pv(isa, &ws.st, n, v_rows, d, &ws.softmax.alpha, &mut ws.acc, rows);
    }

    for r in 0..rows {
        let l = ws.softmax.row_sum[r];
        let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
        for (o, a) in out[r * d..(r + 1) * d].iter_mut().zip(&ws.acc[r * d..(r + 1) * d]) {
            *o = a * inv;
        }
    }
}
