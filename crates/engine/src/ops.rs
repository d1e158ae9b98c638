//! Dense building blocks of the forward pass on CPU: RMSNorm, linear layers (sgemm for many rows,
//! the quantized matvec of `minference_model::gguf::quant` for one), SwiGLU.

use minference_model::weights::Linear;
use rayon::prelude::*;

/// `out[r] = x[r] / rms(x[r]) * weight` for each row of width `weight.len()`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    out.par_chunks_mut(width).zip(x.par_chunks(width)).for_each(|(o, row)| {
        let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / width as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        for ((o, v), w) in o.iter_mut().zip(row).zip(weight) {
            *o = v * inv * w;
        }
    });
}

/// `y[rows, out] = x[rows, in] · Wᵀ (+ bias)`, overwriting `y`.
pub fn linear(x: &[f32], rows: usize, layer: &Linear, y: &mut [f32]) {
    let (k, n) = (layer.in_dim, layer.out_dim);
    debug_assert_eq!(x.len(), rows * k);
    debug_assert_eq!(y.len(), rows * n);
    if rows == 0 {
        return;
    }
    if let (1, Some(q)) = (rows, &layer.quant) {
        // A decode step: the matrix-vector product on the GGML blocks as stored (a quarter to a
        // half of the f32 bytes; AVX-512 / AVX2 kernels with a portable fallback).
        q.matvec(x, y);
    } else if rows == 1 {
        // A matrix-vector product: rows of W in parallel beats the packing overhead of sgemm.
        y.par_chunks_mut(256).enumerate().for_each(|(c, ys)| {
            for (j, yv) in ys.iter_mut().enumerate() {
                let o = c * 256 + j;
                *yv = dot(&layer.weight[o * k..(o + 1) * k], x);
            }
        });
    } else {
        // SAFETY: the slices have exactly the lengths implied by the dimensions and strides below.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                k,
                n,
                1.0,
                x.as_ptr(),
                k as isize,
                1,
                layer.weight.as_ptr(),
                1,
                k as isize,
                0.0,
                y.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    }
    if let Some(b) = &layer.bias {
        y.par_chunks_mut(n).for_each(|row| row.iter_mut().zip(b).for_each(|(v, b)| *v += b));
    }
}

/// `linear` for several layers over the same one or more input rows: for one row with every
/// layer in GGML blocks (Q/K/V, gate/up of a decode step) one fused parallel matvec pass
/// (`QuantMatrix::matvec_many`), otherwise one `linear` per layer.
pub fn linear_many(x: &[f32], rows: usize, layers: &[&Linear], ys: &mut [&mut [f32]]) {
    let quants: Option<Vec<_>> = layers.iter().map(|l| l.quant.as_ref()).collect();
    match quants {
        Some(q) if rows == 1 => {
            minference_model::gguf::quant::QuantMatrix::matvec_many(&q, x, ys);
            for (l, y) in layers.iter().zip(ys.iter_mut()) {
                if let Some(b) = &l.bias {
                    y.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                }
            }
        }
        _ => {
            for (l, y) in layers.iter().zip(ys.iter_mut()) {
                linear(x, rows, l, y);
            }
        }
    }
}

/// Dot product with 8 independent accumulators so the compiler can vectorize.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// `gate[i] = silu(gate[i]) * up[i]` (SwiGLU).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    gate.par_chunks_mut(4096).zip(up.par_chunks(4096)).for_each(|(g, u)| {
        for (g, u) in g.iter_mut().zip(u) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
    });
}

pub fn add_in_place(dst: &mut [f32], src: &[f32]) {
    dst.par_chunks_mut(4096).zip(src.par_chunks(4096)).for_each(|(d, s)| {
        d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], rows: usize, l: &Linear) -> Vec<f32> {
        let mut y = vec![0.0; rows * l.out_dim];
        for r in 0..rows {
            for o in 0..l.out_dim {
                let mut s = l.bias.as_ref().map_or(0.0, |b| b[o]);
                for i in 0..l.in_dim {
                    s += x[r * l.in_dim + i] * l.weight[o * l.in_dim + i];
                }
                y[r * l.out_dim + o] = s;
            }
        }
        y
    }

    #[test]
    fn linear_matches_naive_for_one_and_many_rows() {
        let (i, o) = (37, 300);
        let weight: Vec<f32> = (0..i * o).map(|v| ((v * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        let layer = Linear {
            weight,
            bias: Some((0..o).map(|v| v as f32 * 0.01).collect()),
            out_dim: o,
            in_dim: i,
            quant: None,
        };
        for rows in [1usize, 5] {
            let x: Vec<f32> = (0..rows * i).map(|v| ((v * 31) % 17) as f32 / 8.0 - 1.0).collect();
            let mut y = vec![0.0; rows * o];
            linear(&x, rows, &layer, &mut y);
            let want = naive(&x, rows, &layer);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn rms_norm_gives_unit_rms_with_unit_weight() {
        let x = vec![3.0, -4.0, 0.0, 5.0, 1.0, 1.0, 1.0, 1.0];
        let mut out = vec![0.0; 8];
        rms_norm(&x, &[1.0; 4], 0.0, &mut out);
        for row in out.chunks(4) {
            let ms: f32 = row.iter().map(|v| v * v).sum::<f32>() / 4.0;
            assert!((ms - 1.0).abs() < 1e-5);
        }
    }
}
