//! The structured attention workload of random-weight benchmarks (`bench e2e --workload
//! structured`): random weights and prompt tokens designed so that every layer's attention has
//! the structure of the core's synthetic generator (`minference_core::synth`, structured mode) —
//! sinks, a local band, far slash lines, retrieval columns, noise — instead of the near-uniform
//! attention of i.i.d. random weights (on which VS budgets scatter and MInference is nearly dense).
//!
//! How the weights carry it (RoPE, half-split pairs `(p, p + D/2)`, angular frequency `θ_p`; the
//! score of query position `m` and key position `n` in pair `p` is `Re(z_q conj(z_k) e^{i(m-n)θ_p})`):
//! * **local band and far slashes**: Q and K biases (constant over positions, so the score depends
//!   on `m - n` only). Every K head holds `β` in the real part of each *structure pair* (those with
//!   `θ_p ≥ 1 / synth.rope_base`, the generator's frequency range); every Q head holds
//!   `Σ_g α_g e^{-i d_g θ_p}` there, so that `score / √D = Σ_g (W_g / P) Σ_p cos(θ_p (m - n - d_g))`:
//!   the generator's locality term (`d = 0`, `W = local_decay`) and its `n_far_slashes` lines at
//!   distances drawn per Q head and layer from `[far_slash_min, far_slash_max]`.
//! * **sinks and retrieval columns**: the two lowest-frequency pairs are channels. The prompt's first
//!   `sink_tokens` tokens are a reserved sink token, and each KV head has `n_retrieval_columns`
//!   positions holding its own reserved retrieval token. Their embeddings are large (element RMS
//!   [`SPECIAL_EMBED_RMS`], far above what the layers add to the residual), so after RMSNorm their
//!   hidden state points along the token's own direction `u` at every layer; the K rows of a channel
//!   read `u`, and the Q bias of the channel, phased so that the slow RoPE rotation stays near its
//!   peak over `[0, max_len)`, gives the channel's strength to every query.
//! * **noise**: the attention norm weight is `synth.noise`, so the random Q/K/V projections add
//!   i.i.d. noise of that standard deviation to every element (the random weights have unit gain).
//!
//! The generator's other parts (V, the MLP, the output projection) stay i.i.d. random. The shape
//! must have Q/K biases: [`StructuredAttention::design`] refuses a config without them, and the
//! benchmark turns them on (and says so) for shapes that have none.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use minference_core::rng::SplitMix64;
use minference_core::synth::SynthConfig;

/// Element RMS of a reserved token's embedding (the layers add O(1) per element to the residual).
pub const SPECIAL_EMBED_RMS: f32 = 32.0;

/// The structured workload: the generator's knobs and the longest prompt it must hold for (the
/// sink and retrieval channels are phased for `[0, max_len)`).
#[derive(Debug, Clone, PartialEq)]
pub struct StructuredAttention {
    pub synth: SynthConfig,
    pub max_len: usize,
}

/// What the workload changes in one layer; every other weight stays random.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerDesign {
    /// `[q_dim]`, head-major, before RoPE.
    pub q_bias: Vec<f32>,
    /// `[kv_dim]`, head-major, before RoPE.
    pub k_bias: Vec<f32>,
    /// Rows of W_q (in `0..q_dim`) set to zero: the channel pairs carry the bias alone.
    pub q_zero_rows: Vec<usize>,
    /// Rows of W_k (in `0..kv_dim`) replaced by these `[hidden]` rows (the channels).
    pub k_rows: Vec<(usize, Vec<f32>)>,
}

/// The whole model's changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    /// Weight of every attention RMSNorm element (the Q/K/V noise standard deviation).
    pub attn_norm: f32,
    pub layers: Vec<LayerDesign>,
    /// Reserved token ids and their embedding rows (`[hidden]`).
    pub special_embeddings: Vec<(u32, Vec<f32>)>,
}

/// Reserved token ids: the sink token is the last id of the vocabulary, KV head `g`'s retrieval
/// token the one `g + 1` before it.
pub fn sink_token(cfg: &ModelConfig) -> u32 {
    (cfg.vocab - 1) as u32
}
pub fn retrieval_token(cfg: &ModelConfig, kv_head: usize) -> u32 {
    (cfg.vocab - 2 - kv_head) as u32
}

const STREAM_DIRECTIONS: u64 = 0x51;
const STREAM_LAYER: u64 = 0x52;
const STREAM_TOKENS: u64 = 0x53;

