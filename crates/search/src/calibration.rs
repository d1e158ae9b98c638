//! Calibration prompts: a text file or the synthetic KV-retrieval prompt, tokenized and fitted to a
//! requested length and the model's context.

use crate::error::{Result, SearchError};
use crate::kv_prompt::kv_retrieval_prompt;
use minference_model::Tokenizer;
use std::path::PathBuf;

/// Default length of a synthetic calibration prompt.
pub const DEFAULT_SYNTHETIC_TOKENS: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub enum CalibrationSource {
    File(PathBuf),
    SyntheticKvRetrieval { seed: u64 },
}

/// A tokenized calibration prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pub tokens: Vec<u32>,
    pub text: String,
    /// One line saying what it is (for logs and config READMEs).
    pub description: String,
}

/// Tokenizes `source` to `len` tokens (`None`: the file's own length, or
/// [`DEFAULT_SYNTHETIC_TOKENS`]). A longer file is cut in the middle (its start and its question
/// at the end are kept, as MInference's benchmarks truncate); a shorter file is an error, as is a
/// length past `context`.
pub fn load_calibration(
    tokenizer: &Tokenizer,
    source: &CalibrationSource,
    len: Option<usize>,
    context: usize,
) -> Result<Calibration> {
    if len == Some(0) {
        return Err(SearchError::Input("the calibration length must be > 0".into()));
    }
    if let Some(n) = len.filter(|&n| n > context) {
        return Err(SearchError::Input(format!(
            "calibration length {n} is longer than the model's context of {context} tokens"
        )));
    }
    match source {
        CalibrationSource::SyntheticKvRetrieval { seed } => {
            let n = len.unwrap_or(DEFAULT_SYNTHETIC_TOKENS.min(context));
            let p = kv_retrieval_prompt(tokenizer, n, *seed)?;
            let description = format!(
                "synthetic KV retrieval, seed {seed}: {} UUID pairs, {} tokens, asks pair {} (value {})",
                p.pairs,
                p.tokens.len(),
                p.position,
                p.value
            );
            Ok(Calibration { tokens: p.tokens, text: p.text, description })
        }
        CalibrationSource::File(path) => {
            let bytes = std::fs::read(path).map_err(|e| SearchError::io(path, e))?;
            let text = String::from_utf8(bytes).map_err(|e| {
                SearchError::Input(format!(
                    "calibration file {} is not UTF-8 text (invalid byte at offset {})",
                    path.display(),
                    e.utf8_error().valid_up_to()
                ))
            })?;
            if text.trim().is_empty() {
                return Err(SearchError::Input(format!("calibration file {} is empty", path.display())));
            }
            let tokens = tokenizer.encode(&text)?;
            if tokens.is_empty() {
                return Err(SearchError::Input(format!("calibration file {} has no tokens", path.display())));
            }
            let tokens = match len {
                None if tokens.len() > context => {
                    return Err(SearchError::Input(format!(
                    "calibration file {} has {} tokens, longer than the model's context of {context}; pass a length",
                    path.display(),
                    tokens.len()
                )))
                }
                None => tokens,
                Some(n) if n > tokens.len() => {
                    return Err(SearchError::Input(format!(
                        "calibration file {} has only {} tokens, fewer than the requested {n}",
                        path.display(),
                        tokens.len()
                    )))
                }
                Some(n) => truncate_middle(&tokens, n),
            };
            let description = format!("{} ({} tokens)", path.display(), tokens.len());
            Ok(Calibration { tokens, text, description })
        }
    }
}

/// Every source in order (several calibration documents: code, prose, a retrieval prompt), each
/// as [`load_calibration`]; no source is an error, and so is the first bad one (named).
pub fn load_calibrations(
    tokenizer: &Tokenizer,
    sources: &[CalibrationSource],
    len: Option<usize>,
    context: usize,
) -> Result<Vec<Calibration>> {
    if sources.is_empty() {
        return Err(SearchError::Input("no calibration document given".into()));
    }
    sources.iter().map(|s| load_calibration(tokenizer, s, len, context)).collect()
}

/// The first `ceil(n/2)` and the last `floor(n/2)` tokens.
pub fn truncate_middle(tokens: &[u32], n: usize) -> Vec<u32> {
    if tokens.len() <= n {
        return tokens.to_vec();
    }
    let head = n.div_ceil(2);
    let tail = n - head;
    tokens[..head].iter().chain(&tokens[tokens.len() - tail..]).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::truncate_middle;

    #[test]
    fn middle_truncation_keeps_both_ends() {
        let t: Vec<u32> = (0..10).collect();
        assert_eq!(truncate_middle(&t, 5), vec![0, 1, 2, 8, 9]);
        assert_eq!(truncate_middle(&t, 20), t);
        assert_eq!(truncate_middle(&t, 1), vec![0]);
    }
}
