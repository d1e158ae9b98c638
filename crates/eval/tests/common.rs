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
    minference_test_support::default_model()
}