impl StructuredAttention {
    /// The generator's calibrated defaults, phased for prompts up to `max_len` tokens.
    pub fn new(max_len: usize) -> Self {
        StructuredAttention { synth: SynthConfig::structured(), max_len }
    }

    fn check(&self, cfg: &ModelConfig) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        if !cfg.qkv_bias {
            return bad(format!("the structured attention workload needs Q/K biases; {} has none", cfg.name));
        }
        if cfg.head_dim < 8 || !cfg.head_dim.is_multiple_of(2) {
            return bad(format!("the structured attention workload needs an even head dim >= 8, not {}", cfg.head_dim));
        }
        if cfg.vocab < cfg.kv_heads + 2 + 16 {
            return bad(format!("vocabulary of {} is too small for the reserved tokens", cfg.vocab));
        }
        if cfg.rope_scaling != crate::config::RopeScaling::None {
            return bad("the structured attention workload is designed for unscaled RoPE".into());
        }
        if self.max_len == 0 {
            return bad("the structured attention workload needs max_len > 0".into());
        }
        Ok(())
    }

    /// Angular frequencies of the half-split pairs, as the engines' RoPE computes them (no scaling:
    /// the named shapes of the benchmarks have none).
    fn thetas(cfg: &ModelConfig) -> Vec<f64> {
        let half = cfg.head_dim / 2;
        (0..half).map(|i| 1.0 / (cfg.rope_theta as f64).powf((2 * i) as f64 / cfg.head_dim as f64)).collect()
    }

    /// The unit direction `u` of a reserved token (seeded normal vector, normalised).
    fn direction(hidden: usize, seed: u64, which: u64) -> Vec<f32> {
        let mut rng = SplitMix64::derive(seed, (STREAM_DIRECTIONS << 48) ^ which);
        let v: Vec<f64> = (0..hidden).map(|_| rng.normal()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        v.iter().map(|x| (x / norm) as f32).collect()
    }

    /// The weight changes for `cfg` (checked: Q/K biases, head dim, vocabulary).
    pub fn design(&self, cfg: &ModelConfig, seed: u64) -> Result<Design> {
        self.check(cfg)?;
        let s = &self.synth;
        let (d, half, h) = (cfg.head_dim, cfg.head_dim / 2, cfg.hidden);
        let thetas = Self::thetas(cfg);
        let (sink_pair, retrieval_pair) = (half - 1, half - 2);
        let structure: Vec<usize> = (0..half - 2).filter(|&p| thetas[p] >= 1.0 / s.rope_base.max(1.0) as f64).collect();
        let pairs = structure.len().max(1) as f32;
        let sqrt_d = (d as f32).sqrt();
        // As the generator: K amplitude beta balanced against the mean per-pair Q amplitude.
        let total_w = s.local_decay.abs() + s.n_far_slashes as f32 * s.far_slash_strength.abs();
        let beta = ((total_w / pairs).max(1e-3) * sqrt_d).sqrt();
        let channel = |strength: f32| (strength.max(0.0) * sqrt_d).sqrt();
        let norm = s.noise.max(1e-3);
        let sqrt_h = (h as f32).sqrt();

        let sink_dir = Self::direction(h, seed, 0);
        let retrieval_dirs: Vec<Vec<f32>> = (0..cfg.kv_heads).map(|g| Self::direction(h, seed, 1 + g as u64)).collect();
        // A channel's K row: `amplitude` for a token along `dir` (hidden state ≈ √h·u, times the norm).
        let k_row = |dir: &[f32], amplitude: f32| dir.iter().map(|u| u * amplitude / (norm * sqrt_h)).collect();
        // Phase that centres the channel's cos on the middle of [0, max_len).
        let centre = |p: usize| -(thetas[p] * self.max_len as f64 / 2.0);

        let (lo, hi) = (s.far_slash_min.max(1) as f64, s.far_slash_max.max(s.far_slash_min).max(1) as f64);
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let mut q_bias = vec![0.0f32; cfg.q_dim()];
            let mut k_bias = vec![0.0f32; cfg.kv_dim()];
            let mut q_zero_rows = Vec::new();
            let mut k_rows = Vec::new();
            for (g, retrieval_dir) in retrieval_dirs.iter().enumerate() {
                let row = |p: usize| g * d + p;
                for &p in &structure {
                    k_bias[row(p)] = beta;
                }
                k_rows.push((row(sink_pair), k_row(&sink_dir, channel(s.sink_strength))));
                k_rows.push((row(sink_pair + half), vec![0.0; h]));
                k_rows.push((row(retrieval_pair), k_row(retrieval_dir, channel(s.retrieval_strength))));
                k_rows.push((row(retrieval_pair + half), vec![0.0; h]));
            }
            for qh in 0..cfg.heads {
                let mut rng = SplitMix64::derive(seed, (STREAM_LAYER << 48) ^ ((l as u64) << 24) ^ qh as u64);
                let mut groups = vec![(0.0f64, s.local_decay)];
                for _ in 0..s.n_far_slashes {
                    let dist = (lo.ln() + rng.uniform() * (hi.ln() - lo.ln())).exp().round();
                    groups.push((dist, s.far_slash_strength));
                }
                let base = qh * d;
                for &p in &structure {
                    for &(dist, w) in &groups {
                        let alpha = (w / pairs) * sqrt_d / beta;
                        let (sin, cos) = (-dist * thetas[p]).sin_cos();
                        q_bias[base + p] += alpha * cos as f32;
                        q_bias[base + p + half] += alpha * sin as f32;
                    }
                }
                let retrieval_scale = 0.5 + rng.uniform() as f32;
                for (p, amplitude) in [
                    (sink_pair, channel(s.sink_strength)),
                    (retrieval_pair, channel(s.retrieval_strength) * retrieval_scale),
                ] {
                    let (sin, cos) = centre(p).sin_cos();
                    q_bias[base + p] = amplitude * cos as f32;
                    q_bias[base + p + half] = amplitude * sin as f32;
                    q_zero_rows.extend([base + p, base + p + half]);
                }
            }
            layers.push(LayerDesign { q_bias, k_bias, q_zero_rows, k_rows });
        }
        let embed = |dir: &[f32]| dir.iter().map(|u| u * SPECIAL_EMBED_RMS * sqrt_h).collect();
        let mut special_embeddings = vec![(sink_token(cfg), embed(&sink_dir))];
        for (g, dir) in retrieval_dirs.iter().enumerate() {
            special_embeddings.push((retrieval_token(cfg, g), embed(dir)));
        }
        Ok(Design { attn_norm: norm, layers, special_embeddings })
    }

    /// A prompt of `n` tokens: the sink token first `sink_tokens` times, each KV head's retrieval
    /// token at `n_retrieval_columns` seeded positions, seeded ordinary tokens elsewhere (never a
    /// reserved id).
    pub fn tokens(&self, cfg: &ModelConfig, n: usize, seed: u64) -> Result<Vec<u32>> {
        self.check(cfg)?;
        let ordinary = (cfg.vocab - 1 - cfg.kv_heads) as u64;
        let mut rng = SplitMix64::derive(seed, STREAM_TOKENS << 48);
        let mut tokens: Vec<u32> = (0..n).map(|_| rng.below(ordinary) as u32).collect();
        let sinks = self.synth.sink_tokens.min(n);
        for g in 0..cfg.kv_heads {
            for _ in 0..self.synth.n_retrieval_columns {
                if n > sinks {
                    let at = sinks + rng.below((n - sinks) as u64) as usize;
                    tokens[at] = retrieval_token(cfg, g);
                }
            }
        }
        tokens[..sinks].fill(sink_token(cfg));
        Ok(tokens)
    }
}

