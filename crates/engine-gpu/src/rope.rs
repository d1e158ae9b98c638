//! RoPE frequencies for the device kernel, with the same convention and scalings as the CPU's
//! `minference_model::rope::Rope` (half-split pairs `(i, i + D/2)`, theta, linear, Llama-3,
//! explicit per-frequency factors). Kept in f64: the kernel forms angles `pos × freq` in f64.

use minference_model::{ModelConfig, RopeScaling};

pub fn rope_inv_freq(cfg: &ModelConfig) -> Vec<f64> {
    let half = cfg.head_dim / 2;
    let base = cfg.rope_theta as f64;
    let mut inv: Vec<f64> = (0..half).map(|i| 1.0 / base.powf((2 * i) as f64 / cfg.head_dim as f64)).collect();
    match &cfg.rope_scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => inv.iter_mut().for_each(|f| *f /= *factor as f64),
        RopeScaling::FreqFactors(div) => inv.iter_mut().zip(div).for_each(|(f, d)| *f /= *d as f64),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
            let (factor, low, high) = (*factor as f64, *low_freq_factor as f64, *high_freq_factor as f64);
            let orig = *original_max_position as f64;
            let (low_wavelen, high_wavelen) = (orig / low, orig / high);
            for f in inv.iter_mut() {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= factor;
                } else if wavelen >= high_wavelen {
                    // Between the two: interpolate between scaled and unscaled.
                    let smooth = (orig / wavelen - low) / (high - low);
                    *f = (1.0 - smooth) * *f / factor + smooth * *f;
                }
            }
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;
    use minference_model::rope::Rope;

    /// Rotates one head with our frequencies the way the kernel does.
    fn rotate(inv: &[f64], x: &[f32], pos: usize) -> Vec<f32> {
        let half = x.len() / 2;
        let mut out = x.to_vec();
        for i in 0..half {
            let a = pos as f64 * inv[i];
            let (s, c) = (a.sin() as f32, a.cos() as f32);
            out[i] = x[i] * c - x[i + half] * s;
            out[i + half] = x[i + half] * c + x[i] * s;
        }
        out
    }

    #[test]
    fn matches_the_cpu_rope_for_every_scaling() {
        let mut cfg = ModelConfig::named_shape("llama-3-8b").unwrap_or_else(|e| panic!("{e}"));
        let scalings = [
            RopeScaling::None,
            RopeScaling::Linear { factor: 4.0 },
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position: 8192,
            },
            RopeScaling::FreqFactors((0..64).map(|i| 1.0 + i as f32 / 16.0).collect()),
        ];
        let x: Vec<f32> = (0..cfg.head_dim).map(|i| (i as f32 * 0.37).sin()).collect();
        for scaling in scalings {
            cfg.rope_scaling = scaling;
            let inv = rope_inv_freq(&cfg);
            for pos in [0usize, 1, 777, 131_071, 1_000_000] {
                let mut cpu = x.clone();
                Rope::new(&cfg).apply(&mut cpu, 1, pos);
                let ours = rotate(&inv, &x, pos);
                for (a, b) in cpu.iter().zip(&ours) {
                    assert!((a - b).abs() < 1e-5, "{:?} pos {pos}: {a} vs {b}", cfg.rope_scaling);
                }
            }
        }
    }
}
