//! MInference per-head pattern configs (spec §3.3).
//!
//! File format: a JSON list with one object per layer; each object maps a decimal query-head index
//! (`"0"`, `"1"`, …) to `[pattern, a, b, score]`:
//!
//! | pattern | `a` | `b` |
//! | --- | --- | --- |
//! | `vertical_and_slash` | `k_v` | `k_s` |
//! | `stream_llm` (A-shape) | `n_init` | `n_local` |
//! | `block_sparse` | `k_b` (MInference itself ignores it and uses 100) | ignored (written as 0) |
//! | `dense` (this project's extension; never written) | ignored | ignored |
//! | `adaptive_vertical_and_slash` (this project's extension) | `max_v` | `max_s` |
//!
//! An adaptive Vertical-Slash head ([`HeadPattern::AdaptiveVs`], see [`crate::adaptive`]) has a
//! fifth element holding what a fixed budget has not:
//! `["adaptive_vertical_and_slash", max_v, max_s, score, {"gamma": 0.9, "min_v": 30, "min_s": 100}]`
//! — keep `gamma` (in `(0, 1]`, kept to millionths) of the estimated mass, with at least `min_v`
//! verticals and `min_s` slashes (defaults 30 and 100 when left out) and at most `a` and `b`.
//! No other pattern takes a fifth element and no other key is accepted, so a file is never read two
//! ways; MInference's own reader does not know the name and stops on it.
//!
//! `score` is informational (recall or an error count, int or float). Head indices are global query
//! heads; a missing head means [`HeadPattern::DEFAULT`] (VS 1000/6096). A missing layer is an error,
//! as in the reference's current paths. Dense heads are written as
//! `["vertical_and_slash", 1000000000, 1000000000, score]`: budgets clamp to `N`, which is dense
//! causal attention through the VS kernels, and MInference reads that file unchanged; reading such an
//! entry (both budgets `>= 10^9`) gives back `Dense`, so write → read round-trips exactly.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use crate::adaptive::{gamma_of_ppm, AdaptiveBudget};
use crate::error::{CoreError, Result};
use crate::pattern::HeadPattern;

