//! The suite's and benchmark's generator (`TestRng`): core's SplitMix64 (one implementation in the workspace)
//! with the few conveniences the checks use. Seeds keep their stream, so the CUDA tests that call
//! the same suite reproduce the very same inputs.

use minference_core::rng::SplitMix64 as CoreRng;

#[derive(Debug, Clone)]
pub struct TestRng(CoreRng);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        TestRng(CoreRng::new(seed ^ 0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        self.0.uniform()
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    /// Standard normal (Box–Muller, no cached pair: one draw per call keeps streams simple).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            xs.swap(i, self.below(i + 1));
        }
    }
}
