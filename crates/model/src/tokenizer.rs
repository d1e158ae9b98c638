//! Tokenizer: HF `tokenizer.json` through the `tokenizers` crate, or a byte-level BPE rebuilt from
//! GGUF metadata (`tokenizer.ggml.model = gpt2`), plus special-token ids and the chat template.

use crate::chat::ChatTemplate;
use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, MetaValue};
use std::path::Path;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::AddedToken;
use tokenizers::SplitDelimiterBehavior;

/// GGUF token types (llama.cpp `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Tokens that end generation (eos and the chat template's end-of-turn token).
    pub stop_tokens: Vec<u32>,
    pub chat: ChatTemplate,
    /// Whether a prompt starts with `bos` (GGUF `tokenizer.ggml.add_bos_token`, HF
    /// `tokenizer_config.json` `add_bos_token`).
    pub add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("bos", &self.bos).field("eos", &self.eos).finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

/// Word-splitting regexes of the BPE families that differ from GPT-2's (as in their tokenizer.json).
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer named by GGUF's `tokenizer.ggml.pre`.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(SplitPattern::Regex(re.to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(tok_err)?;
        Ok(Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into())
    };
    Ok(match pre {
        // SmolLM2 splits digits individually, then applies GPT-2's byte-level regex.
        "smollm" => Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into(),
        "qwen2" => split(QWEN2_SPLIT)?,
        "llama3" | "llama-bpe" => split(LLAMA3_SPLIT)?,
        _ => ByteLevel::new(false, true, true).into(),
    })
}

impl Tokenizer {
    /// Loads `tokenizer.json`; special ids come from `tokenizer_config.json` / `config.json` when present.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(ModelError::Tokenizer(format!("missing tokenizer: {} not found", path.display())));
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| tok_err(format!("{}: {e}", path.display())))?;
        let read_json = |name: &str| -> Option<serde_json::Value> {
            std::fs::read_to_string(dir.join(name)).ok().and_then(|t| serde_json::from_str(&t).ok())
        };
        let tok_cfg = read_json("tokenizer_config.json");
        let token_id = |key: &str| -> Option<u32> {
            let v = tok_cfg.as_ref()?.get(key)?;
            let s = v.as_str().or_else(|| v.get("content").and_then(|c| c.as_str()))?;
            inner.token_to_id(s)
        };
        let model_cfg = read_json("config.json");
        let cfg_id = |key: &str| model_cfg.as_ref()?.get(key)?.as_u64().map(|v| v as u32);
        let bos = token_id("bos_token").or_else(|| cfg_id("bos_token_id"));
        let eos = token_id("eos_token").or_else(|| cfg_id("eos_token_id"));
        let template = tok_cfg.as_ref().and_then(|c| c.get("chat_template")).and_then(|t| t.as_str()).unwrap_or("");
        let add_bos = tok_cfg.as_ref().and_then(|c| c.get("add_bos_token")).and_then(|v| v.as_bool()).unwrap_or(false);
        Ok(Self::finish(inner, bos, eos, template, add_bos))
    }

    /// Rebuilds the tokenizer from GGUF metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let model = file
            .get("tokenizer.ggml.model")
            .and_then(|v| v.as_str())
            .ok_or_else(|| ModelError::Tokenizer("missing tokenizer: GGUF has no `tokenizer.ggml.model`".into()))?;
        if model != "gpt2" {
            return Err(ModelError::Tokenizer(format!(
                "GGUF tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`)"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            let arr = file
                .get(key)
                .and_then(|v| v.as_array())
                .ok_or_else(|| ModelError::Tokenizer(format!("missing tokenizer: GGUF has no array `{key}`")))?;
            arr.iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| ModelError::Tokenizer(format!("`{key}` holds a non-string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| ModelError::Tokenizer(format!("merge `{m}` has no space")))
            })
            .collect::<Result<_>>()?;
        let types: Vec<i64> = match file.get("tokenizer.ggml.token_type").and_then(|v| v.as_array()) {
            Some(a) => a.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let vocab: tokenizers::models::bpe::Vocab =
            tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        if vocab.len() != tokens.len() {
            return Err(ModelError::Tokenizer("GGUF vocabulary has duplicate tokens".into()));
        }
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tok_err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let pre = file.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
        let pre_tok = pre_tokenizer(pre)?;
        inner.with_pre_tokenizer(Some(pre_tok));
        inner.with_decoder(Some(ByteLevel::default()));
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(types.iter().chain(std::iter::repeat(&1)))
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .map(|(s, &t)| AddedToken::from(s.clone(), t == TOKEN_TYPE_CONTROL))
            .collect();
        inner.add_special_tokens(specials).map_err(tok_err)?;
        let id = |key: &str| {
            file.get(key).and_then(MetaValue::as_u64).map(|v| v as u32).filter(|&v| (v as usize) < tokens.len())
        };
        let template = file.get("tokenizer.chat_template").and_then(|v| v.as_str()).unwrap_or("");
        let add_bos = file.get("tokenizer.ggml.add_bos_token").and_then(MetaValue::as_bool).unwrap_or(false);
        Ok(Self::finish(inner, id("tokenizer.ggml.bos_token_id"), id("tokenizer.ggml.eos_token_id"), template, add_bos))
    }

    fn finish(inner: tokenizers::Tokenizer, bos: Option<u32>, eos: Option<u32>, template: &str, add_bos: bool) -> Self {
        let chat = ChatTemplate::detect(template, |t| inner.token_to_id(t).is_some());
        let mut stop_tokens: Vec<u32> = eos.into_iter().collect();
        for t in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"] {
            if let Some(id) = inner.token_to_id(t) {
                if !stop_tokens.contains(&id) {
                    stop_tokens.push(id);
                }
            }
        }
        Tokenizer { inner, bos, eos, stop_tokens, chat, add_bos }
    }

    /// Token ids of `text` (special-token strings in the text become their ids).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, false).map_err(tok_err)?.get_ids().to_vec())
    }

    /// Token ids of a prompt: [`Tokenizer::encode`], with `bos` in front when the model wants one
    /// and the text does not already start with it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The chat template applied to one user message, ready for generation.
    pub fn chat_prompt(&self, user: &str, system: Option<&str>) -> String {
        self.chat.render(user, system)
    }
}
