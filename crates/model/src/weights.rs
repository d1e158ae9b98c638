//! Model weights held in f32 (dequantized at load, for prefill's sgemm), and for block-quantized
//! GGUF tensors also their blocks as stored (decode's matrix-vector products read those), and their
//! loading from a `TensorSource`.

use crate::config::{Architecture, ModelConfig};
use crate::error::Result;
use crate::gguf::quant::QuantMatrix;
use crate::source::TensorSource;

/// A linear layer `y = x · Wᵀ (+ b)` with `W` row-major `[out, in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub out_dim: usize,
    pub in_dim: usize,
    /// The same `[out, in]` matrix in its GGML blocks, when the file stores it quantized.
    pub quant: Option<QuantMatrix>,
}

#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub mlp_norm: Vec<f32>,
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
}

#[derive(Debug, Clone)]
pub struct Weights {
    /// `[vocab, hidden]`.
    pub embed: Vec<f32>,
    /// `embed` in its GGML blocks, when quantized (the tied LM head of a decode step reads it).
    pub embed_quant: Option<QuantMatrix>,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>,
    /// `None` when tied to `embed`.
    pub lm_head: Option<Linear>,
}

/// Tensor naming of the two formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameScheme {
    Gguf,
    HuggingFace,
}

#[derive(Clone, Copy)]
enum Part {
    AttnNorm,
    Q,
    K,
    V,
    O,
    MlpNorm,
    Gate,
    Up,
    Down,
}

impl NameScheme {
    fn layer(self, layer: usize, part: Part, bias: bool) -> String {
        let suffix = if bias { "bias" } else { "weight" };
        match self {
            NameScheme::Gguf => {
                let p = match part {
                    Part::AttnNorm => "attn_norm",
                    Part::Q => "attn_q",
                    Part::K => "attn_k",
                    Part::V => "attn_v",
                    Part::O => "attn_output",
                    Part::MlpNorm => "ffn_norm",
                    Part::Gate => "ffn_gate",
                    Part::Up => "ffn_up",
                    Part::Down => "ffn_down",
                };
                format!("blk.{layer}.{p}.{suffix}")
            }
            NameScheme::HuggingFace => {
                let p = match part {
                    Part::AttnNorm => "input_layernorm",
                    Part::Q => "self_attn.q_proj",
                    Part::K => "self_attn.k_proj",
                    Part::V => "self_attn.v_proj",
                    Part::O => "self_attn.o_proj",
                    Part::MlpNorm => "post_attention_layernorm",
                    Part::Gate => "mlp.gate_proj",
                    Part::Up => "mlp.up_proj",
                    Part::Down => "mlp.down_proj",
                };
                format!("model.layers.{layer}.{p}.{suffix}")
            }
        }
    }

    fn embed(self) -> &'static str {
        match self {
            NameScheme::Gguf => "token_embd.weight",
            NameScheme::HuggingFace => "model.embed_tokens.weight",
        }
    }
    fn final_norm(self) -> &'static str {
        match self {
            NameScheme::Gguf => "output_norm.weight",
            NameScheme::HuggingFace => "model.norm.weight",
        }
    }
    fn lm_head(self) -> &'static str {
        match self {
            NameScheme::Gguf => "output.weight",
            NameScheme::HuggingFace => "lm_head.weight",
        }
    }
}

/// The source row of each destination row of `unpermute_rope_rows` (heads × head_dim rows).
fn unpermute_map(heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    let mut src_of = vec![0usize; heads * head_dim];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                src_of[h * head_dim + j * half + i] = h * head_dim + 2 * i + j;
            }
        }
    }
    src_of
}

/// llama.cpp's converter reorders each head's Q/K rows from HF's half-split RoPE layout
/// (pairs `(i, i + D/2)`) to interleaved pairs `(2i, 2i + 1)`; this undoes it so one RoPE
/// implementation (half-split) serves every format. `rows` = heads × head_dim.
pub fn unpermute_rope_rows(w: &[f32], heads: usize, head_dim: usize, row_len: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * head_dim + 2 * i + j;
                let dst = h * head_dim + j * half + i;
                out[dst * row_len..(dst + 1) * row_len].copy_from_slice(&w[src * row_len..(src + 1) * row_len]);
            }
        }
    }
    out
}

