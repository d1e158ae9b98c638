//! f64 reference attention for tests: plain softmax over an arbitrary key mask, one row at a time
//! (O(N·D) memory per row, no tiling, no online softmax — deliberately the simplest correct form).

use minference_core::{AttnShape, HostTensor};
use rayon::prelude::*;

/// Output of [`masked_attention_f64_flagged`].
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedOutput {
    /// `O` in the shared layout `[heads, total_q, D]`.
    pub out: Vec<f64>,
    /// `(b, h, row)` of every row whose mask kept no key; its output is 0.
    pub empty_rows: Vec<(usize, usize, usize)>,
}

/// Softmax attention restricted to `keep(b, h, row, key)` (row local to the sequence, key in
/// `0..kv_len`); causality is *not* implied, `keep` must include it. Rows with an empty mask get
/// output 0 (see [`masked_attention_f64_flagged`] to learn which). Inputs must match `shape`
/// (checked by the backends, assumed here).
pub fn masked_attention_f64(
    shape: &AttnShape,
    q: HostTensor,
    k: HostTensor,
    v: HostTensor,
    keep: impl Fn(usize, usize, usize, usize) -> bool + Sync,
) -> Vec<f64> {
    masked_attention_f64_flagged(shape, q, k, v, keep).out
}

/// [`masked_attention_f64`] that also reports the rows with an empty mask.
pub fn masked_attention_f64_flagged(
    shape: &AttnShape,
    q: HostTensor,
    k: HostTensor,
    v: HostTensor,
    keep: impl Fn(usize, usize, usize, usize) -> bool + Sync,
) -> MaskedOutput {
    let d = shape.head_dim;
    let total_q = shape.total_q();
    let total_kv = shape.total_kv();
    let scale = 1.0 / (d as f64).sqrt();
    let (q, k, v) = (to_f64(&q), to_f64(&k), to_f64(&v));
    let mut out = vec![0.0f64; shape.q_elems()];
    let empty: Vec<Vec<(usize, usize, usize)>> = out
        .par_chunks_mut(total_q * d)
        .enumerate()
        .map(|(h, head_out)| {
            let kvh = shape.kv_head_of(h);
            let mut empty = Vec::new();
            let mut logits = Vec::new();
            for (b, seq) in shape.seqs.iter().enumerate() {
                let q0 = shape.q_start(b);
                let kv0 = kvh * total_kv + shape.kv_start(b);
                for i in 0..seq.q_len {
                    let q_at = (h * total_q + q0 + i) * d;
                    logits.clear();
                    for j in (0..seq.kv_len).filter(|&j| keep(b, h, i, j)) {
                        let k_at = (kv0 + j) * d;
                        let dot: f64 = (0..d).map(|x| q[q_at + x] * k[k_at + x]).sum();
                        logits.push((j, dot * scale));
                    }
                    if logits.is_empty() {
                        empty.push((b, h, i));
                        continue;
                    }
                    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &(_, x)| m.max(x));
                    let denom: f64 = logits.iter().map(|&(_, x)| (x - max).exp()).sum();
                    let row = &mut head_out[(q0 + i) * d..(q0 + i + 1) * d];
                    for &(j, x) in &logits {
                        let p = (x - max).exp() / denom;
                        let v_at = (kv0 + j) * d;
                        for (x, o) in row.iter_mut().enumerate() {
                            *o += p * v[v_at + x];
                        }
                    }
                }
            }
            empty
        })
        .collect();
    MaskedOutput { out, empty_rows: empty.into_iter().flatten().collect() }
}

/// Dense causal attention in f64: key `j` visible to row `i` iff `j <= i + offset`.
pub fn dense_reference_f64(shape: &AttnShape, q: HostTensor, k: HostTensor, v: HostTensor) -> Vec<f64> {
    masked_attention_f64(shape, q, k, v, |b, _h, i, j| j <= i + shape.seqs[b].offset())
}

fn to_f64(t: &HostTensor) -> Vec<f64> {
    t.to_f32_vec().into_iter().map(f64::from).collect()
}
