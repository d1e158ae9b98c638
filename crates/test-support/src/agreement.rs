//! How closely two engines' outputs agree (logits or residual streams): the GPU against the CPU
//! and a tensor-parallel group against one GPU are held to the same measures and bounds.

/// `got` measured against `reference`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    pub cosine: f64,
    /// max |reference - got| / max |reference|.
    pub rel_max: f64,
    /// The largest entry's index in `reference` and in `got`.
    pub top1: (usize, usize),
}

/// Index of the largest value (the first of equals).
pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}

/// Panics when the lengths differ or `got` holds a non-finite value.
#[track_caller]
pub fn agreement(reference: &[f32], got: &[f32]) -> Agreement {
    assert_eq!(reference.len(), got.len());
    assert!(got.iter().all(|v| v.is_finite()), "non-finite values in the output under test");
    let (mut dot, mut na, mut nb, mut max_diff, mut max_ref) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (&a, &b) in reference.iter().zip(got) {
        let (a, b) = (a as f64, b as f64);
        dot += a * b;
        na += a * a;
        nb += b * b;
        max_diff = max_diff.max((a - b).abs());
        max_ref = max_ref.max(a.abs());
    }
    Agreement {
        cosine: dot / (na.sqrt() * nb.sqrt()),
        rel_max: max_diff / max_ref,
        top1: (argmax(reference), argmax(got)),
    }
}

/// Logits within bf16 storage tolerance of `reference`: cosine above 0.995, largest difference
/// below 8% of the largest reference logit. Prints the measures either way.
#[track_caller]
pub fn assert_logits_close(what: &str, reference: &[f32], got: &[f32]) {
    let a = agreement(reference, got);
    eprintln!("{what}: cosine {:.6}, max rel diff {:.4}, top-1 {} vs {}", a.cosine, a.rel_max, a.top1.0, a.top1.1);
    assert!(a.cosine > 0.995, "{what}: cosine {}", a.cosine);
    assert!(a.rel_max < 0.08, "{what}: max relative difference {}", a.rel_max);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_outputs_agree_fully_and_a_scaled_copy_only_in_direction() {
        let v = [0.5f32, -2.0, 3.0, 1.0];
        let same = agreement(&v, &v);
        assert!((same.cosine - 1.0).abs() < 1e-12);
        assert_eq!((same.rel_max, same.top1), (0.0, (2, 2)));
        let doubled: Vec<f32> = v.iter().map(|x| 2.0 * x).collect();
        let a = agreement(&v, &doubled);
        assert!((a.cosine - 1.0).abs() < 1e-12);
        assert!((a.rel_max - 1.0).abs() < 1e-12, "{a:?}");
    }

    #[test]
    fn a_moved_maximum_shows_in_top1_and_fails_the_bounds() {
        let reference = [1.0f32, 0.0, 0.0];
        let got = [0.0f32, 1.0, 0.0];
        assert_eq!(agreement(&reference, &got).top1, (0, 1));
        let caught = std::panic::catch_unwind(|| assert_logits_close("moved", &reference, &got));
        assert!(caught.is_err());
        assert_logits_close("close", &reference, &[0.99, 0.01, 0.0]);
    }

    #[test]
    #[should_panic(expected = "non-finite")]
    fn non_finite_output_panics() {
        agreement(&[1.0, 2.0], &[1.0, f32::NAN]);
    }
}