impl Weights {
    pub fn load(cfg: &ModelConfig, src: &dyn TensorSource, scheme: NameScheme) -> Result<Self> {
        let h = cfg.hidden;
        // GGUF Llama/Mistral Q/K are stored interleaved for llama.cpp's RoPE; Qwen2 is not permuted.
        let unpermute = scheme == NameScheme::Gguf && cfg.arch != Architecture::Qwen2;
        let linear = |layer: usize,
                      part: Part,
                      out_dim: usize,
                      in_dim: usize,
                      bias: bool,
                      rope_heads: usize|
         -> Result<Linear> {
            let mut weight = src.load_shaped(&scheme.layer(layer, part, false), &[out_dim, in_dim])?;
            let mut b = if bias { Some(src.load_shaped(&scheme.layer(layer, part, true), &[out_dim])?) } else { None };
            let mut quant =
                src.load_quantized(&scheme.layer(layer, part, false)).filter(|q| q.rows == out_dim && q.cols == in_dim);
            if unpermute && rope_heads > 0 {
                weight = unpermute_rope_rows(&weight, rope_heads, cfg.head_dim, in_dim);
                b = b.map(|b| unpermute_rope_rows(&b, rope_heads, cfg.head_dim, 1));
                quant = quant.map(|q| q.permute_rows(&unpermute_map(rope_heads, cfg.head_dim)));
            }
            Ok(Linear { weight, bias: b, out_dim, in_dim, quant })
        };
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            layers.push(LayerWeights {
                attn_norm: src.load_shaped(&scheme.layer(l, Part::AttnNorm, false), &[h])?,
                wq: linear(l, Part::Q, cfg.q_dim(), h, cfg.qkv_bias, cfg.heads)?,
                wk: linear(l, Part::K, cfg.kv_dim(), h, cfg.qkv_bias, cfg.kv_heads)?,
                wv: linear(l, Part::V, cfg.kv_dim(), h, cfg.qkv_bias, 0)?,
                wo: linear(l, Part::O, h, cfg.q_dim(), false, 0)?,
                mlp_norm: src.load_shaped(&scheme.layer(l, Part::MlpNorm, false), &[h])?,
                w_gate: linear(l, Part::Gate, cfg.intermediate, h, false, 0)?,
                w_up: linear(l, Part::Up, cfg.intermediate, h, false, 0)?,
                w_down: linear(l, Part::Down, h, cfg.intermediate, false, 0)?,
            });
        }
        let lm_head = if cfg.tie_embeddings || src.shape(scheme.lm_head()).is_none() {
            None
        } else {
            Some(Linear {
                weight: src.load_shaped(scheme.lm_head(), &[cfg.vocab, h])?,
                bias: None,
                out_dim: cfg.vocab,
                in_dim: h,
                quant: src.load_quantized(scheme.lm_head()).filter(|q| q.rows == cfg.vocab && q.cols == h),
            })
        };
        Ok(Weights {
            embed: src.load_shaped(scheme.embed(), &[cfg.vocab, h])?,
            embed_quant: src.load_quantized(scheme.embed()).filter(|q| q.rows == cfg.vocab && q.cols == h),
            layers,
            final_norm: src.load_shaped(scheme.final_norm(), &[h])?,
            lm_head,
        })
    }

    /// Random weights of a shape (benchmarks without weight files). Scales keep activations O(1).
    pub fn random(cfg: &ModelConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let mut rng = minference_core::rng::SplitMix64::new(seed);
        let mut mat = |rows: usize, cols: usize| -> Vec<f32> {
            let scale = (3.0 / cols as f32).sqrt();
            (0..rows * cols).map(|_| ((rng.uniform() as f32) * 2.0 - 1.0) * scale).collect()
        };
        let lin = |w: Vec<f32>, out_dim, in_dim, bias: bool| Linear {
            weight: w,
            bias: bias.then(|| vec![0.0; out_dim]),
            out_dim,
            in_dim,
            quant: None,
        };
        let h = cfg.hidden;
        let layers = (0..cfg.layers)
            .map(|_| LayerWeights {
                attn_norm: vec![1.0; h],
                wq: lin(mat(cfg.q_dim(), h), cfg.q_dim(), h, cfg.qkv_bias),
                wk: lin(mat(cfg.kv_dim(), h), cfg.kv_dim(), h, cfg.qkv_bias),
                wv: lin(mat(cfg.kv_dim(), h), cfg.kv_dim(), h, cfg.qkv_bias),
                wo: lin(mat(h, cfg.q_dim()), h, cfg.q_dim(), false),
                mlp_norm: vec![1.0; h],
                w_gate: lin(mat(cfg.intermediate, h), cfg.intermediate, h, false),
                w_up: lin(mat(cfg.intermediate, h), cfg.intermediate, h, false),
                w_down: lin(mat(h, cfg.intermediate), h, cfg.intermediate, false),
            })
            .collect();
        let embed = mat(cfg.vocab, h);
        let lm_head = (!cfg.tie_embeddings).then(|| lin(mat(cfg.vocab, h), cfg.vocab, h, false));
        Ok(Weights { embed, embed_quant: None, layers, final_norm: vec![1.0; h], lm_head })
    }
}
