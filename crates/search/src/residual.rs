//! The head error as the residual stream sees it (`Objective::OutputResidual`): a head's output
//! error `δ` reaches the model through its columns `W_h` of the output projection, so what is
//! added to the residual stream is `W_h δ`, and what matters to the next layers (pre-norm) is its
//! size against the stream it is added to. `‖W_h δ‖² = δᵀ G δ` with the head's Gram matrix
//! `G = W_hᵀ W_h` (`D × D`), so the error is measured without the `hidden × D` product per row.
//!
//! Unlike the relative output error, this weighs heads by how much they write (a head whose output
//! the projection nearly cancels costs little when wrong) and layers by how large the stream is
//! when they write (an early layer's error is large against a small stream).

use crate::error::{Result, SearchError};

/// One head's Gram matrix and its layer's input energy over the scored rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ResidualWeight {
    /// `G = W_hᵀ W_h`, `[D, D]` row-major.
    gram: Vec<f64>,
    head_dim: usize,
    /// `Σ ‖x_row‖²` of the layer's input residual over the scored rows.
    pub energy: f64,
}

impl ResidualWeight {
    /// Head `head`'s columns `head·D .. (head+1)·D` of the output projection `wo` (`[out, in]`
    /// row-major, `in = heads·D`), against a layer input energy `energy`.
    pub fn of_head(
        wo: &[f32],
        out_dim: usize,
        in_dim: usize,
        head: usize,
        head_dim: usize,
        energy: f64,
    ) -> Result<Self> {
        if wo.len() != out_dim * in_dim || head_dim == 0 || (head + 1) * head_dim > in_dim {
            return Err(SearchError::Input(format!(
                "output projection [{out_dim}, {in_dim}] ({} values) has no head {head} of dimension {head_dim}",
                wo.len()
            )));
        }
        if !(energy.is_finite() && energy > 0.0) {
            return Err(SearchError::Input(format!("layer input energy must be positive and finite, got {energy}")));
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
        Ok(ResidualWeight { gram, head_dim: d, energy })
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// `‖W_h δ‖² = δᵀ G δ` for one row's output error `δ` (`D` values).
    pub fn error_sq(&self, delta: &[f32]) -> f64 {
        let d = self.head_dim;
        let mut total = 0f64;
        for (i, &di) in delta.iter().enumerate().take(d) {
            let g = &self.gram[i * d..(i + 1) * d];
            let gd: f64 = g.iter().zip(delta).map(|(&gij, &dj)| gij * dj as f64).sum();
            total += di as f64 * gd;
        }
        total.max(0.0)
    }
}

/// `Σ ‖x_row‖²` over rows `floor..` of a `[tokens, hidden]` residual stream.
pub fn input_energy(residual: &[f32], hidden: usize, floor: usize) -> f64 {
    residual.chunks_exact(hidden.max(1)).skip(floor).flat_map(|r| r.iter()).map(|&x| (x as f64) * (x as f64)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gram_error_equals_the_projected_norm() {
        // out = 3, two heads of D = 2: in = 4.
        let wo = [1.0, 2.0, 0.5, -1.0, 0.0, 1.0, 2.0, 0.0, -3.0, 1.0, 1.0, 1.0];
        for head in 0..2 {
            let w = ResidualWeight::of_head(&wo, 3, 4, head, 2, 1.0).unwrap_or_else(|e| panic!("{e}"));
            let delta = [0.3f32, -0.7];
            let projected: f64 = wo
                .chunks_exact(4)
                .map(|r| r[2 * head] as f64 * delta[0] as f64 + r[2 * head + 1] as f64 * delta[1] as f64)
                .map(|y| y * y)
                .sum();
            assert!((w.error_sq(&delta) - projected).abs() < 1e-9, "head {head}");
        }
    }

    #[test]
    fn bad_shapes_and_energies_are_errors() {
        let wo = [0.0f32; 12];
        assert!(ResidualWeight::of_head(&wo, 3, 4, 2, 2, 1.0).is_err());
        assert!(ResidualWeight::of_head(&wo, 4, 4, 0, 2, 1.0).is_err());
        assert!(ResidualWeight::of_head(&wo, 3, 4, 0, 2, 0.0).is_err());
        assert!(ResidualWeight::of_head(&wo, 3, 4, 0, 2, f64::NAN).is_err());
    }

    #[test]
    fn energy_counts_rows_from_the_floor() {
        let x = [1.0f32, 1.0, 2.0, 0.0, 3.0, 4.0];
        assert_eq!(input_energy(&x, 2, 0), 2.0 + 4.0 + 25.0);
        assert_eq!(input_energy(&x, 2, 2), 25.0);
        assert_eq!(input_energy(&x, 2, 3), 0.0);
    }
}
