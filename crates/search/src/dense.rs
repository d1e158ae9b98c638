//! Exact causal attention of one head, computed one 64-row block at a time so that memory stays at
//! `64 × N` probabilities (2 MB at 8K) instead of an `N × N` matrix.

use crate::error::{Result, SearchError};
use crate::residual::ResidualWeight;
use minference_core::{CoreError, TILE};
use minference_cpu::gemm::{sgemm, Mat as View};

/// Q, K (and optionally V) of one query head, each `[n, head_dim]` row-major f32. K and V are the
/// head's KV-group tensors (GQA heads share them).
#[derive(Debug, Clone, Copy)]
pub struct HeadInputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: Option<&'a [f32]>,
    pub n: usize,
    pub head_dim: usize,
    /// What the output-residual objective weighs this head's error with.
    pub residual: Option<&'a ResidualWeight>,
}

impl<'a> HeadInputs<'a> {
    /// Checks sizes and finiteness (NaN/Inf would make every score meaningless).
    pub fn new(q: &'a [f32], k: &'a [f32], v: Option<&'a [f32]>, head_dim: usize) -> Result<Self> {
        if head_dim == 0 {
            return Err(SearchError::Input("head_dim must be > 0".into()));
        }
        if q.is_empty() || !q.len().is_multiple_of(head_dim) {
            return Err(SearchError::Input(format!(
                "Q has {} values, not a non-empty multiple of head_dim {head_dim}",
                q.len()
            )));
        }
        let n = q.len() / head_dim;
        if k.len() != q.len() || v.is_some_and(|v| v.len() != q.len()) {
            return Err(SearchError::Input(format!(
                "Q, K and V must all be [{n}, {head_dim}] (K has {}, V has {} values)",
                k.len(),
                v.map_or(0, |v| v.len())
            )));
        }
        for (name, t) in [("Q", Some(q)), ("K", Some(k)), ("V", v)] {
            if t.is_some_and(|t| t.iter().any(|x| !x.is_finite())) {
                return Err(CoreError::NonFinite(format!("search input {name}")).into());
            }
        }
        Ok(HeadInputs { q, k, v, n, head_dim, residual: None })
    }

    /// The same inputs with the head's residual weighting (output-residual objective).
    pub fn with_residual(self, residual: &'a ResidualWeight) -> Result<Self> {
        if residual.head_dim() != self.head_dim || residual.rows() != self.n {
            return Err(SearchError::Input(format!(
                "residual weighting is for {} rows of head dimension {}, the head is [{}, {}]",
                residual.rows(),
                residual.head_dim(),
                self.n,
                self.head_dim
            )));
        }
        Ok(HeadInputs { residual: Some(residual), ..self })
    }

    pub fn row_blocks(&self) -> usize {
        self.n.div_ceil(TILE)
    }
}

/// Exact probabilities of one row block: rows `row0 .. row0 + rows`, keys `0 .. width` with
/// `width = row0 + rows`; entries right of each row's position are 0.
pub struct ProbBlock<'b> {
    pub block: usize,
    pub row0: usize,
    pub rows: usize,
    pub width: usize,
    pub probs: &'b [f32],
}

impl ProbBlock<'_> {
    pub fn row(&self, a: usize) -> &[f32] {
        &self.probs[a * self.width..(a + 1) * self.width]
    }
}

/// Calls `visit` for every row block from the one holding `first_row` on, in order.
pub fn for_each_prob_block(
    h: &HeadInputs,
    first_row: usize,
    mut visit: impl FnMut(&ProbBlock) -> Result<()>,
) -> Result<()> {
    let mut buf = Vec::new();
    for block in first_row.min(h.n) / TILE..h.row_blocks() {
        visit(&prob_block(h, block, &mut buf)?)?;
    }
    Ok(())
}

/// The exact probabilities of row block `block`, computed into `buf` (resized as needed, so one
/// buffer serves every block of a thread).
pub fn prob_block<'b>(h: &HeadInputs, block: usize, buf: &'b mut Vec<f32>) -> Result<ProbBlock<'b>> {
    let (n, d) = (h.n, h.head_dim);
    let row0 = block * TILE;
    if row0 >= n {
        return Err(SearchError::Input(format!("row block {block} is past the {n} rows")));
    }
    let scale = 1.0 / (d as f32).sqrt();
    let rows = TILE.min(n - row0);
    let width = row0 + rows;
    if buf.len() < rows * width {
        buf.resize(rows * width, 0.0);
    }
    let probs = &mut buf[..rows * width];
    let q = View { data: &h.q[row0 * d..], rs: d, cs: 1 };
    // Kᵀ as a view: element (c, j) of Kᵀ is K[j][c].
    let kt = View { data: h.k, rs: 1, cs: d };
    sgemm(rows, d, width, 1.0, q, kt, 0.0, probs, width);
    for a in 0..rows {
        let visible = row0 + a + 1;
        let row = &mut probs[a * width..(a + 1) * width];
        softmax_in_place(&mut row[..visible], scale)
            .map_err(|_| CoreError::NonFinite(format!("attention logits of row {}", row0 + a)))?;
        row[visible..].iter_mut().for_each(|x| *x = 0.0);
    }
    Ok(ProbBlock { block, row0, rows, width, probs })
}

