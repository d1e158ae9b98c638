//! Seeded synthetic Q/K/V with (or without) real attention structure, shared by tests and
//! benchmarks on CPU and GPU.
//!
//! `Random` mode: every element of Q, K, V is i.i.d. standard normal (attention has no structure;
//! VS estimates pick scattered slashes and the VS kernel is nearly dense).
//!
//! `Structured` mode builds each head's logits `q_i·k_j / sqrt(D)` as a sum of designed terms, every
//! strength given in logit units:
//! * **sinks**: keys `0..sink_tokens` carry `sink_strength` extra logit for every query (a dedicated
//!   channel, dimension 0, that is zero in every other key);
//! * **retrieval columns**: `n_retrieval_columns` random key positions per KV head carry
//!   `retrieval_strength` for every query (dimension 1; each query head scales it by a factor in
//!   `[0.5, 1.5)`);
//! * **RoPE structure**: the remaining dimension pairs `p` are rotated by `position · θ_p` with
//!   `θ_p = rope_base^(-p/P)`. Keys hold a constant vector, queries a sum of phasors chosen so that
//!   `q_i·k_j / sqrt(D) = Σ_g (W_g / P) Σ_p cos(θ_p (i - j - d_g))`: a local term (`d = 0`,
//!   `W = local_decay`) that decays slowly with distance as in RoPE models, plus `n_far_slashes`
//!   terms (`W = far_slash_strength`) peaking at distances `d_g` drawn per query head from
//!   `[far_slash_min, far_slash_max]` (log-uniform) — slash lines with a band around them;
//! * **noise**: i.i.d. normal noise of standard deviation `noise` on every rotary element of Q and K.
//!
//! V is i.i.d. standard normal in both modes. Every (sequence, head, tensor) has its own RNG stream,
//! so results do not depend on the other sequences or heads. Cost: one sine/cosine per rotary pair
//! and position (shared by all heads) plus one normal per element.

use crate::rng::SplitMix64;
use crate::shape::AttnShape;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthMode {
    Structured,
    Random,
}

/// Knobs of the generator (see the module documentation); strengths are in logit units.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub mode: SynthMode,
    /// Number of leading keys that act as attention sinks.
    pub sink_tokens: usize,
    pub sink_strength: f32,
    /// Amplitude of the RoPE locality term at distance 0.
    pub local_decay: f32,
    /// RoPE base; smaller bases make the locality term decay faster.
    pub rope_base: f32,
    pub n_far_slashes: usize,
    pub far_slash_strength: f32,
    pub far_slash_min: usize,
    pub far_slash_max: usize,
    pub n_retrieval_columns: usize,
    pub retrieval_strength: f32,
    /// Standard deviation of the per-element noise on the rotary part of Q and K.
    pub noise: f32,
}

impl SynthConfig {
    /// Defaults calibrated against the figures (docs/core.md).
    pub fn structured() -> Self {
        SynthConfig {
            mode: SynthMode::Structured,
            sink_tokens: 4,
            sink_strength: 10.5,
            local_decay: 7.0,
            rope_base: 10_000.0,
            n_far_slashes: 3,
            far_slash_strength: 3.0,
            far_slash_min: 512,
            far_slash_max: 8000,
            n_retrieval_columns: 8,
            retrieval_strength: 5.0,
            noise: 0.5,
        }
    }

    /// i.i.d. standard normal Q/K/V.
    pub fn random() -> Self {
        SynthConfig { mode: SynthMode::Random, ..SynthConfig::structured() }
    }
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig::structured()
    }
}

/// Stream ids of the per-(sequence, head) generators.
const STREAM_Q: u64 = 1;
const STREAM_K: u64 = 2;
const STREAM_V: u64 = 3;
const STREAM_HEAD: u64 = 4;

fn stream(kind: u64, b: usize, h: usize) -> u64 {
    (kind << 56) ^ ((b as u64) << 28) ^ h as u64
}

