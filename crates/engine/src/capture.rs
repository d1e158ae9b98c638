//! Writing captured Q/K to a safetensors file, for attention benchmarks on real indices.

use crate::observer::CapturedQk;
use minference_model::{ModelError, Result};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::Path;

/// Writes tensors `q` and `k` (f32, `[tokens, head_dim]`) with layer/head/model in the metadata.
pub fn save_qk(path: &Path, qk: &CapturedQk, model_name: &str) -> Result<()> {
    let to_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (qb, kb) = (to_bytes(&qk.q), to_bytes(&qk.k));
    let shape = vec![qk.tokens, qk.head_dim];
    let kv_tokens = qk.k.len() / qk.head_dim.max(1);
    let err = |e: safetensors::SafeTensorError| ModelError::Safetensors(e.to_string());
    let q = TensorView::new(Dtype::F32, shape, &qb).map_err(err)?;
    let k = TensorView::new(Dtype::F32, vec![kv_tokens, qk.head_dim], &kb).map_err(err)?;
    let meta: HashMap<String, String> = [
        ("layer".to_string(), qk.layer.to_string()),
        ("head".to_string(), qk.head.to_string()),
        ("model".to_string(), model_name.to_string()),
        ("layout".to_string(), "[tokens, head_dim], after RoPE".to_string()),
    ]
    .into_iter()
    .collect();
    safetensors::serialize_to_file([("q", q), ("k", k)], Some(meta), path).map_err(err)
}
