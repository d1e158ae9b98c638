//! Test helpers: the default model's path (tests skip when it is absent) and a builder for small
//! synthetic GGUF files.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn default_model() -> Option<PathBuf> {
    minference_test_support::default_model()
}

pub fn fixture(name: &str) -> serde_json::Value {
    // Shared by the model and engine crates' tests: both find the fixtures in the model crate.
    let path =
        minference_test_support::crate_dir(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Builds GGUF v3 bytes: metadata key/values, then tensor infos and aligned data.
pub struct GgufBuilder {
    pub version: u32,
    pub alignment: usize,
    kv: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn gguf_str(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

impl GgufBuilder {
    pub fn new() -> Self {
        GgufBuilder { version: 3, alignment: 32, kv: Vec::new(), tensors: Vec::new() }
    }
    pub fn raw_kv(&mut self, key: &str, ty: u32, payload: Vec<u8>) -> &mut Self {
        self.kv.push((key.to_string(), ty, payload));
        self
    }
    pub fn string(&mut self, key: &str, v: &str) -> &mut Self {
        self.raw_kv(key, 8, gguf_str(v))
    }
    pub fn u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.raw_kv(key, 4, v.to_le_bytes().to_vec())
    }
    pub fn f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.raw_kv(key, 6, v.to_le_bytes().to_vec())
    }
    pub fn bool(&mut self, key: &str, v: bool) -> &mut Self {
        self.raw_kv(key, 7, vec![v as u8])
    }
    pub fn str_array(&mut self, key: &str, items: &[String]) -> &mut Self {
        let mut p = 8u32.to_le_bytes().to_vec();
        p.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for s in items {
            p.extend_from_slice(&gguf_str(s));
        }
        self.raw_kv(key, 9, p)
    }
    pub fn i32_array(&mut self, key: &str, items: &[i32]) -> &mut Self {
        let mut p = 5u32.to_le_bytes().to_vec();
        p.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for v in items {
            p.extend_from_slice(&v.to_le_bytes());
        }
        self.raw_kv(key, 9, p)
    }
    /// `dims` in GGML order (fastest first).
    pub fn tensor_raw(&mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.to_string(), dims.to_vec(), ty, data));
        self
    }
    pub fn tensor_f32(&mut self, name: &str, dims: &[u64], data: &[f32]) -> &mut Self {
        self.tensor_raw(name, dims, 0, data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, ty, p) in &self.kv {
            out.extend_from_slice(&gguf_str(k));
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(p);
        }
        let align = |x: usize| x.div_ceil(self.alignment) * self.alignment;
        let mut offset = 0usize;
        let mut offsets = Vec::new();
        for (_, _, _, data) in &self.tensors {
            offsets.push(offset);
            offset = align(offset + data.len());
        }
        for ((name, dims, ty, _), off) in self.tensors.iter().zip(&offsets) {
            out.extend_from_slice(&gguf_str(name));
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(*off as u64).to_le_bytes());
        }
        out.resize(align(out.len()), 0);
        let data_start = out.len();
        for ((_, _, _, data), off) in self.tensors.iter().zip(&offsets) {
            out.resize(data_start + off, 0);
            out.extend_from_slice(data);
        }
        out
    }
}

/// GPT-2's byte → printable character map (the byte-level BPE alphabet).
pub fn byte_level_alphabet() -> Vec<String> {
    let mut printable: Vec<u32> = ('!' as u32..='~' as u32).collect();
    printable.extend('¡' as u32..='¬' as u32);
    printable.extend('®' as u32..='ÿ' as u32);
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            let c = if printable.contains(&b) {
                b
            } else {
                extra += 1;
                255 + extra
            };
            char::from_u32(c).map(String::from).unwrap_or_default()
        })
        .collect()
}

pub struct TinyShape {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub context: usize,
}

pub const TINY: TinyShape = TinyShape { hidden: 32, heads: 4, kv_heads: 2, intermediate: 48, layers: 2, context: 512 };

