//! Vertical-Slash online estimation (spec §1.3.2), generalised to `q_len <= kv_len`.
//!
//! The last `L = min(64, q_len)` query rows of a sequence sit at absolute positions
//! `kv_len - L + a` (`a = 0..L`) and see keys `j <= kv_len - L + a`. For each row the fp32 logits
//! `q·k / sqrt(D)` are soft-maxed in fp32 over the visible keys; the probabilities are summed per
//! key column (`vertical[j]`) and per diagonal distance `d = pos - j` (`slash[d]`). The selection then
//! forces the first 30 columns and the 100 nearest diagonals and takes a deterministic top-k
//! (see [`crate::topk`]).
//!
//! Non-finite inputs (NaN/inf in Q or K, or logits that overflow to inf) are rejected with
//! [`CoreError::NonFinite`] instead of producing an arbitrary selection.

use crate::error::{CoreError, Result};
use crate::index::VsSelection;
use crate::pattern::{VS_FORCED_SLASHES, VS_FORCED_VERTICALS, VS_LAST_Q, VS_MIN_SLASHES, VS_MIN_VERTICALS};
use crate::shape::SeqLen;
use crate::tensor::HostTensor;
use crate::topk::top_k_indices;

/// Keys per staged block: the block's keys (converted to f32) stay in L1 while all rows use them.
const KEY_BLOCK: usize = 64;

/// Raw estimate scores of one head, before forcing: `vertical[j]` for keys `0..kv_len`,
/// `slash[d]` for distances `0..kv_len`. Each estimation row contributes probability mass 1.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VsScores {
    pub vertical: Vec<f32>,
    pub slash: Vec<f32>,
}

/// Step 1 of §1.3.2: `(min(N, max(k_v, 30)), min(N, max(k_s, 50)))` with `N = kv_len`.
pub fn clamp_vs_budget(k_v: usize, k_s: usize, kv_len: usize) -> (usize, usize) {
    (kv_len.min(k_v.max(VS_MIN_VERTICALS)), kv_len.min(k_s.max(VS_MIN_SLASHES)))
}

/// Number of estimation rows for a sequence.
pub fn vs_last_q_rows(seq: SeqLen) -> usize {
    seq.q_len.min(VS_LAST_Q)
}

/// Copies the last `min(64, q_len)` query rows of one head (rows `q_row0 .. q_row0 + q_len` of `q`)
/// into a row-major f32 buffer, the `q_last` argument of [`vs_scores`].
pub fn gather_last_q(q: HostTensor, q_row0: usize, head_dim: usize, q_len: usize) -> Result<Vec<f32>> {
    let rows = q_len.min(VS_LAST_Q);
    let first = q_row0
        .checked_add(q_len - rows)
        .and_then(|r| r.checked_mul(head_dim))
        .ok_or_else(|| CoreError::Overflow("query row offset".into()))?;
    let end = first + rows * head_dim;
    if end > q.len() {
        return Err(CoreError::Shape(format!("query rows end at element {end} but Q has {}", q.len())));
    }
    let mut out = vec![0.0; rows * head_dim];
    q.read_into(first, &mut out);
    Ok(out)
}

/// Computes the vertical and slash scores of one head (spec §1.3.2 steps 2–7, before forcing).
///
/// `q_last`: the last `L = min(64, q_len)` query rows, `L × head_dim`, row-major.
/// `k`: a tensor whose rows `k_row0 .. k_row0 + kv_len` (each `head_dim` wide) are this head's keys.
pub fn vs_scores(q_last: &[f32], k: HostTensor, k_row0: usize, head_dim: usize, seq: SeqLen) -> Result<VsScores> {
    let rows = check_inputs(q_last, k, k_row0, head_dim, seq)?;
    let n = seq.kv_len;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let first_pos = n - rows;
    let mut logits = row_logits(q_last, k, k_row0, head_dim, n, rows, first_pos, scale)?;

    let mut vertical = vec![0.0f32; n];
    let mut slash = vec![0.0f32; n];
    for a in 0..rows {
        let pos = first_pos + a;
        let row = &mut logits[a * n..a * n + pos + 1];
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        if !max.is_finite() {
            return Err(CoreError::NonFinite(format!("VS estimate logits of row {pos}")));
        }
        let mut sum = 0.0f64;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            sum += *x as f64;
        }
        let inv = (1.0 / sum) as f32;
        for (v, &e) in vertical.iter_mut().zip(row.iter()) {
            *v += e * inv;
        }
        // Key j of this row lies on diagonal d = pos - j: walk the row backwards.
        for (s, &e) in slash.iter_mut().zip(row.iter().rev()) {
            *s += e * inv;
        }
    }
    Ok(VsScores { vertical, slash })
}

/// Validates shapes and finiteness; returns the number of estimation rows.
fn check_inputs(q_last: &[f32], k: HostTensor, k_row0: usize, head_dim: usize, seq: SeqLen) -> Result<usize> {
    if head_dim == 0 {
        return Err(CoreError::Shape("head_dim must be > 0".into()));
    }
    if seq.q_len == 0 || seq.q_len > seq.kv_len {
        return Err(CoreError::Shape(format!("need 0 < q_len <= kv_len, got {} / {}", seq.q_len, seq.kv_len)));
    }
    let rows = vs_last_q_rows(seq);
    if q_last.len() != rows * head_dim {
        return Err(CoreError::Shape(format!(
            "q_last has {} elements, expected {rows} rows × {head_dim}",
            q_last.len()
        )));
    }
    let k_end = k_row0
        .checked_add(seq.kv_len)
        .and_then(|r| r.checked_mul(head_dim))
        .ok_or_else(|| CoreError::Overflow("key row range".into()))?;
    if k_end > k.len() {
        return Err(CoreError::Shape(format!("key rows end at element {k_end} but K has {}", k.len())));
    }
    if q_last.iter().any(|x| !x.is_finite()) {
        return Err(CoreError::NonFinite("VS estimate queries".into()));
    }
    Ok(rows)
}

