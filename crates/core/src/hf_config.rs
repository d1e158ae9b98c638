//! MInference configs inside a Hugging Face `config.json`, where serving stacks keep them.
//!
//! SGLang (and vLLM's former dual-chunk backend) read the per-head patterns from the model's
//! `config.json`:
//!
//! | key | meaning | default |
//! | --- | --- | --- |
//! | `sparse_attention_config` | MInference's per-layer `{head: [pattern, a, b, score]}` list | required |
//! | `sparse_attention_enabled` | whether the sparse path is used at all | `true` |
//! | `sparse_attention_threshold` | prompts shorter than this many tokens prefill dense | 32768 |
//! | `sparse_attention_last_q` | query rows of the Vertical-Slash online estimate | 64 |
//!
//! The keys are read at the top level of the file or, when the top level has no
//! `sparse_attention_config`, inside `dual_chunk_attention_config` (where vLLM merged them);
//! the four keys are read from the same object. Writing ([`write_hf_config`]) updates
//! `sparse_attention_config` where it was found (the top level when absent) and keeps every other
//! key and the top-level key order.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ModelPatternConfig;
use crate::error::{CoreError, Result};

/// The key holding the per-layer patterns.
pub const HF_CONFIG_KEY: &str = "sparse_attention_config";
/// The object vLLM nests the sparse-attention keys in.
pub const HF_DUAL_CHUNK_KEY: &str = "dual_chunk_attention_config";
/// `sparse_attention_threshold` when absent (SGLang's and vLLM's default).
pub const HF_DEFAULT_THRESHOLD: usize = 32768;
/// `sparse_attention_last_q` when absent.
pub const HF_DEFAULT_LAST_Q: usize = 64;

/// The sparse-attention settings of an HF `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct HfSparseAttention {
    pub patterns: ModelPatternConfig,
    /// `sparse_attention_enabled` (default true).
    pub enabled: bool,
    /// `sparse_attention_threshold` (default [`HF_DEFAULT_THRESHOLD`]).
    pub threshold: usize,
    /// `sparse_attention_last_q` (default [`HF_DEFAULT_LAST_Q`]).
    pub last_q: usize,
    /// The keys were found inside `dual_chunk_attention_config`, not at the top level.
    pub nested: bool,
}

/// Whether `text` looks like an HF config (a JSON object at the top level) rather than
/// MInference's own format (a list of layers). Leading whitespace and a BOM are skipped.
pub fn is_hf_config(text: &str) -> bool {
    text.trim_start_matches('\u{feff}').trim_start().starts_with('{')
}

fn err(file: &str, location: impl Into<String>, message: impl Into<String>) -> CoreError {
    CoreError::Config { file: file.to_string(), location: location.into(), message: message.into() }
}

/// A JSON object whose key order is kept (serde_json's own `Map` sorts keys in this build).
#[derive(Debug, Clone, Default)]
struct OrderedObject(Vec<(String, Value)>);

impl OrderedObject {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<OrderedObject, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    // A repeated key: the last one wins, as in serde_json and Python's json.
                    match out.iter_mut().find(|(key, _)| *key == k) {
                        Some(slot) => slot.1 = v,
                        None => out.push((k, v)),
                    }
                }
                Ok(OrderedObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for OrderedObject {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

fn parse_object(text: &str, file: &str) -> Result<OrderedObject> {
    let text = text.trim_start_matches('\u{feff}');
    serde_json::from_str(text).map_err(|e| err(file, "JSON", format!("an HF config.json must be a JSON object: {e}")))
}

/// Where the sparse-attention keys live: the top level, or the nested dual-chunk object.
/// `None` = the top level.
fn locate<'a>(root: &'a OrderedObject, file: &str) -> Result<Option<&'a serde_json::Map<String, Value>>> {
    // A key set to null counts as absent (transformers writes unset options as null).
    let present = |v: Option<&Value>| v.is_some_and(|v| !v.is_null());
    if present(root.get(HF_CONFIG_KEY)) {
        return Ok(None);
    }
    match root.get(HF_DUAL_CHUNK_KEY) {
        Some(Value::Object(inner)) if present(inner.get(HF_CONFIG_KEY)) => Ok(Some(inner)),
        _ => Err(err(
            file,
            HF_CONFIG_KEY,
            format!(
                "this HF config.json has no `{HF_CONFIG_KEY}` key (looked at the top level and in \
                 `{HF_DUAL_CHUNK_KEY}`); write one with `minference search --hf-config {file}` or pass a \
                 MInference JSON config"
            ),
        )),
    }
}