impl Design {
    /// Applies the changes to random weights of the same config (CPU engine; the GPU engine
    /// applies the same [`Design`] to the weights it generates on the device).
    pub fn apply(&self, cfg: &ModelConfig, w: &mut crate::weights::Weights) -> Result<()> {
        let h = cfg.hidden;
        if self.layers.len() != w.layers.len() || w.embed.len() != cfg.vocab * h {
            return Err(ModelError::Config("structured design does not match the weights' shape".into()));
        }
        for (lw, ld) in w.layers.iter_mut().zip(&self.layers) {
            lw.attn_norm.fill(self.attn_norm);
            lw.wq.bias = Some(ld.q_bias.clone());
            lw.wk.bias = Some(ld.k_bias.clone());
            for &r in &ld.q_zero_rows {
                lw.wq.weight[r * h..(r + 1) * h].fill(0.0);
            }
            for (r, row) in &ld.k_rows {
                lw.wk.weight[r * h..(r + 1) * h].copy_from_slice(row);
            }
            lw.wq.quant = None;
            lw.wk.quant = None;
        }
        for (t, row) in &self.special_embeddings {
            let t = *t as usize;
            w.embed[t * h..(t + 1) * h].copy_from_slice(row);
        }
        w.embed_quant = None;
        Ok(())
    }
}
