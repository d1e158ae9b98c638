//! Shared test helpers: a tiny random-weight Llama and the real model's path (tests skip without it).
#![allow(dead_code)]

use minference_model::{Model, ModelConfig};
use std::path::PathBuf;

/// A 2-layer Llama small enough for token-by-token checks; `tied` shares the embedding as LM head.
pub fn tiny_model(tied: bool) -> Model {
    let cfg = ModelConfig::tiny_llama(tied);
    Model::random_with_config(cfg, 7).unwrap_or_else(|e| panic!("{e}"))
}

pub fn real_model() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("SKIPPED: {} not found; run scripts/fetch-model.sh", path.display());
        None
    }
}