fn usize_key(v: Option<&Value>, key: &str, default: usize, file: &str) -> Result<usize> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| err(file, key, format!("must be a non-negative integer, found {n}"))),
        Some(other) => Err(err(file, key, format!("must be a non-negative integer, found {other}"))),
    }
}

/// Reads the sparse-attention keys of an HF `config.json`; `file` names it in errors. A file
/// without `sparse_attention_config` is an error naming the key.
pub fn read_hf_config(text: &str, file: &str) -> Result<HfSparseAttention> {
    let root = parse_object(text, file)?;
    let inner = locate(&root, file)?;
    let nested = inner.is_some();
    let get = |key: &str| match inner {
        Some(m) => m.get(key),
        None => root.get(key),
    };
    let patterns = match get(HF_CONFIG_KEY) {
        Some(v @ Value::Array(_)) => ModelPatternConfig::from_json_value(v, &format!("{file} ({HF_CONFIG_KEY})"))?,
        Some(Value::String(s)) => {
            return Err(err(
                file,
                HF_CONFIG_KEY,
                format!(
                    "found the string \"{s}\"; the key must hold the per-layer list itself (MInference's \
                     entries), not a file name"
                ),
            ))
        }
        Some(other) => {
            return Err(err(file, HF_CONFIG_KEY, format!("expected the per-layer list of heads, found {other}")))
        }
        None => unreachable!("locate found the key"),
    };
    let enabled = match get("sparse_attention_enabled") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(err(file, "sparse_attention_enabled", format!("must be true or false, found {other}")))
        }
    };
    let threshold =
        usize_key(get("sparse_attention_threshold"), "sparse_attention_threshold", HF_DEFAULT_THRESHOLD, file)?;
    let last_q = usize_key(get("sparse_attention_last_q"), "sparse_attention_last_q", HF_DEFAULT_LAST_Q, file)?;
    if last_q == 0 {
        return Err(err(file, "sparse_attention_last_q", "must be > 0"));
    }
    Ok(HfSparseAttention { patterns, enabled, threshold, last_q, nested })
}

/// `text` (an HF `config.json`) with `sparse_attention_config` set to `patterns`: where the key
/// already is (top level or inside `dual_chunk_attention_config`), else added at the top level.
/// Every other key is kept, the top level in its order; the result is pretty-printed (two-space
/// indent, as `transformers` writes it) with a final newline.
pub fn write_hf_config(text: &str, patterns: &ModelPatternConfig, file: &str) -> Result<String> {
    let mut root = parse_object(text, file)?;
    let value: Value = serde_json::from_str(&patterns.to_json_string())
        .map_err(|e| err(file, HF_CONFIG_KEY, format!("serialising the patterns: {e}")))?;
    let top_has_key = root.get(HF_CONFIG_KEY).is_some_and(|v| !v.is_null());
    let nested_slot = root.0.iter_mut().find(|(k, _)| k == HF_DUAL_CHUNK_KEY).and_then(|(_, v)| match v {
        Value::Object(inner) if inner.get(HF_CONFIG_KEY).is_some_and(|v| !v.is_null()) => Some(inner),
        _ => None,
    });
    match nested_slot {
        Some(inner) if !top_has_key => {
            inner.insert(HF_CONFIG_KEY.to_string(), value);
        }
        _ => match root.0.iter_mut().find(|(k, _)| k == HF_CONFIG_KEY) {
            Some(slot) => slot.1 = value,
            None => root.0.push((HF_CONFIG_KEY.to_string(), value)),
        },
    }
    let mut out = serde_json::to_string_pretty(&root)
        .map_err(|e| err(file, HF_CONFIG_KEY, format!("serialising the config: {e}")))?;
    out.push('\n');
    Ok(out)
}

/// An HF config.json that names `num_hidden_layers` or `num_attention_heads` must match the model
/// (`layers`, `heads`): writing a searched config into another model's file is an error.
pub fn check_hf_model_shape(text: &str, file: &str, layers: usize, heads: usize) -> Result<()> {
    let root = parse_object(text, file)?;
    for (key, want) in [("num_hidden_layers", layers), ("num_attention_heads", heads)] {
        if let Some(have) = root.get(key).and_then(Value::as_u64) {
            if have != want as u64 {
                return Err(err(
                    file,
                    key,
                    format!("{key} is {have} but the model has {want}; is this another model's config.json?"),
                ));
            }
        }
    }
    Ok(())
}