/// Budget used to write dense heads in MInference's format (clamps to `N`).
pub const DENSE_AS_VS_BUDGET: usize = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelPatternConfig {
    pub layers: Vec<LayerPatterns>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LayerPatterns {
    pub heads: BTreeMap<usize, HeadEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadEntry {
    pub pattern: HeadPattern,
    pub score: f64,
}

/// Error in a config (file name is `file` for parsing, `"<pattern config>"` for look-ups).
fn config_err(file: &str, location: impl Into<String>, message: impl Into<String>) -> CoreError {
    CoreError::Config { file: file.to_string(), location: location.into(), message: message.into() }
}

const LOOKUP: &str = "<pattern config>";

impl ModelPatternConfig {
    /// Every layer has every head set to `pattern` (score 0).
    pub fn uniform(layers: usize, heads: usize, pattern: HeadPattern) -> Self {
        let layer = LayerPatterns { heads: (0..heads).map(|h| (h, HeadEntry { pattern, score: 0.0 })).collect() };
        ModelPatternConfig { layers: vec![layer; layers] }
    }

    /// Parses MInference's JSON format; `file` names the source in error messages.
    pub fn from_json_str(text: &str, file: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(text).map_err(|e| config_err(file, "JSON", e.to_string()))?;
        Self::from_json_value(&root, file)
    }

    /// Parses an already-parsed JSON value in MInference's format (a list of layers).
    pub fn from_json_value(root: &Value, file: &str) -> Result<Self> {
        let Value::Array(layers) = root else {
            return Err(config_err(file, "top level", format!("expected a list of layers, found {}", kind(root))));
        };
        let layers =
            layers.iter().enumerate().map(|(l, layer)| parse_layer(layer, l, file)).collect::<Result<Vec<_>>>()?;
        Ok(ModelPatternConfig { layers })
    }

    /// Writes the config in MInference's format (layers in order, heads in numeric order).
    pub fn to_json_string(&self) -> String {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|layer| {
                let obj: Map<String, Value> =
                    layer.heads.iter().map(|(h, e)| (h.to_string(), entry_to_json(e))).collect();
                Value::Object(obj)
            })
            .collect();
        // Serialising a Value built from finite numbers cannot fail.
        serde_json::to_string(&Value::Array(layers)).unwrap_or_default()
    }

    /// Pattern of global query head `global_head` in `layer`: the entry, [`HeadPattern::DEFAULT`]
    /// when the head is absent, an error when the layer is absent.
    pub fn pattern(&self, layer: usize, global_head: usize) -> Result<HeadPattern> {
        let l = self.layers.get(layer).ok_or_else(|| {
            config_err(
                LOOKUP,
                format!("layer {layer}"),
                format!("layer missing (config has {} layers)", self.layers.len()),
            )
        })?;
        Ok(l.heads.get(&global_head).map_or(HeadPattern::DEFAULT, |e| e.pattern))
    }

    /// Tensor parallelism: rank `rank` holds local heads `0..heads_per_rank`; config ids are global
    /// (`local_head + rank · heads_per_rank`).
    pub fn pattern_for_rank(
        &self,
        layer: usize,
        local_head: usize,
        rank: usize,
        heads_per_rank: usize,
    ) -> Result<HeadPattern> {
        if local_head >= heads_per_rank {
            return Err(config_err(
                LOOKUP,
                format!("layer {layer}, local head {local_head}"),
                format!("local head out of range (rank holds {heads_per_rank} heads)"),
            ));
        }
        let global = rank
            .checked_mul(heads_per_rank)
            .and_then(|g| g.checked_add(local_head))
            .ok_or_else(|| CoreError::Overflow("global head id".into()))?;
        self.pattern(layer, global)
    }

    /// Checks the config against a model: exactly `layers` layers and no head id `>= heads`.
    pub fn validate_model(&self, layers: usize, heads: usize) -> Result<()> {
        if self.layers.len() != layers {
            return Err(config_err(
                LOOKUP,
                "top level",
                format!("config has {} layers but the model has {layers}", self.layers.len()),
            ));
        }
        for (l, layer) in self.layers.iter().enumerate() {
            if let Some((&h, _)) = layer.heads.range(heads..).next() {
                return Err(config_err(
                    LOOKUP,
                    format!("layer {l}, head \"{h}\""),
                    format!("head id out of range (model has {heads} query heads)"),
                ));
            }
        }
        Ok(())
    }

    /// `minference_ratio`: multiplies VS budgets and A-shape sizes by `ratio`, truncating (never
    /// below 1; an adaptive head's bounds likewise, its minima may reach 0). Dense and
    /// block-sparse heads are unchanged. `ratio` must be finite and > 0.
    pub fn with_ratio(&self, ratio: f64) -> Result<Self> {
        if !ratio.is_finite() || ratio <= 0.0 {
            return Err(CoreError::Budget(format!("minference_ratio must be finite and > 0, got {ratio}")));
        }
        let scale = |x: usize| ((x as f64 * ratio) as usize).max(1);
        let mut out = self.clone();
        for entry in out.layers.iter_mut().flat_map(|l| l.heads.values_mut()) {
            entry.pattern = match entry.pattern {
                HeadPattern::VerticalSlash { k_v, k_s } => {
                    HeadPattern::VerticalSlash { k_v: scale(k_v), k_s: scale(k_s) }
                }
                HeadPattern::AShape { n_init, n_local } => {
                    HeadPattern::AShape { n_init: scale(n_init), n_local: scale(n_local) }
                }
                HeadPattern::AdaptiveVs { gamma_ppm, min_v, max_v, min_s, max_s } => HeadPattern::AdaptiveVs {
                    gamma_ppm,
                    min_v: (min_v as f64 * ratio) as usize,
                    max_v: scale(max_v),
                    min_s: (min_s as f64 * ratio) as usize,
                    max_s: scale(max_s),
                },
                other => other,
            };
        }
        Ok(out)
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn parse_layer(layer: &Value, l: usize, file: &str) -> Result<LayerPatterns> {
    let Value::Object(obj) = layer else {
        return Err(config_err(
            file,
            format!("layer {l}"),
            format!("expected an object of heads, found {}", kind(layer)),
        ));
    };
    let mut heads = BTreeMap::new();
    for (key, entry) in obj {
        let location = format!("layer {l}, head \"{key}\"");
        let head = parse_head_key(key).ok_or_else(|| {
            config_err(file, &location, "head key must be a decimal head index without sign or leading zeros")
        })?;
        let entry = parse_entry(entry).map_err(|message| config_err(file, &location, message))?;
        heads.insert(head, entry);
    }
    Ok(LayerPatterns { heads })
}

fn parse_head_key(key: &str) -> Option<usize> {
    let canonical = !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) && (key == "0" || !key.starts_with('0'));
    canonical.then(|| key.parse().ok()).flatten()
}

fn parse_entry(entry: &Value) -> std::result::Result<HeadEntry, String> {
    let Value::Array(items) = entry else {
        return Err(format!("expected [pattern, a, b, score], found {}", kind(entry)));
    };
    if items.len() != 4 && items.len() != 5 {
        return Err(format!(
            "expected 4 elements [pattern, a, b, score] (5 for {ADAPTIVE_NAME}), found {}",
            items.len()
        ));
    }
    let Value::String(name) = &items[0] else {
        return Err(format!("pattern name must be a string, found {}", kind(&items[0])));
    };
    if items.len() == 5 && name != ADAPTIVE_NAME {
        return Err(format!("only {ADAPTIVE_NAME} takes a fifth element; {name} is [pattern, a, b, score]"));
    }
    let a = parse_count(&items[1], "a")?;
    let b = parse_count(&items[2], "b")?;
    let score = items[3].as_f64().ok_or_else(|| format!("score must be a number, found {}", kind(&items[3])))?;
    let positive = |x: u64, what: &str| -> std::result::Result<usize, String> {
        if x == 0 {
            return Err(format!("{what} must be > 0 for {name}"));
        }
        usize::try_from(x).map_err(|_| format!("{what} = {x} too large"))
    };
    let pattern = match name.as_str() {
        "vertical_and_slash" if a >= DENSE_AS_VS_BUDGET as u64 && b >= DENSE_AS_VS_BUDGET as u64 => HeadPattern::Dense,
        "vertical_and_slash" => {
            HeadPattern::VerticalSlash { k_v: positive(a, "a (k_v)")?, k_s: positive(b, "b (k_s)")? }
        }
        "stream_llm" => {
            HeadPattern::AShape { n_init: positive(a, "a (n_init)")?, n_local: positive(b, "b (n_local)")? }
        }
        "block_sparse" => HeadPattern::BlockSparse { k_b: positive(a, "a (k_b)")? },
        "dense" => HeadPattern::Dense,
        ADAPTIVE_NAME => parse_adaptive(positive(a, "a (max_v)")?, positive(b, "b (max_s)")?, items.get(4))?,
        other => return Err(CoreError::UnknownPattern(other.to_string()).to_string()),
    };
    Ok(HeadEntry { pattern, score })
}

/// The pattern name of adaptive Vertical-Slash heads.
const ADAPTIVE_NAME: &str = "adaptive_vertical_and_slash";

/// An adaptive head from its caps and its fifth element `{"gamma": g, "min_v": a, "min_s": b}`.
fn parse_adaptive(max_v: usize, max_s: usize, rule: Option<&Value>) -> std::result::Result<HeadPattern, String> {
    let need = format!("{ADAPTIVE_NAME} needs a fifth element {{\"gamma\": g, \"min_v\": a, \"min_s\": b}}");
    let Some(rule) = rule else {
        return Err(need);
    };
    let Value::Object(obj) = rule else {
        return Err(format!("{need}, found {}", kind(rule)));
    };
    if let Some(k) = obj.keys().find(|k| !["gamma", "min_v", "min_s"].contains(&k.as_str())) {
        return Err(format!("unknown key `{k}` in the {ADAPTIVE_NAME} rule (expected gamma, min_v, min_s)"));
    }
    let gamma = match obj.get("gamma") {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(other) => return Err(format!("gamma must be a number, found {}", kind(other))),
        None => return Err(format!("{need}: gamma is missing")),
    };
    let defaults = AdaptiveBudget::default();
    let min = |key: &str, default: usize| -> std::result::Result<usize, String> {
        match obj.get(key) {
            None => Ok(default),
            Some(v) => {
                let x = parse_count(v, key)?;
                usize::try_from(x).map_err(|_| format!("{key} = {x} too large"))
            }
        }
    };
    let rule = AdaptiveBudget {
        gamma,
        min_v: min("min_v", defaults.min_v)?,
        max_v,
        min_s: min("min_s", defaults.min_s)?,
        max_s,
    };
    rule.to_pattern().map_err(|e| e.to_string())
}

/// A non-negative integer (an integral float such as `800.0` is accepted).
fn parse_count(v: &Value, what: &str) -> std::result::Result<u64, String> {
    let Value::Number(n) = v else {
        return Err(format!("{what} must be a number, found {}", kind(v)));
    };
    if let Some(x) = n.as_u64() {
        return Ok(x);
    }
    match n.as_f64() {
        Some(x) if x < 0.0 => Err(format!("{what} must not be negative, found {n}")),
        Some(x) if x.fract() == 0.0 && x <= u64::MAX as f64 => Ok(x as u64),
        _ => Err(format!("{what} must be an integer, found {n}")),
    }
}

fn entry_to_json(e: &HeadEntry) -> Value {
    let mut rule = None;
    let (name, a, b) = match e.pattern {
        HeadPattern::VerticalSlash { k_v, k_s } => ("vertical_and_slash", k_v, k_s),
        HeadPattern::AShape { n_init, n_local } => ("stream_llm", n_init, n_local),
        HeadPattern::BlockSparse { k_b } => ("block_sparse", k_b, 0),
        HeadPattern::Dense => ("vertical_and_slash", DENSE_AS_VS_BUDGET, DENSE_AS_VS_BUDGET),
        HeadPattern::AdaptiveVs { gamma_ppm, min_v, max_v, min_s, max_s } => {
            let mut obj = Map::new();
            let gamma = Number::from_f64(gamma_of_ppm(gamma_ppm)).unwrap_or_else(|| Number::from(1));
            obj.insert("gamma".into(), Value::Number(gamma));
            obj.insert("min_v".into(), Value::from(min_v as u64));
            obj.insert("min_s".into(), Value::from(min_s as u64));
            rule = Some(Value::Object(obj));
            (ADAPTIVE_NAME, max_v, max_s)
        }
    };
    let score = if e.score.fract() == 0.0 && e.score.abs() < 9.0e15 {
        Number::from(e.score as i64)
    } else {
        // Non-finite scores cannot be written as JSON numbers; they become 0.
        Number::from_f64(e.score).unwrap_or_else(|| Number::from(0))
    };
    let mut items = vec![Value::from(name), Value::from(a as u64), Value::from(b as u64), Value::Number(score)];
    items.extend(rule);
    Value::Array(items)
}