/// Scaled logits, `rows × n` row-major; entries right of each row's position are left at 0 and
/// never read.
#[allow(clippy::too_many_arguments)]
fn row_logits(
    q_last: &[f32],
    k: HostTensor,
    k_row0: usize,
    head_dim: usize,
    n: usize,
    rows: usize,
    first_pos: usize,
    scale: f32,
) -> Result<Vec<f32>> {
    let mut logits = vec![0.0f32; rows * n];
    let mut kbuf = vec![0.0f32; KEY_BLOCK * head_dim];
    let mut j0 = 0;
    while j0 < n {
        let width = KEY_BLOCK.min(n - j0);
        let kb = &mut kbuf[..width * head_dim];
        k.read_into((k_row0 + j0) * head_dim, kb);
        if kb.iter().any(|x| !x.is_finite()) {
            return Err(CoreError::NonFinite(format!("VS estimate keys {j0}..{}", j0 + width)));
        }
        // Rows before first_pos + a < j0 see nothing of this block.
        let mut a = j0.saturating_sub(first_pos);
        // Four rows at a time share each key load; keys up to the first row's position are
        // visible to all four.
        while a + 4 <= rows {
            let visible = (first_pos + a + 1 - j0).min(width);
            let q4 = &q_last[a * head_dim..(a + 4) * head_dim];
            for t in 0..visible {
                let s = dot4(q4, &kb[t * head_dim..(t + 1) * head_dim]);
                for (r, v) in s.iter().enumerate() {
                    logits[(a + r) * n + j0 + t] = v * scale;
                }
            }
            for r in 1..4 {
                let qrow = &q_last[(a + r) * head_dim..(a + r + 1) * head_dim];
                let row_visible = (first_pos + a + r + 1 - j0).min(width);
                for t in visible..row_visible {
                    logits[(a + r) * n + j0 + t] = dot(qrow, &kb[t * head_dim..(t + 1) * head_dim]) * scale;
                }
            }
            a += 4;
        }
        for a in a..rows {
            let qrow = &q_last[a * head_dim..(a + 1) * head_dim];
            let visible = (first_pos + a + 1 - j0).min(width);
            let out = &mut logits[a * n + j0..a * n + j0 + visible];
            for (t, o) in out.iter_mut().enumerate() {
                *o = dot(qrow, &kb[t * head_dim..(t + 1) * head_dim]) * scale;
            }
        }
        j0 += width;
    }
    Ok(logits)
}

/// f32 dot product with 8 independent accumulators so the compiler emits packed SIMD.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, ar) = a.split_at(a.len() / 8 * 8);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// Dot products of four consecutive rows of `q4` (`4 × D`) with one key: the key chunk is loaded
/// once for all four rows. Same summation order as [`dot`], so results are identical.
#[inline]
fn dot4(q4: &[f32], key: &[f32]) -> [f32; 4] {
    let d = key.len();
    let rows: [&[f32]; 4] = [&q4[..d], &q4[d..2 * d], &q4[2 * d..3 * d], &q4[3 * d..4 * d]];
    let mut acc = [[0.0f32; 8]; 4];
    let full = d / 8 * 8;
    let mut c = 0;
    while c < full {
        let kc = &key[c..c + 8];
        for (acc_r, row) in acc.iter_mut().zip(&rows) {
            let qc = &row[c..c + 8];
            for l in 0..8 {
                acc_r[l] += qc[l] * kc[l];
            }
        }
        c += 8;
    }
    let mut out = [0.0f32; 4];
    for (r, (o, a)) in out.iter_mut().zip(&acc).enumerate() {
        let mut s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
        for (x, y) in rows[r][full..].iter().zip(&key[full..]) {
            s += x * y;
        }
        *o = s;
    }
    out
}

/// Steps 1, 6, 7 of §1.3.2 on precomputed scores: clamp the budgets, force verticals `0..30` and
/// slashes `0..100`, take the top-k of each (tie-break: higher score, then smaller index; among the
/// forced entries smaller index first, so `50 <= k_s < 100` keeps `d = 0..k_s`).
/// Verticals are returned ascending, slashes descending.
pub fn select_vs(scores: &VsScores, k_v: usize, k_s: usize) -> VsSelection {
    let n = scores.vertical.len().min(scores.slash.len());
    let (k_v, k_s) = clamp_vs_budget(k_v, k_s, n);
    let verticals = top_k_indices(&scores.vertical[..n], k_v, |j| j < VS_FORCED_VERTICALS);
    let mut slashes = top_k_indices(&scores.slash[..n], k_s, |d| d < VS_FORCED_SLASHES);
    slashes.reverse();
    VsSelection { verticals, slashes }
}

/// [`vs_scores`] followed by [`select_vs`].
pub fn estimate_vs_head(
    q_last: &[f32],
    k: HostTensor,
    k_row0: usize,
    head_dim: usize,
    seq: SeqLen,
    k_v: usize,
    k_s: usize,
) -> Result<VsSelection> {
    let scores = vs_scores(q_last, k, k_row0, head_dim, seq)?;
    Ok(select_vs(&scores, k_v, k_s))
}
