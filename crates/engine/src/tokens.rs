//! Seeded prompts for random-weight models (benchmarks and GPU tests).

/// Seeded token ids in `0..vocab` (SplitMix64).
pub fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) % vocab as u64) as u32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_seeded_and_in_range() {
        let a = random_tokens(1000, 49152, 7);
        assert_eq!(a, random_tokens(1000, 49152, 7));
        assert_ne!(a, random_tokens(1000, 49152, 8));
        assert!(a.iter().all(|t| (*t as usize) < 49152));
    }
}