/// `x ← softmax(scale · x)` in f32 with an f64 normaliser.
fn softmax_in_place(x: &mut [f32], scale: f32) -> std::result::Result<(), ()> {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * scale;
    if !max.is_finite() {
        return Err(());
    }
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v * scale - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
    Ok(())
}

/// `out[rows × D] = P · V` for one block (P is zero right of the diagonal, so this is exact).
pub fn block_output(p: &ProbBlock, v: &[f32], head_dim: usize, out: &mut [f32]) {
    let pv = View { data: p.probs, rs: p.width, cs: 1 };
    let vv = View { data: v, rs: head_dim, cs: 1 };
    sgemm(p.rows, p.width, head_dim, 1.0, pv, vv, 0.0, out, head_dim);
}

/// Dense causal attention output of one head, `[n, head_dim]`. Needs V.
pub fn dense_output(h: &HeadInputs) -> Result<Vec<f32>> {
    let v = h.v.ok_or_else(|| SearchError::Input("dense output needs V".into()))?;
    let d = h.head_dim;
    let mut out = vec![0f32; h.n * d];
    for_each_prob_block(h, 0, |p| {
        block_output(p, v, d, &mut out[p.row0 * d..(p.row0 + p.rows) * d]);
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use minference_core::rng::SplitMix64;

    fn random(len: usize, seed: u64, scale: f64) -> Vec<f32> {
        let mut r = SplitMix64::new(seed);
        (0..len).map(|_| (r.normal() * scale) as f32).collect()
    }

    /// Straightforward f64 causal attention for comparison.
    fn naive(q: &[f32], k: &[f32], v: &[f32], d: usize) -> Vec<f64> {
        let n = q.len() / d;
        let mut out = vec![0f64; n * d];
        for i in 0..n {
            let logits: Vec<f64> = (0..=i)
                .map(|j| (0..d).map(|c| q[i * d + c] as f64 * k[j * d + c] as f64).sum::<f64>() / (d as f64).sqrt())
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
            let s: f64 = w.iter().sum();
            for (j, wj) in w.iter().enumerate() {
                for c in 0..d {
                    out[i * d + c] += wj / s * v[j * d + c] as f64;
                }
            }
        }
        out
    }

    #[test]
    fn dense_output_matches_naive_reference() {
        for (n, d) in [(1, 8), (63, 16), (130, 32)] {
            let (q, k, v) = (random(n * d, 1, 1.5), random(n * d, 2, 1.5), random(n * d, 3, 1.0));
            let h = HeadInputs::new(&q, &k, Some(&v), d).unwrap();
            let got = dense_output(&h).unwrap();
            let want = naive(&q, &k, &v, d);
            let max_err = got.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            assert!(max_err < 1e-4, "n {n} d {d}: max error {max_err}");
        }
    }

    #[test]
    fn probability_rows_sum_to_one_and_are_causal() {
        let (n, d) = (150, 16);
        let (q, k) = (random(n * d, 4, 2.0), random(n * d, 5, 2.0));
        let h = HeadInputs::new(&q, &k, None, d).unwrap();
        let mut seen = 0;
        for_each_prob_block(&h, 70, |p| {
            for a in 0..p.rows {
                let row = p.row(a);
                let s: f64 = row.iter().map(|&x| x as f64).sum();
                assert!((s - 1.0).abs() < 1e-5);
                assert!(row[p.row0 + a + 1..].iter().all(|&x| x == 0.0));
                seen += 1;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, n - 64);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(HeadInputs::new(&[1.0; 8], &[1.0; 8], None, 0).is_err());
        assert!(HeadInputs::new(&[1.0; 8], &[1.0; 4], None, 4).is_err());
        assert!(HeadInputs::new(&[], &[], None, 4).is_err());
        assert!(HeadInputs::new(&[f32::NAN; 4], &[1.0; 4], None, 4).is_err());
        assert!(HeadInputs::new(&[1.0; 8], &[1.0; 8], Some(&[1.0; 4]), 4).is_err());
    }
}