/// A complete tiny Llama GGUF with a byte-level BPE tokenizer (256 bytes + merges "h e", "l l"
/// + ChatML specials) and deterministic pseudo-random weights.
pub fn tiny_llama(shape: &TinyShape, arch: &str) -> GgufBuilder {
    tiny_llama_with_pre(shape, arch, "default")
}

/// As [`tiny_llama`], with `tokenizer.ggml.pre` = `pre`.
pub fn tiny_llama_with_pre(shape: &TinyShape, arch: &str, pre: &str) -> GgufBuilder {
    let mut tokens = byte_level_alphabet();
    tokens.push("he".into());
    tokens.push("ll".into());
    let n_normal = tokens.len();
    tokens.push("<|im_start|>".into());
    tokens.push("<|im_end|>".into());
    let vocab = tokens.len();
    let mut types = vec![1i32; n_normal];
    types.extend([3, 3]);
    let mut b = GgufBuilder::new();
    b.string("general.architecture", arch)
        .string("general.name", "tiny test model")
        .u32(&format!("{arch}.block_count"), shape.layers as u32)
        .u32(&format!("{arch}.context_length"), shape.context as u32)
        .u32(&format!("{arch}.embedding_length"), shape.hidden as u32)
        .u32(&format!("{arch}.feed_forward_length"), shape.intermediate as u32)
        .u32(&format!("{arch}.attention.head_count"), shape.heads as u32)
        .u32(&format!("{arch}.attention.head_count_kv"), shape.kv_heads as u32)
        .f32(&format!("{arch}.rope.freq_base"), 10000.0)
        .f32(&format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-5)
        .string("tokenizer.ggml.model", "gpt2")
        .string("tokenizer.ggml.pre", pre)
        .str_array("tokenizer.ggml.tokens", &tokens)
        .i32_array("tokenizer.ggml.token_type", &types)
        .str_array("tokenizer.ggml.merges", &["h e".to_string(), "l l".to_string()])
        .u32("tokenizer.ggml.bos_token_id", (vocab - 2) as u32)
        .u32("tokenizer.ggml.eos_token_id", (vocab - 1) as u32);
    let mut seed = 12345u64;
    let mut rand = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    };
    let (h, hd) = (shape.hidden, shape.hidden / shape.heads);
    let (q, kv, i) = (shape.hidden, shape.kv_heads * hd, shape.intermediate);
    let s = 1.0 / (h as f32).sqrt();
    b.tensor_f32("token_embd.weight", &[h as u64, vocab as u64], &rand(h * vocab, 1.0));
    for l in 0..shape.layers {
        let n = |x: &str| format!("blk.{l}.{x}.weight");
        b.tensor_f32(&n("attn_norm"), &[h as u64], &vec![1.0; h]);
        b.tensor_f32(&n("attn_q"), &[h as u64, q as u64], &rand(h * q, s * 2.0));
        b.tensor_f32(&n("attn_k"), &[h as u64, kv as u64], &rand(h * kv, s * 2.0));
        b.tensor_f32(&n("attn_v"), &[h as u64, kv as u64], &rand(h * kv, s));
        if arch == "qwen2" {
            let bias = |x: &str| format!("blk.{l}.{x}.bias");
            b.tensor_f32(&bias("attn_q"), &[q as u64], &rand(q, 0.5));
            b.tensor_f32(&bias("attn_k"), &[kv as u64], &rand(kv, 0.5));
            b.tensor_f32(&bias("attn_v"), &[kv as u64], &rand(kv, 0.5));
        }
        b.tensor_f32(&n("attn_output"), &[q as u64, h as u64], &rand(q * h, s));
        b.tensor_f32(&n("ffn_norm"), &[h as u64], &vec![1.0; h]);
        b.tensor_f32(&n("ffn_gate"), &[h as u64, i as u64], &rand(h * i, s));
        b.tensor_f32(&n("ffn_up"), &[h as u64, i as u64], &rand(h * i, s));
        b.tensor_f32(&n("ffn_down"), &[i as u64, h as u64], &rand(i * h, 1.0 / (i as f32).sqrt()));
    }
    b.tensor_f32("output_norm.weight", &[h as u64], &vec![1.0; h]);
    b
}
