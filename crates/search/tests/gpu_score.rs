//! Search scoring kernels against a straightforward f64 reference: kept mass and output error of
//! dense, A-shape and index masks (tiles, a negative tile start, columns, a missing row block).

use half::bf16;
use minference_core::{ashape_keep, HostTensor, RowBlockIndex};
use minference_cpu::rng::TestRng;
use minference_cuda::{DeviceHead, DeviceTensor, HeadSlice};
use minference_search::gpu_score::{score_masks, ScoreMask, ScoreRequest, ScoreSums};

fn keep(mask: &ScoreMask, pos: usize, key: usize) -> bool {
    if key > pos {
        return false;
    }
    match mask {
        ScoreMask::Dense => true,
        ScoreMask::AShape { n_init, n_local } => ashape_keep(pos, key, *n_init, *n_local),
        ScoreMask::Index(rows) => rows.get(pos / 64).is_some_and(|r| {
            r.tiles.iter().any(|&t| (key as i64) >= t as i64 && (key as i64) < t as i64 + 64)
                || r.columns.contains(&(key as i32))
        }),
    }
}

/// f64 reference sums over rows `floor..n`.
fn reference(q: &[f32], k: &[f32], v: &[f32], d: usize, mask: &ScoreMask, floor: usize, threshold: f64) -> ScoreSums {
    let n = q.len() / d;
    let mut s = ScoreSums { rows: (n - floor) as u64, ..Default::default() };
    for i in floor..n {
        let logits: Vec<f64> = (0..=i)
            .map(|j| (0..d).map(|c| q[i * d + c] as f64 * k[j * d + c] as f64).sum::<f64>() / (d as f64).sqrt())
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let z: f64 = w.iter().sum();
        let p: Vec<f64> = w.iter().map(|x| x / z).collect();
        let kept: Vec<usize> = (0..=i).filter(|&j| keep(mask, i, j)).collect();
        let mass: f64 = kept.iter().map(|&j| p[j]).sum();
        s.mass += mass;
        for c in 0..d {
            let dense: f64 = (0..=i).map(|j| p[j] * v[j * d + c] as f64).sum();
            let num: f64 = kept.iter().map(|&j| p[j] * v[j * d + c] as f64).sum();
            let sparse = if mass > 0.0 { num / mass } else { 0.0 };
            let diff = sparse - dense;
            s.err_sq += diff * diff;
            s.ref_sq += dense * dense;
            s.over += (diff.abs() > threshold) as u64;
        }
    }
    s
}

#[test]
fn kernel_sums_match_an_f64_reference() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    for (n, d) in [(150usize, 64usize), (70, 128)] {
        let mut r = TestRng::new(n as u64);
        let mut gen =
            |len: usize| -> Vec<f32> { (0..len).map(|_| bf16::from_f32(r.normal() * 1.5).to_f32()).collect() };
        let (q, k, v) = (gen(n * d), gen(n * d), gen(n * d));
        let up = |x: &[f32]| {
            let b: Vec<bf16> = x.iter().map(|&y| bf16::from_f32(y)).collect();
            DeviceTensor::upload(&gpu, HostTensor::Bf16(&b)).unwrap()
        };
        let (qd, kd, vd) = (up(&q), up(&k), up(&v));
        let head = DeviceHead {
            q: HeadSlice { tensor: &qd, offset: 0 },
            k: HeadSlice { tensor: &kd, offset: 0 },
            v: HeadSlice { tensor: &vd, offset: 0 },
            n,
            head_dim: d,
        };
        let index = vec![
            RowBlockIndex { tiles: vec![-32], columns: vec![40, 50] },
            RowBlockIndex { tiles: vec![0, 100], columns: vec![70, 90] },
        ];
        let masks = [
            ScoreMask::Dense,
            ScoreMask::AShape { n_init: 3, n_local: 20 },
            ScoreMask::Index(&index),
            ScoreMask::AShape { n_init: 0, n_local: 1 },
        ];
        for floor in [0, 65] {
            let req = ScoreRequest { floor, want_output: true, threshold: 0.05 };
            let got = score_masks(&gpu, &head, &masks, &req).unwrap();
            for (m, g) in masks.iter().zip(&got) {
                let want = reference(&q, &k, &v, d, m, floor, 0.05);
                let case = format!("n {n} d {d} floor {floor} {m:?}");
                assert_eq!(g.rows, want.rows, "{case}");
                assert!(
                    (g.mass - want.mass).abs() < 1e-4 * want.rows as f64,
                    "{case}: mass {} vs {}",
                    g.mass,
                    want.mass
                );
                assert!(
                    (g.err_sq - want.err_sq).abs() < 1e-3 * want.err_sq.max(1.0),
                    "{case}: err {} vs {}",
                    g.err_sq,
                    want.err_sq
                );
                assert!(
                    (g.ref_sq - want.ref_sq).abs() < 1e-3 * want.ref_sq.max(1.0),
                    "{case}: ref {} vs {}",
                    g.ref_sq,
                    want.ref_sq
                );
                assert!(g.over.abs_diff(want.over) <= 2, "{case}: over {} vs {}", g.over, want.over);
            }
            // Recall only: no output sums.
            let req = ScoreRequest { want_output: false, ..req };
            let mass_only = score_masks(&gpu, &head, &masks, &req).unwrap();
            for (a, b) in mass_only.iter().zip(&got) {
                assert_eq!((a.err_sq, a.ref_sq, a.over), (0.0, 0.0, 0));
                assert!((a.mass - b.mass).abs() < 1e-9 * a.rows as f64 + 1e-6);
            }
        }
    }
    // Unsupported head_dim and a slice past the end are errors.
    let t = DeviceTensor::upload(&gpu, HostTensor::Bf16(&vec![bf16::ZERO; 64 * 96])).unwrap();
    let s = HeadSlice { tensor: &t, offset: 0 };
    let req = ScoreRequest { floor: 0, want_output: false, threshold: 0.0 };
    assert!(
        score_masks(&gpu, &DeviceHead { q: s, k: s, v: s, n: 64, head_dim: 96 }, &[ScoreMask::Dense], &req).is_err()
    );
    assert!(
        score_masks(&gpu, &DeviceHead { q: s, k: s, v: s, n: 97, head_dim: 64 }, &[ScoreMask::Dense], &req).is_err()
    );
}
