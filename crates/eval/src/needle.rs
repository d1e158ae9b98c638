//! Needle (passkey) prompts built to an exact token count with the needle at a requested depth of
//! the haystack, and the check of a model's answer.

use crate::error::{EvalError, Result};
use crate::haystack::Haystack;
use minference_core::rng::SplitMix64;

const INTRO: &str =
    "A secret pass key is hidden somewhere in the long text below. Read it carefully and remember the pass key.";
const QUESTION_CHAT: &str = "\nWhat is the pass key?";
/// In raw mode the prompt ends mid-sentence so that the continuation is the key itself.
const QUESTION_RAW: &str = "\nWhat is the pass key? The pass key is";

/// Text around the user message: empty for raw prompts, the chat template's parts otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptFrame {
    pub prefix: String,
    pub suffix: String,
    pub raw: bool,
    /// Token put before everything (the model's BOS when its tokenizer asks for one).
    pub bos: Option<u32>,
}

impl PromptFrame {
    pub fn raw() -> Self {
        PromptFrame { prefix: String::new(), suffix: String::new(), raw: true, bos: None }
    }

    /// Splits a chat template rendered around `marker` into the text before and after it.
    pub fn from_rendered(rendered: &str, marker: &str) -> Result<Self> {
        let (prefix, suffix) = rendered
            .split_once(marker)
            .ok_or_else(|| EvalError::Input("the chat template dropped the user message".into()))?;
        Ok(PromptFrame { prefix: prefix.into(), suffix: suffix.into(), raw: false, bos: None })
    }
}

/// A needle prompt as token ids, with where the needle landed.
#[derive(Debug, Clone, PartialEq)]
pub struct NeedlePrompt {
    pub tokens: Vec<u32>,
    /// The key the model must repeat (5 digits).
    pub value: String,
    /// Token index where the needle sentence starts.
    pub needle_start: usize,
    pub needle_len: usize,
    /// Token index of the first haystack token and the number of haystack tokens.
    pub haystack_start: usize,
    pub haystack_tokens: usize,
}

impl NeedlePrompt {
    /// Share of the haystack before the needle (0 = first, 1 = last).
    pub fn achieved_depth(&self) -> f64 {
        if self.haystack_tokens == 0 {
            return 0.0;
        }
        (self.needle_start - self.haystack_start) as f64 / self.haystack_tokens as f64
    }
}

/// The 5-digit key for a grid cell; the same for every attention kind run on that cell.
pub fn needle_value(seed: u64, length: usize, depth_pct: u32) -> String {
    let mut rng = SplitMix64::derive(seed, (length as u64) << 8 | depth_pct as u64);
    format!("{}", 10_000 + rng.below(90_000))
}