/// Generates `(Q, K, V)` as f32 in the shared layout (`Q`: `[heads, total_q, D]`, `K`/`V`:
/// `[kv_heads, total_kv, D]`). Query row `i` of sequence `b` sits at position `i + kv_len - q_len`.
/// The shape is not validated here beyond what indexing needs: a shape that fails
/// [`AttnShape::validate`] gives empty or meaningless data, never a panic.
pub fn generate_qkv(shape: &AttnShape, cfg: &SynthConfig, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (total_q, total_kv, d) = (shape.total_q(), shape.total_kv(), shape.head_dim);
    let mut q = vec![0.0f32; shape.heads * total_q * d];
    let mut k = vec![0.0f32; shape.kv_heads * total_kv * d];
    let mut v = vec![0.0f32; shape.kv_heads * total_kv * d];
    if shape.heads == 0 || shape.kv_heads == 0 || d == 0 || !shape.heads.is_multiple_of(shape.kv_heads) {
        return (q, k, v);
    }
    for (b, s) in shape.seqs.iter().enumerate() {
        if s.q_len > s.kv_len {
            continue;
        }
        for g in 0..shape.kv_heads {
            let mut rng = SplitMix64::derive(seed, stream(STREAM_V, b, g));
            let base = (g * total_kv + shape.kv_start(b)) * d;
            v[base..base + s.kv_len * d].iter_mut().for_each(|x| *x = rng.normal() as f32);
        }
        match cfg.mode {
            SynthMode::Random => fill_random(shape, b, seed, &mut q, &mut k),
            SynthMode::Structured => fill_structured(shape, b, cfg, seed, &mut q, &mut k),
        }
    }
    (q, k, v)
}

fn fill_random(shape: &AttnShape, b: usize, seed: u64, q: &mut [f32], k: &mut [f32]) {
    let (s, d) = (shape.seqs[b], shape.head_dim);
    for h in 0..shape.heads {
        let mut rng = SplitMix64::derive(seed, stream(STREAM_Q, b, h));
        let base = (h * shape.total_q() + shape.q_start(b)) * d;
        q[base..base + s.q_len * d].iter_mut().for_each(|x| *x = rng.normal() as f32);
    }
    for g in 0..shape.kv_heads {
        let mut rng = SplitMix64::derive(seed, stream(STREAM_K, b, g));
        let base = (g * shape.total_kv() + shape.kv_start(b)) * d;
        k[base..base + s.kv_len * d].iter_mut().for_each(|x| *x = rng.normal() as f32);
    }
}

/// Per-query-head constants of the structured mode.
struct QueryHead {
    /// Rotary query vector before rotation, `2P` values (pairs interleaved).
    rotary: Vec<f32>,
    sink: f32,
    retrieval: f32,
}

