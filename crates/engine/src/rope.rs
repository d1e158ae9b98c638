//! Rotary position embedding in the half-split layout (pairs `(i, i + D/2)`, as HF uses), with
//! theta and the supported long-context frequency scalings.

use minference_model::{ModelConfig, RopeScaling};
use rayon::prelude::*;

#[derive(Debug, Clone)]
pub struct Rope {
    /// Angular frequency of each pair, `head_dim / 2` entries.
    inv_freq: Vec<f64>,
    head_dim: usize,
}

impl Rope {
    pub fn new(cfg: &ModelConfig) -> Self {
        let half = cfg.head_dim / 2;
        let base = cfg.rope_theta as f64;
        let mut inv_freq: Vec<f64> = (0..half).map(|i| 1.0 / base.powf((2 * i) as f64 / cfg.head_dim as f64)).collect();
        match &cfg.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= *factor as f64),
            RopeScaling::FreqFactors(div) => inv_freq.iter_mut().zip(div).for_each(|(f, d)| *f /= *d as f64),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
                let (factor, low, high) = (*factor as f64, *low_freq_factor as f64, *high_freq_factor as f64);
                let orig = *original_max_position as f64;
                let low_wavelen = orig / low;
                let high_wavelen = orig / high;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    if wavelen > low_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_wavelen {
                        let smooth = (orig / wavelen - low) / (high - low);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
        }
        Rope { inv_freq, head_dim: cfg.head_dim }
    }

    /// Angular frequency of each pair `(i, i + D/2)`, in f64 (the GPU kernel forms `pos × freq`
    /// in f64 from these too, so both devices rotate alike).
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }

    /// Rotates `x` laid out `[tokens, heads, head_dim]`, token `t` at position `first_pos + t`.
    pub fn apply(&self, x: &mut [f32], heads: usize, first_pos: usize) {
        let d = self.head_dim;
        let half = d / 2;
        x.par_chunks_mut(heads * d).enumerate().for_each(|(t, tok)| {
            let pos = (first_pos + t) as f64;
            let (cos, sin): (Vec<f32>, Vec<f32>) = self
                .inv_freq
                .iter()
                .map(|f| {
                    let a = pos * f;
                    (a.cos() as f32, a.sin() as f32)
                })
                .unzip();
            for head in tok.chunks_mut(d) {
                for i in 0..half {
                    let (a, b) = (head[i], head[i + half]);
                    head[i] = a * cos[i] - b * sin[i];
                    head[i + half] = b * cos[i] + a * sin[i];
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minference_model::ModelConfig;

    #[test]
    fn rotation_preserves_norm_and_relative_dot_products() {
        let cfg = ModelConfig::named_shape("smollm2-135m").unwrap_or_else(|e| panic!("{e}"));
        let rope = Rope::new(&cfg);
        let d = cfg.head_dim;
        let q: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin()).collect();
        let k: Vec<f32> = (0..d).map(|i| (i as f32 * 0.11).cos()).collect();
        // q at position p, k at p - 3: the score depends only on the distance 3.
        let score = |p: usize| {
            let mut qq = q.clone();
            let mut kk = k.clone();
            rope.apply(&mut qq, 1, p);
            rope.apply(&mut kk, 1, p - 3);
            let n: f32 = qq.iter().map(|v| v * v).sum();
            let n0: f32 = q.iter().map(|v| v * v).sum();
            assert!((n - n0).abs() < 1e-3);
            qq.iter().zip(&kk).map(|(a, b)| a * b).sum::<f32>()
        };
        assert!((score(3) - score(500)).abs() < 1e-3);
    }
}
