//! A loaded model: config, f32 weights and (when the files carry one) its tokenizer.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::source::SafetensorsDir;
use crate::structured::StructuredAttention;
use crate::tokenizer::Tokenizer;
use crate::weights::{NameScheme, Weights};
use std::path::Path;

pub struct Model {
    config: ModelConfig,
    pub(crate) weights: Weights,
    /// The tokenizer, or why there is none (kept so that token-id use still works).
    tokenizer: std::result::Result<Tokenizer, String>,
    random_weights: bool,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("config", &self.config).field("random_weights", &self.random_weights).finish()
    }
}

impl Model {
    /// Loads a GGUF file or an HF safetensors directory (`config.json` + `*.safetensors`).
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::load_safetensors_dir(path)
        } else if path.exists() {
            Self::load_gguf(path)
        } else {
            Err(ModelError::Io { path: path.display().to_string(), source: std::io::ErrorKind::NotFound.into() })
        }
    }

    pub fn load_gguf(path: &Path) -> Result<Self> {
        let file = GgufFile::open(path)?;
        Self::from_gguf(&file)
    }

    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let config = ModelConfig::from_gguf(file)?;
        let weights = Weights::load(&config, file, NameScheme::Gguf)?;
        let tokenizer = Tokenizer::from_gguf(file).map_err(|e| e.to_string());
        Ok(Model { config, weights, tokenizer, random_weights: false })
    }

    pub fn load_safetensors_dir(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
        let src = SafetensorsDir::open(dir)?;
        Self::from_safetensors(&text, &src, Tokenizer::from_hf_dir(dir))
    }

    /// A model from `config.json` text and opened shards (the tokenizer given or its error).
    pub fn from_safetensors(config_json: &str, src: &SafetensorsDir, tokenizer: Result<Tokenizer>) -> Result<Self> {
        let config = ModelConfig::from_hf_json(config_json)?;
        let weights = Weights::load(&config, src, NameScheme::HuggingFace)?;
        Ok(Model { config, weights, tokenizer: tokenizer.map_err(|e| e.to_string()), random_weights: false })
    }

    /// A model of a named shape (see [`ModelConfig::NAMED_SHAPES`]) with random weights;
    /// `layers` overrides the depth (full-size shapes need tens of GB in f32).
    pub fn random(shape: &str, layers: Option<usize>, seed: u64) -> Result<Self> {
        let mut config = ModelConfig::named_shape(shape)?;
        if let Some(l) = layers {
            config.layers = l;
        }
        Self::random_with_config(config, seed)
    }

    pub fn random_with_config(config: ModelConfig, seed: u64) -> Result<Self> {
        let weights = Weights::random(&config, seed)?;
        Ok(Model {
            config,
            weights,
            tokenizer: Err("random-weight models have no tokenizer; pass token ids".into()),
            random_weights: true,
        })
    }

    /// Random weights of `config` changed by the structured attention workload (see
    /// [`crate::structured`]): attention has sinks, a local band, far slashes and retrieval
    /// columns. `config` must have Q/K biases.
    pub fn random_structured(config: ModelConfig, seed: u64, workload: &StructuredAttention) -> Result<Self> {
        let design = workload.design(&config, seed)?;
        let mut weights = Weights::random(&config, seed)?;
        design.apply(&config, &mut weights)?;
        Ok(Model {
            config,
            weights,
            tokenizer: Err("random-weight models have no tokenizer; pass token ids".into()),
            random_weights: true,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The f32 weights (read by the GPU engine to upload them).
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The f32 weights to change in place (tests that scale one projection). Quantized blocks,
    /// where present, are not updated: decode would still read the old values.
    pub fn weights_mut(&mut self) -> &mut Weights {
        &mut self.weights
    }

    /// True for [`Model::random`] models: every reported output must say "random weights".
    pub fn has_random_weights(&self) -> bool {
        self.random_weights
    }

    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().map_err(|m| ModelError::Tokenizer(m.clone()))
    }
}