fn fill_structured(shape: &AttnShape, b: usize, cfg: &SynthConfig, seed: u64, q: &mut [f32], k: &mut [f32]) {
    let (s, d) = (shape.seqs[b], shape.head_dim);
    // Dimensions 0 and 1 are the sink and retrieval channels when there is room for rotary pairs.
    let reserved = if d >= 4 { 2 } else { 0 };
    let pairs = (d - reserved) / 2;
    let sqrt_d = (d as f32).sqrt();
    let thetas: Vec<f64> =
        (0..pairs).map(|p| (cfg.rope_base.max(1.0) as f64).powf(-(p as f64) / pairs.max(1) as f64)).collect();

    // Keys: constant amplitude beta on the first component of every pair, balanced against the
    // average per-pair query amplitude so that neither side dominates the noise cross terms.
    let total_w = cfg.local_decay.abs() + cfg.n_far_slashes as f32 * cfg.far_slash_strength.abs();
    let w_ref = (total_w / pairs.max(1) as f32).max(1e-3);
    let beta = (w_ref * sqrt_d).sqrt();
    let channel = |strength: f32| (strength.max(0.0) * sqrt_d).sqrt();

    let heads: Vec<QueryHead> = (0..shape.heads)
        .map(|h| {
            let mut rng = SplitMix64::derive(seed, stream(STREAM_HEAD, b, h));
            let mut groups = vec![(0.0f64, cfg.local_decay)];
            let (lo, hi) = (cfg.far_slash_min.max(1) as f64, cfg.far_slash_max.max(cfg.far_slash_min).max(1) as f64);
            for _ in 0..cfg.n_far_slashes {
                let dist = (lo.ln() + rng.uniform() * (hi.ln() - lo.ln())).exp().round();
                groups.push((dist, cfg.far_slash_strength));
            }
            let mut rotary = vec![0.0f32; 2 * pairs];
            for (p, &theta) in thetas.iter().enumerate() {
                for &(dist, w) in &groups {
                    // Phase -dist·θ puts the peak of cos(θ(Δ + phase/θ)) at Δ = dist.
                    let alpha = (w / pairs as f32) * sqrt_d / beta;
                    let (sin, cos) = (-dist * theta).sin_cos();
                    rotary[2 * p] += alpha * cos as f32;
                    rotary[2 * p + 1] += alpha * sin as f32;
                }
            }
            let retrieval = channel(cfg.retrieval_strength) * (0.5 + rng.uniform() as f32);
            QueryHead { rotary, sink: channel(cfg.sink_strength), retrieval }
        })
        .collect();

    let mut retrieval_keys: Vec<Vec<usize>> = (0..shape.kv_heads)
        .map(|g| {
            let mut rng = SplitMix64::derive(seed, stream(STREAM_HEAD, b, shape.heads + g));
            (0..cfg.n_retrieval_columns).map(|_| rng.below(s.kv_len as u64) as usize).collect()
        })
        .collect();
    retrieval_keys.iter_mut().for_each(|r| r.sort_unstable());

    let mut q_rngs: Vec<SplitMix64> =
        (0..shape.heads).map(|h| SplitMix64::derive(seed, stream(STREAM_Q, b, h))).collect();
    let mut k_rngs: Vec<SplitMix64> =
        (0..shape.kv_heads).map(|g| SplitMix64::derive(seed, stream(STREAM_K, b, g))).collect();
    let (sink_key, retrieval_key) = (channel(cfg.sink_strength), channel(cfg.retrieval_strength));
    let offset = s.offset();
    let mut rot = vec![(0.0f32, 0.0f32); pairs];
    for t in 0..s.kv_len {
        for (r, &theta) in rot.iter_mut().zip(&thetas) {
            let (sin, cos) = (t as f64 * theta).sin_cos();
            *r = (cos as f32, sin as f32);
        }
        for (g, rng) in k_rngs.iter_mut().enumerate() {
            let row = &mut k[((g * shape.total_kv()) + shape.kv_start(b) + t) * d..][..d];
            if reserved == 2 {
                row[0] = if t < cfg.sink_tokens { sink_key } else { 0.0 };
                row[1] = if retrieval_keys[g].binary_search(&t).is_ok() { retrieval_key } else { 0.0 };
            }
            let (x, y) = (beta, 0.0f32);
            for (p, &(c, sn)) in rot.iter().enumerate() {
                row[reserved + 2 * p] = c * x - sn * y + cfg.noise * rng.normal() as f32;
                row[reserved + 2 * p + 1] = sn * x + c * y + cfg.noise * rng.normal() as f32;
            }
            for e in &mut row[reserved + 2 * pairs..] {
                *e = cfg.noise * rng.normal() as f32;
            }
        }
        if t < offset {
            continue;
        }
        let i = t - offset;
        for (h, (qh, rng)) in heads.iter().zip(q_rngs.iter_mut()).enumerate() {
            let row = &mut q[((h * shape.total_q()) + shape.q_start(b) + i) * d..][..d];
            if reserved == 2 {
                row[0] = qh.sink;
                row[1] = qh.retrieval;
            }
            for (p, &(c, sn)) in rot.iter().enumerate() {
                let (x, y) = (qh.rotary[2 * p], qh.rotary[2 * p + 1]);
                row[reserved + 2 * p] = c * x - sn * y + cfg.noise * rng.normal() as f32;
                row[reserved + 2 * p + 1] = sn * x + c * y + cfg.noise * rng.normal() as f32;
            }
            for e in &mut row[reserved + 2 * pairs..] {
                *e = cfg.noise * rng.normal() as f32;
            }
        }
    }
}
