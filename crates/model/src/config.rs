//! Model hyper-parameters, read from GGUF metadata or an HF `config.json`, or named shapes for
//! random-weight benchmarks.

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
}

impl Architecture {
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "llama" | "llamaforcausallm" => Ok(Architecture::Llama),
            "mistral" | "mistralforcausallm" => Ok(Architecture::Mistral),
            "qwen2" | "qwen2forcausallm" => Ok(Architecture::Qwen2),
            _ => Err(ModelError::UnknownArchitecture(name.to_string())),
        }
    }
}

/// How RoPE frequencies are adjusted for long context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f32,
    },
    /// Llama-3.1 style: low frequencies divided by `factor`, high ones kept, smooth in between.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position: usize,
    },
    /// Per-frequency divisors given explicitly (GGUF `rope_freqs.weight`), length `head_dim / 2`.
    FreqFactors(Vec<f32>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    pub name: String,
    pub arch: Architecture,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub context_length: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    pub tie_embeddings: bool,
    /// Q/K/V projections carry a bias (Qwen2).
    pub qkv_bias: bool,
}

impl ModelConfig {
    /// Checks the invariants the forward pass relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        for (what, v) in [
            ("hidden size", self.hidden),
            ("intermediate size", self.intermediate),
            ("layer count", self.layers),
            ("head count", self.heads),
            ("kv head count", self.kv_heads),
            ("head dim", self.head_dim),
            ("vocab size", self.vocab),
            ("context length", self.context_length),
        ] {
            if v == 0 {
                return bad(format!("{what} is 0"));
            }
        }
        // Far beyond any real model; keeps every size product below overflow.
        const MAX_DIM: usize = 1 << 24;
        for (what, v, max) in [
            ("hidden size", self.hidden, MAX_DIM),
            ("intermediate size", self.intermediate, MAX_DIM),
            ("head count", self.heads, 1 << 16),
            ("head dim", self.head_dim, 1 << 16),
            ("vocab size", self.vocab, MAX_DIM),
            ("layer count", self.layers, 1 << 12),
            ("context length", self.context_length, 1 << 34),
        ] {
            if v > max {
                return bad(format!("{what} {v} exceeds the supported maximum {max}"));
            }
        }
        if self.heads * self.head_dim > MAX_DIM {
            return bad(format!("{} heads × head dim {} is too large", self.heads, self.head_dim));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!("head count {} is not a multiple of kv head count {}", self.heads, self.kv_heads));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head dim {} is odd (RoPE rotates pairs)", self.head_dim));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0) {
            return bad(format!("rms eps {} must be positive", self.rms_eps));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return bad(format!("rope theta {} must be > 1", self.rope_theta));
        }
        if let RopeScaling::FreqFactors(f) = &self.rope_scaling {
            if f.len() != self.head_dim / 2 {
                return bad(format!("{} rope frequency factors for head dim {}", f.len(), self.head_dim));
            }
        }
        Ok(())
    }

    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Parameter count (embedding counted once when tied).
    pub fn parameters(&self) -> u64 {
        let (h, i, q, kv) = (self.hidden as u64, self.intermediate as u64, self.q_dim() as u64, self.kv_dim() as u64);
        let attn = h * q + 2 * h * kv + q * h + if self.qkv_bias { q + 2 * kv } else { 0 };
        let mlp = 3 * h * i;
        let per_layer = attn + mlp + 2 * h;
        let emb = self.vocab as u64 * h;
        self.layers as u64 * per_layer + emb * if self.tie_embeddings { 1 } else { 2 } + h
    }

    /// Reads the config from GGUF metadata (`<arch>.*` keys).
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch_name = meta_str(file, "general.architecture")?;
        let arch = Architecture::parse(&arch_name)?;
        let p = |k: &str| format!("{arch_name}.{k}");
        let hidden = meta_usize(file, &p("embedding_length"))?;
        let heads = meta_usize(file, &p("attention.head_count"))?;
        let kv_heads = opt_usize(file, &p("attention.head_count_kv"))?.unwrap_or(heads);
        if heads == 0 {
            return Err(ModelError::Config("attention.head_count is 0".into()));
        }
        let head_dim = match opt_usize(file, &p("attention.key_length"))? {
            Some(d) => d,
            None => hidden / heads,
        };
        let vocab = match opt_usize(file, &p("vocab_size"))? {
            Some(v) => v,
            None => file
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|a| a.len())
                .ok_or_else(|| ModelError::Config(format!("missing {}", p("vocab_size"))))?,
        };
        let rope_theta = opt_f64(file, &p("rope.freq_base"))?.unwrap_or(10_000.0) as f32;
        let rope_scaling = match file.get(&p("rope.scaling.type")).and_then(|v| v.as_str()) {
            Some("linear") => {
                RopeScaling::Linear { factor: opt_f64(file, &p("rope.scaling.factor"))?.unwrap_or(1.0) as f32 }
            }
            Some("none") | None => match file.tensor("rope_freqs.weight") {
                Some(_) => RopeScaling::FreqFactors(file.tensor_f32("rope_freqs.weight")?),
                None => RopeScaling::None,
            },
            Some(other) => return Err(ModelError::Config(format!("unsupported rope scaling type `{other}`"))),
        };
        let cfg = ModelConfig {
            name: file.get("general.name").and_then(|v| v.as_str()).unwrap_or(&arch_name).to_string(),
            arch,
            hidden,
            intermediate: meta_usize(file, &p("feed_forward_length"))?,
            layers: meta_usize(file, &p("block_count"))?,
            heads,
            kv_heads,
            head_dim,
            vocab,
            context_length: meta_usize(file, &p("context_length"))?,
            rms_eps: opt_f64(file, &p("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5) as f32,
            rope_theta,
            rope_scaling,
            tie_embeddings: file.tensor("output.weight").is_none(),
            qkv_bias: file.tensor("blk.0.attn_q.bias").is_some(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads an HF `config.json`.
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ModelError::Config(format!("config.json is not valid JSON: {e}")))?;
        let get_usize = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| ModelError::Config(format!("config.json: missing or non-integer `{k}`")))
        };
        let arch_name = v
            .get("model_type")
            .and_then(|x| x.as_str())
            .or_else(|| v.get("architectures").and_then(|a| a.get(0)).and_then(|x| x.as_str()))
            .ok_or_else(|| ModelError::Config("config.json: missing `model_type`".into()))?;
        let arch = Architecture::parse(arch_name)?;
        let hidden = get_usize("hidden_size")?;
        let heads = get_usize("num_attention_heads")?;
        if heads == 0 {
            return Err(ModelError::Config("config.json: num_attention_heads is 0".into()));
        }
        let kv_heads = v.get("num_key_value_heads").and_then(|x| x.as_u64()).map(|x| x as usize).unwrap_or(heads);
        let head_dim = v.get("head_dim").and_then(|x| x.as_u64()).map(|x| x as usize).unwrap_or(hidden / heads);
        let f = |k: &str, d: f64| v.get(k).and_then(|x| x.as_f64()).unwrap_or(d);
        let rope_scaling = match v.get("rope_scaling").filter(|x| !x.is_null()) {
            None => RopeScaling::None,
            Some(rs) => {
                let kind = rs.get("rope_type").or_else(|| rs.get("type")).and_then(|x| x.as_str()).unwrap_or("");
                let g = |k: &str, d: f64| rs.get(k).and_then(|x| x.as_f64()).unwrap_or(d) as f32;
                match kind {
                    "llama3" => RopeScaling::Llama3 {
                        factor: g("factor", 8.0),
                        low_freq_factor: g("low_freq_factor", 1.0),
                        high_freq_factor: g("high_freq_factor", 4.0),
                        original_max_position: rs
                            .get("original_max_position_embeddings")
                            .and_then(|x| x.as_u64())
                            .unwrap_or(8192) as usize,
                    },
                    "linear" => RopeScaling::Linear { factor: g("factor", 1.0) },
                    "default" | "" => RopeScaling::None,
                    other => {
                        return Err(ModelError::Config(format!("config.json: unsupported rope_scaling type `{other}`")))
                    }
                }
            }
        };
        let cfg = ModelConfig {
            name: v.get("_name_or_path").and_then(|x| x.as_str()).unwrap_or(arch_name).to_string(),
            arch,
            hidden,
            intermediate: get_usize("intermediate_size")?,
            layers: get_usize("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            vocab: get_usize("vocab_size")?,
            context_length: get_usize("max_position_embeddings")?,
            rms_eps: f("rms_norm_eps", 1e-6) as f32,
            rope_theta: f("rope_theta", 10_000.0) as f32,
            rope_scaling,
            tie_embeddings: v.get("tie_word_embeddings").and_then(|x| x.as_bool()).unwrap_or(false),
            qkv_bias: arch == Architecture::Qwen2,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// A 2-layer Llama (hidden 64, 4 heads, 2 KV heads, D = 16, vocab 300, context 1024) small
    /// enough for token-by-token checks in tests of the crates built on this one.
    pub fn tiny_llama(tie_embeddings: bool) -> Self {
        let mut cfg = Self::named_shape("smollm2-135m").expect("the smollm2-135m shape is valid");
        cfg.name = "tiny-llama (random weights)".into();
        cfg.hidden = 64;
        cfg.intermediate = 96;
        cfg.layers = 2;
        cfg.heads = 4;
        cfg.kv_heads = 2;
        cfg.head_dim = 16;
        cfg.vocab = 300;
        cfg.context_length = 1024;
        cfg.tie_embeddings = tie_embeddings;
        cfg
    }

    /// Names accepted by [`ModelConfig::named_shape`].
    pub const NAMED_SHAPES: &'static [&'static str] = &["smollm2-135m", "llama-3-8b", "qwen2.5-7b", "mistral-7b"];

    /// Shapes of well-known models, for random-weight benchmarks.
    pub fn named_shape(name: &str) -> Result<Self> {
        let base =
            |arch, hidden, intermediate, layers, heads, kv_heads, vocab, ctx, theta: f32, tie, bias| ModelConfig {
                name: format!("{name} (random weights)"),
                arch,
                hidden,
                intermediate,
                layers,
                heads,
                kv_heads,
                head_dim: hidden / heads,
                vocab,
                context_length: ctx,
                rms_eps: 1e-5,
                rope_theta: theta,
                rope_scaling: RopeScaling::None,
                tie_embeddings: tie,
                qkv_bias: bias,
            };
        use Architecture::*;
        Ok(match name {
            "smollm2-135m" => base(Llama, 576, 1536, 30, 9, 3, 49152, 8192, 100_000.0, true, false),
            "llama-3-8b" => base(Llama, 4096, 14336, 32, 32, 8, 128_256, 1 << 20, 500_000.0, false, false),
            "qwen2.5-7b" => base(Qwen2, 3584, 18944, 28, 28, 4, 152_064, 1 << 20, 1_000_000.0, false, true),
            "mistral-7b" => base(Mistral, 4096, 14336, 32, 32, 8, 32_768, 32_768, 1_000_000.0, false, false),
            other => {
                return Err(ModelError::Config(format!(
                    "unknown model shape `{other}` (known: {})",
                    Self::NAMED_SHAPES.join(", ")
                )))
            }
        })
    }
}

fn meta_str(file: &GgufFile, key: &str) -> Result<String> {
    file.get(key)
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| ModelError::Config(format!("missing string metadata `{key}`")))
}

fn opt_usize(file: &GgufFile, key: &str) -> Result<Option<usize>> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| ModelError::Config(format!("metadata `{key}` is not a non-negative integer: {v:?}"))),
    }
}

fn meta_usize(file: &GgufFile, key: &str) -> Result<usize> {
    opt_usize(file, key)?.ok_or_else(|| ModelError::Config(format!("missing integer metadata `{key}`")))
}

fn opt_f64(file: &GgufFile, key: &str) -> Result<Option<f64>> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => {
            v.as_f64().map(Some).ok_or_else(|| ModelError::Config(format!("metadata `{key}` is not a number: {v:?}")))
        }
    }
}
