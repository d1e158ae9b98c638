//! Search objectives (spec §3): attention-weight recall (the released code's v1), relative L2 error
//! of the head's output, the same error as the residual stream sees it (through the output
//! projection, against the layer's input; [`crate::residual`]), or the count of output elements
//! off by more than a threshold (v2).

/// How candidates are ranked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Mean kept attention mass over the evaluated rows; higher is better.
    Recall,
    /// `‖O_sparse − O_dense‖₂ / ‖O_dense‖₂` over the evaluated rows; lower is better.
    OutputRelL2,
    /// `sqrt(mean_r ‖W_h (O_sparse − O_dense)_r‖² / ‖X_r‖²)` over the evaluated rows `r`, `W_h`
    /// the head's columns of the output projection and `X` the layer's input residual stream;
    /// lower is better.
    OutputResidual,
    /// Number of output elements with `|O_sparse − O_dense| > threshold`; lower is better
    /// (MInference's search v2 uses 5e-3).
    OutputCount { threshold: f32 },
}

impl Objective {
    pub fn needs_output(&self) -> bool {
        !matches!(self, Objective::Recall)
    }

    pub fn higher_is_better(&self) -> bool {
        matches!(self, Objective::Recall)
    }

    /// Whether score `a` beats score `b` (strictly).
    pub fn better(&self, a: f64, b: f64) -> bool {
        if self.higher_is_better() {
            a > b
        } else {
            a < b
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Objective::Recall => "recall",
            Objective::OutputRelL2 => "output-rel-l2",
            Objective::OutputResidual => "output-residual",
            Objective::OutputCount { .. } => "output-count",
        }
    }
}

/// Running sums for one candidate over the evaluated rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub rows: u64,
    pub mass: f64,
    pub err_sq: f64,
    pub ref_sq: f64,
    pub over: u64,
    /// `Σ_r ‖W_h δ_r‖² / ‖x_r‖²` (output-residual objective).
    pub res_err_sq: f64,
}

impl Tally {
    pub fn recall(&self) -> f64 {
        if self.rows == 0 {
            1.0
        } else {
            self.mass / self.rows as f64
        }
    }

    /// Adds one row's sparse output against the dense one.
    pub fn add_output(&mut self, sparse: &[f32], dense: &[f32], threshold: f32) {
        for (s, o) in sparse.iter().zip(dense) {
            let diff = (s - o) as f64;
            self.err_sq += diff * diff;
            self.ref_sq += (*o as f64) * (*o as f64);
            if diff.abs() > threshold as f64 {
                self.over += 1;
            }
        }
    }

    pub fn score(&self, objective: &Objective) -> f64 {
        match objective {
            Objective::Recall => self.recall(),
            Objective::OutputRelL2 => {
                if self.ref_sq > 0.0 {
                    (self.err_sq / self.ref_sq).sqrt()
                } else {
                    self.err_sq.sqrt()
                }
            }
            Objective::OutputResidual => (self.res_err_sq / self.rows.max(1) as f64).sqrt(),
            Objective::OutputCount { .. } => self.over as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_their_definitions() {
        let mut t = Tally { rows: 2, mass: 1.5, ..Default::default() };
        t.add_output(&[1.0, 0.0], &[1.0, 1.0], 5e-3);
        assert_eq!(t.score(&Objective::Recall), 0.75);
        assert!((t.score(&Objective::OutputRelL2) - (1.0f64 / 2.0).sqrt()).abs() < 1e-12);
        assert_eq!(t.score(&Objective::OutputCount { threshold: 5e-3 }), 1.0);
        assert!(Objective::Recall.better(0.9, 0.8));
        assert!(Objective::OutputRelL2.better(0.1, 0.2));
        let r = Tally { rows: 8, res_err_sq: 2.0, ..Default::default() };
        assert_eq!(r.score(&Objective::OutputResidual), 0.5);
        assert!(Objective::OutputResidual.needs_output() && !Objective::OutputResidual.higher_is_better());
    }
}
