//! Next-token choice: greedy, or temperature + top-p (nucleus) sampling with a seed.

use minference_core::rng::SplitMix64;

#[derive(Debug, Clone)]
pub struct Sampler {
    /// `<= 0` means greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1.0 = all).
    pub top_p: f32,
    rng: SplitMix64,
}

impl Sampler {
    pub fn greedy() -> Self {
        Sampler { temperature: 0.0, top_p: 1.0, rng: SplitMix64::new(0) }
    }

    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Self {
        Sampler { temperature, top_p: top_p.clamp(0.0, 1.0), rng: SplitMix64::new(seed) }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 || !self.temperature.is_finite() {
            return argmax(logits);
        }
        let max = logits.iter().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, if l.is_finite() { ((l - max) / self.temperature).exp() } else { 0.0 }))
            .collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: f32 = probs.iter().map(|p| p.1).sum();
        if total.is_nan() || total <= 0.0 {
            return argmax(logits);
        }
        let mut keep = probs.len();
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p.1 / total;
            if acc >= self.top_p {
                keep = i + 1;
                break;
            }
        }
        let kept = &probs[..keep];
        let kept_total: f32 = kept.iter().map(|p| p.1).sum();
        let mut r = (self.rng.uniform() as f32) * kept_total;
        for p in kept {
            r -= p.1;
            if r <= 0.0 {
                return p.0;
            }
        }
        kept[kept.len() - 1].0
    }
}

/// Index of the largest finite logit (lowest index on ties; 0 for an empty or all-NaN slice).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || (logits[best].is_nan() && !v.is_nan()) {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sample_is_in_range_and_in_nucleus(logits in proptest::collection::vec(-10f32..10.0, 1..50), seed in 0u64..1000, top_p in 0.01f32..1.0) {
            let mut s = Sampler::new(0.8, top_p, seed);
            let t = s.sample(&logits) as usize;
            prop_assert!(t < logits.len());
            // The sampled token is never less likely than a token outside the nucleus would be.
            let mut sorted = logits.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            prop_assert!(logits[t] >= sorted[sorted.len() - 1]);
        }

        #[test]
        fn tiny_top_p_is_greedy(logits in proptest::collection::vec(-10f32..10.0, 1..50), seed in 0u64..1000) {
            let mut s = Sampler::new(1.0, 0.0, seed);
            prop_assert_eq!(logits[s.sample(&logits) as usize], logits[argmax(&logits) as usize]);
        }
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.3).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(1.0, 0.9, seed);
            (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
    }
}
