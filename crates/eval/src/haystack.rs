//! The text a needle hides in: a seeded filler (a few plain sentences repeated, as in the passkey
//! task) or a user file, kept as a list of separately tokenized sentences so that a prompt can be
//! assembled to an exact token count and the needle placed at a sentence boundary.

use crate::error::{EvalError, Result};
use minference_core::rng::SplitMix64;
use std::path::Path;

/// Neutral sentences for the generated haystack; repeated, they carry no information to retrieve.
const FILLER: [&str; 6] = [
    " The river runs slowly past the old mill.",
    " Birds sing in the trees every morning.",
    " The road goes on over the hills.",
    " Clouds drift across a pale sky.",
    " A quiet day passes in the village.",
    " The lamp in the window stays lit.",
];

/// Haystack sentences as token ids, used in order and cycled when more are needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Haystack {
    sentences: Vec<Vec<u32>>,
}

impl Haystack {
    /// The filler sentences in a seed-chosen rotation, tokenized by `encode`.
    pub fn filler(seed: u64, encode: &dyn Fn(&str) -> Result<Vec<u32>>) -> Result<Self> {
        let start = SplitMix64::new(seed).below(FILLER.len() as u64) as usize;
        let texts: Vec<&str> = (0..FILLER.len()).map(|i| FILLER[(start + i) % FILLER.len()]).collect();
        Self::from_sentences(&texts, encode)
    }

    /// Sentences of a UTF-8 text file (split after `.`, `!`, `?` and line breaks).
    pub fn from_file(path: &Path, encode: &dyn Fn(&str) -> Result<Vec<u32>>) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            EvalError::Input(format!(
                "haystack file {} is not UTF-8 (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ))
        })?;
        if text.trim().is_empty() {
            return Err(EvalError::Input(format!("haystack file {} is empty", path.display())));
        }
        Self::from_sentences(&split_sentences(&text), encode)
    }

    fn from_sentences(texts: &[&str], encode: &dyn Fn(&str) -> Result<Vec<u32>>) -> Result<Self> {
        let mut sentences = Vec::with_capacity(texts.len());
        for t in texts {
            let ids = encode(t)?;
            if !ids.is_empty() {
                sentences.push(ids);
            }
        }
        if sentences.is_empty() {
            return Err(EvalError::Input("the haystack has no tokens".into()));
        }
        Ok(Haystack { sentences })
    }

    /// Whole sentences, cycling, whose total token count is at most `budget` (the next one would
    /// exceed it).
    pub fn take(&self, budget: usize) -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        let mut used = 0;
        for s in self.sentences.iter().cycle() {
            if used + s.len() > budget {
                break;
            }
            used += s.len();
            out.push(s.clone());
        }
        out
    }

    /// Tokens of the longest sentence (the placement tolerance of a needle).
    pub fn longest_sentence(&self) -> usize {
        self.sentences.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// Splits after sentence ends and line breaks; the pieces concatenate back to `text`.
pub fn split_sentences(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let ends = match c {
            '\n' => true,
            '.' | '!' | '?' => chars.peek().is_none_or(|&(_, n)| n.is_whitespace()),
            _ => false,
        };
        if ends {
            let end = i + c.len_utf8();
            pieces.push(&text[start..end]);
            start = end;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_round_trips() {
        let text = "One. Two!\nThree? 3.5 stays whole. tail";
        let parts = split_sentences(text);
        assert_eq!(parts.concat(), text);
        assert_eq!(parts, vec!["One.", " Two!", "\n", "Three?", " 3.5 stays whole.", " tail"]);
    }
}
