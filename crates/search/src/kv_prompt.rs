//! Seeded synthetic KV-retrieval calibration prompt in the style of InfiniteBench `kv_retrieval`:
//! a JSON object of random UUID keys → random UUID values, then a question asking for one key's
//! value. The number of pairs is the largest whose prompt fits the token budget.

use crate::error::{Result, SearchError};
use minference_core::rng::SplitMix64;
use minference_model::Tokenizer;

const INSTRUCTION: &str =
    "Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n";

/// A generated prompt and what it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct KvPrompt {
    pub text: String,
    pub tokens: Vec<u32>,
    pub pairs: usize,
    pub key: String,
    pub value: String,
    /// Index of the asked pair among `pairs`.
    pub position: usize,
}

/// A random version-4 UUID (lower-case hex, 8-4-4-4-12).
pub fn uuid_v4(rng: &mut SplitMix64) -> String {
    let (a, b) = (rng.next_u64(), rng.next_u64());
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_le_bytes());
    bytes[8..].copy_from_slice(&b.to_le_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

fn render(pairs: &[(String, String)], asked: usize) -> String {
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\": \"{v}\"")).collect();
    format!(
        "{INSTRUCTION}{{{}}}\n\nKey: \"{}\"\nThe value associated with the specified key is: ",
        body.join(", "),
        pairs[asked].0
    )
}

/// The prompt with the most pairs whose tokenization is at most `target_tokens` long.
pub fn kv_retrieval_prompt(tokenizer: &Tokenizer, target_tokens: usize, seed: u64) -> Result<KvPrompt> {
    let mut rng = SplitMix64::new(seed);
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut grow = |pairs: &mut Vec<(String, String)>, count: usize| {
        while pairs.len() < count {
            pairs.push((uuid_v4(&mut rng), uuid_v4(&mut rng)));
        }
    };
    // Asked pair: a seeded relative depth, so the answer sits at the same depth for any budget.
    let depth = SplitMix64::derive(seed, 1).uniform();
    let build = |pairs: &[(String, String)]| -> Result<(String, Vec<u32>, usize)> {
        let asked = ((pairs.len() as f64 * depth) as usize).min(pairs.len() - 1);
        let text = render(pairs, asked);
        let tokens = tokenizer.encode(&text)?;
        Ok((text, tokens, asked))
    };
    grow(&mut pairs, 1);
    let (_, one, _) = build(&pairs)?;
    if one.len() > target_tokens {
        return Err(SearchError::Input(format!(
            "a KV-retrieval prompt needs at least {} tokens, asked for {target_tokens}",
            one.len()
        )));
    }
    // Exponential search, then bisection, over the number of pairs (the token count grows with it).
    let (mut lo, mut hi) = (1usize, 2usize);
    loop {
        grow(&mut pairs, hi);
        if build(&pairs[..hi])?.1.len() > target_tokens {
            break;
        }
        lo = hi;
        hi *= 2;
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if build(&pairs[..mid])?.1.len() <= target_tokens {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let (text, tokens, asked) = build(&pairs[..lo])?;
    Ok(KvPrompt {
        text,
        tokens,
        pairs: lo,
        key: pairs[asked].0.clone(),
        value: pairs[asked].1.clone(),
        position: asked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_seeded() {
        let mut a = SplitMix64::new(3);
        let mut b = SplitMix64::new(3);
        let u = uuid_v4(&mut a);
        assert_eq!(u, uuid_v4(&mut b));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(u, uuid_v4(&mut a));
    }
}