/// Builds a prompt of at most `length` tokens (as close as whole haystack sentences allow) with the
/// needle after `depth_pct`% of the haystack tokens, at the nearest sentence boundary.
pub fn build_needle_prompt(
    haystack: &Haystack,
    frame: &PromptFrame,
    encode: &dyn Fn(&str) -> Result<Vec<u32>>,
    length: usize,
    depth_pct: u32,
    value: &str,
) -> Result<NeedlePrompt> {
    if depth_pct > 100 {
        return Err(EvalError::Input(format!("depth {depth_pct}% is not in 0..=100")));
    }
    let needle_text = format!(" The pass key is {value}. Remember it. {value} is the pass key.");
    let question = if frame.raw { QUESTION_RAW } else { QUESTION_CHAT };
    let mut prefix: Vec<u32> = frame.bos.into_iter().collect();
    prefix.extend(encode(&format!("{}{INTRO}", frame.prefix))?);
    let needle = encode(&needle_text)?;
    let tail = encode(&format!("{question}{}", frame.suffix))?;
    let fixed = prefix.len() + needle.len() + tail.len();
    let min_haystack = haystack.longest_sentence();
    if length < fixed + min_haystack {
        return Err(EvalError::Input(format!(
            "length {length} is too short for a needle prompt (instructions, needle and question take {fixed} tokens)"
        )));
    }
    let sentences = haystack.take(length - fixed);
    let total: usize = sentences.iter().map(Vec::len).sum();
    // Sentence boundary nearest to the requested depth.
    let target = depth_pct as f64 / 100.0 * total as f64;
    let mut best = (0usize, 0usize, f64::INFINITY);
    let mut before = 0usize;
    for i in 0..=sentences.len() {
        let gap = (before as f64 - target).abs();
        if gap < best.2 {
            best = (i, before, gap);
        }
        if let Some(s) = sentences.get(i) {
            before += s.len();
        }
    }
    let (split, before_tokens, _) = best;

    let mut tokens = Vec::with_capacity(fixed + total);
    tokens.extend_from_slice(&prefix);
    let haystack_start = tokens.len();
    sentences[..split].iter().for_each(|s| tokens.extend_from_slice(s));
    let needle_start = tokens.len();
    tokens.extend_from_slice(&needle);
    sentences[split..].iter().for_each(|s| tokens.extend_from_slice(s));
    tokens.extend_from_slice(&tail);
    debug_assert_eq!(needle_start - haystack_start, before_tokens);
    Ok(NeedlePrompt {
        tokens,
        value: value.to_string(),
        needle_start,
        needle_len: needle.len(),
        haystack_start,
        haystack_tokens: total,
    })
}

/// Whether the answer repeats the key (digits may come as separate tokens, so spaces between
/// digits are ignored).
pub fn answer_has_value(answer: &str, value: &str) -> bool {
    let squeezed: String = answer.chars().filter(|c| !c.is_whitespace()).collect();
    squeezed.contains(value)
}

/// Parses depths such as `0,25,50` or `0,10,..,100` (an arithmetic progression filled in from the
/// step of the two values before `..`).
pub fn parse_depths(s: &str) -> Result<Vec<u32>> {
    let bad = || EvalError::Input(format!("`{s}` is not a depth list (examples: 0,50,100 or 0,10,..,100)"));
    let parts: Vec<&str> = s.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    let mut out: Vec<u32> = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        if parts[i] == ".." {
            let (n, end) = (out.len(), parts.get(i + 1).and_then(|p| p.parse::<u32>().ok()).ok_or_else(bad)?);
            if n < 2 || out[n - 1] <= out[n - 2] || end < out[n - 1] {
                return Err(bad());
            }
            let step = out[n - 1] - out[n - 2];
            let mut v = out[n - 1] + step;
            while v < end {
                out.push(v);
                v += step;
            }
            out.push(end);
            i += 2;
        } else {
            out.push(parts[i].parse().map_err(|_| bad())?);
            i += 1;
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    if let Some(d) = out.iter().find(|&&d| d > 100) {
        return Err(EvalError::Input(format!("depth {d}% is not in 0..=100")));
    }
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_lists() {
        assert_eq!(parse_depths("0,10,..,100").unwrap(), (0..=10).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(parse_depths("0,25,50,75,100").unwrap(), vec![0, 25, 50, 75, 100]);
        assert_eq!(parse_depths("0,30,..,100").unwrap(), vec![0, 30, 60, 90, 100]);
        assert!(parse_depths("").is_err());
        assert!(parse_depths("0,..,100").is_err());
        assert!(parse_depths("101").is_err());
        assert!(parse_depths("a,b").is_err());
    }

    #[test]
    fn answers() {
        assert!(answer_has_value(" 4 2 1 7 7.", "42177"));
        assert!(!answer_has_value(" 4217", "42177"));
    }

    #[test]
    fn values_are_five_digits_and_stable() {
        let v = needle_value(3, 4096, 50);
        assert_eq!(v.len(), 5);
        assert_eq!(v, needle_value(3, 4096, 50));
    }
}
