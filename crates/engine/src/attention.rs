//! Which attention each layer and head uses during prefill.

use minference_core::config::ModelPatternConfig;
use minference_core::HeadPattern;
use minference_model::ModelConfig;
use minference_model::{ModelError, Result};

/// Prefill attention: plain dense, or MInference with per-layer/per-head patterns.
#[derive(Debug, Clone, PartialEq)]
pub enum AttentionChoice {
    Dense,
    MInference(MInferencePlan),
}

#[derive(Debug, Clone, PartialEq)]
pub struct MInferencePlan {
    /// `patterns[layer][head]`, global query-head indices.
    pub patterns: Vec<Vec<HeadPattern>>,
    /// Layers before this one are dense (MInference's `starting_layer`; 0 = every layer sparse).
    pub starting_layer: usize,
    /// Prompts shorter than this many tokens run dense everywhere (the sparse path's estimation
    /// and index cost only pays off on long prompts; the benchmark measures where).
    pub dense_below: usize,
}

impl MInferencePlan {
    /// Every head of every layer uses `pattern`.
    pub fn uniform(cfg: &ModelConfig, pattern: HeadPattern) -> Self {
        Self::from_lookup(cfg, |_, _| pattern)
    }

    /// Patterns from a lookup such as `ModelPatternConfig::pattern(layer, head)`.
    pub fn from_lookup(cfg: &ModelConfig, mut lookup: impl FnMut(usize, usize) -> HeadPattern) -> Self {
        let patterns = (0..cfg.layers).map(|l| (0..cfg.heads).map(|h| lookup(l, h)).collect()).collect();
        MInferencePlan { patterns, starting_layer: 0, dense_below: 0 }
    }

    /// Patterns from an MInference config file, checked against the model's layers and heads.
    pub fn from_config(cfg: &ModelConfig, config: &ModelPatternConfig) -> Result<Self> {
        config.validate_model(cfg.layers, cfg.heads).map_err(|e| ModelError::Config(format!("pattern config: {e}")))?;
        let mut patterns = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let layer = (0..cfg.heads)
                .map(|h| config.pattern(l, h))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| ModelError::Config(format!("pattern config: {e}")))?;
            patterns.push(layer);
        }
        Ok(MInferencePlan { patterns, starting_layer: 0, dense_below: 0 })
    }

    pub fn with_starting_layer(mut self, layer: usize) -> Self {
        self.starting_layer = layer;
        self
    }

    pub fn with_dense_below(mut self, tokens: usize) -> Self {
        self.dense_below = tokens;
        self
    }

    /// The plan covers every layer and head of `cfg`.
    pub fn validate(&self, cfg: &ModelConfig) -> Result<()> {
        if self.patterns.len() != cfg.layers || self.patterns.iter().any(|l| l.len() != cfg.heads) {
            return Err(ModelError::Input(format!(
                "attention plan covers {} layers (of {} heads); the model has {} layers of {} heads",
                self.patterns.len(),
                self.patterns.first().map_or(0, Vec::len),
                cfg.layers,
                cfg.heads
            )));
        }
        Ok(())
    }
}

impl AttentionChoice {
    /// Patterns of `layer` for a prompt of `n` new tokens after `cached` ones; `None` = all dense.
    pub fn layer_patterns(&self, layer: usize, n: usize, cached: usize) -> Option<&[HeadPattern]> {
        match self {
            AttentionChoice::Dense => None,
            // A prefill on top of an existing cache and decode steps are always dense (spec §4.5).
            AttentionChoice::MInference(p) => {
                if cached > 0 || n < p.dense_below.max(2) || layer < p.starting_layer {
                    return None;
                }
                let pats = &p.patterns[layer];
                (!pats.iter().all(|h| *h == HeadPattern::Dense)).then_some(pats.as_slice())
            }
        }
    }
}
