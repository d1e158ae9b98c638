//! The head error as the residual stream sees it (`Objective::OutputResidual`): a head's output
//! error `δ` reaches the model through its columns `W_h` of the output projection, so what is
//! added to the residual stream is `W_h δ`, and what matters to the next layers (pre-norm) is its
//! size against the stream it is added to. `‖W_h δ‖² = δᵀ G δ` with the head's Gram matrix
//! `G = W_hᵀ W_h` (`D × D`), so the error is measured without the `hidden × D` product per row.
//! Each row is taken against its own stream row, `‖W_h δ_r‖² / ‖x_r‖²`, because the next layer's
//! RMSNorm sees each row scaled by its own norm (a few rows with massive activations would
//! otherwise outweigh the rest).
//!
//! Unlike the relative output error, this weighs heads by how much they write (a head whose output
//! the projection nearly cancels costs little when wrong) and layers by how large the stream is
//! when they write (an early layer's error is large against a small stream).

use crate::error::{Result, SearchError};
use std::sync::Arc;

/// One head's Gram matrix and its layer's per-row input weights.
#[derive(Debug, Clone, PartialEq)]
pub struct ResidualWeight {
    /// `G = W_hᵀ W_h`, `[D, D]` row-major.
    gram: Vec<f64>,
    head_dim: usize,
    /// `1 / ‖x_r‖²` of the layer's input residual, one per row (0 for an all-zero row).
    rows: Arc<[f64]>,
}

impl ResidualWeight {
    /// Head `head`'s columns `head·D .. (head+1)·D` of the output projection `wo` (`[out, in]`
    /// row-major, `in = heads·D`), with the layer's row weights `rows` ([`row_weights`]).
    pub fn of_head(
        wo: &[f32],
        out_dim: usize,
        in_dim: usize,
        head: usize,
        head_dim: usize,
        rows: Arc<[f64]>,
    ) -> Result<Self> {
        if wo.len() != out_dim * in_dim || head_dim == 0 || (head + 1) * head_dim > in_dim {
            return Err(SearchError::Input(format!(
                "output projection [{out_dim}, {in_dim}] ({} values) has no head {head} of dimension {head_dim}",
                wo.len()
            )));
        }
        if rows.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(SearchError::Input("row weights must be finite and non-negative".into()));
        }
        let d = head_dim;
        let mut gram = vec![0f64; d * d];
        for row in wo.chunks_exact(in_dim) {
            let w = &row[head * d..(head + 1) * d];
            for i in 0..d {
                let wi = w[i] as f64;
                for j in i..d {
                    gram[i * d + j] += wi * w[j] as f64;
                }
            }
        }
        for i in 0..d {
            for j in 0..i {
                gram[i * d + j] = gram[j * d + i];
            }
        }
        Ok(ResidualWeight { gram, head_dim: d, rows })
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// How many rows the weights cover.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// `‖W_h δ‖² / ‖x_row‖²` for row `row`'s output error `δ` (`D` values); 0 past the weights.
    pub fn error_sq(&self, row: usize, delta: &[f32]) -> f64 {
        let Some(&w) = self.rows.get(row) else { return 0.0 };
        let d = self.head_dim;
        let mut total = 0f64;
        for (i, &di) in delta.iter().enumerate().take(d) {
            let g = &self.gram[i * d..(i + 1) * d];
            let gd: f64 = g.iter().zip(delta).map(|(&gij, &dj)| gij * dj as f64).sum();
            total += di as f64 * gd;
        }
        w * total.max(0.0)
    }
}

/// `1 / ‖x_r‖²` for every row of a `[tokens, hidden]` residual stream (0 for an all-zero row).
pub fn row_weights(residual: &[f32], hidden: usize) -> Arc<[f64]> {
    residual
        .chunks_exact(hidden.max(1))
        .map(|r| {
            let e: f64 = r.iter().map(|&x| (x as f64) * (x as f64)).sum();
            if e > 0.0 {
                1.0 / e
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gram_error_equals_the_projected_norm_over_the_row_energy() {
        // out = 3, two heads of D = 2: in = 4; row 1's stream has energy 4.
        let wo = [1.0, 2.0, 0.5, -1.0, 0.0, 1.0, 2.0, 0.0, -3.0, 1.0, 1.0, 1.0];
        let rows = row_weights(&[1.0, 0.0, 2.0, 0.0], 2);
        for head in 0..2 {
            let w = ResidualWeight::of_head(&wo, 3, 4, head, 2, Arc::clone(&rows)).unwrap_or_else(|e| panic!("{e}"));
            let delta = [0.3f32, -0.7];
            let projected: f64 = wo
                .chunks_exact(4)
                .map(|r| r[2 * head] as f64 * delta[0] as f64 + r[2 * head + 1] as f64 * delta[1] as f64)
                .map(|y| y * y)
                .sum();
            assert!((w.error_sq(0, &delta) - projected).abs() < 1e-9, "head {head}");
            assert!((w.error_sq(1, &delta) - projected / 4.0).abs() < 1e-9, "head {head}");
            assert_eq!(w.error_sq(2, &delta), 0.0);
        }
    }

    #[test]
    fn bad_shapes_and_weights_are_errors() {
        let wo = [0.0f32; 12];
        let ok: Arc<[f64]> = vec![1.0].into();
        assert!(ResidualWeight::of_head(&wo, 3, 4, 2, 2, Arc::clone(&ok)).is_err());
        assert!(ResidualWeight::of_head(&wo, 4, 4, 0, 2, Arc::clone(&ok)).is_err());
        assert!(ResidualWeight::of_head(&wo, 3, 4, 0, 2, vec![-1.0].into()).is_err());
        assert!(ResidualWeight::of_head(&wo, 3, 4, 0, 2, vec![f64::NAN].into()).is_err());
        assert!(ResidualWeight::of_head(&wo, 3, 4, 0, 2, ok).is_ok());
    }

    #[test]
    fn row_weights_are_inverse_row_energies() {
        let x = [1.0f32, 1.0, 0.0, 0.0, 3.0, 4.0];
        assert_eq!(&row_weights(&x, 2)[..], &[0.5, 0.0, 1.0 / 25.0]);
    }
}
