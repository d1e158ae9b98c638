//! The model of `run`, `serve` and `bench serve`: a model file (`--model`, or the default), or
//! random weights of a named shape (`--random-weights SHAPE [--layers N]`), made ready for where
//! the command runs.

use crate::engines::{EngineWeights, Placement};
use crate::model_args::{load_model, ModelArgs};
use crate::random_weights;
use anyhow::{Context, Result};
use minference_model::{Model, ModelConfig, Tokenizer};
use minference_server::ServedModel;
use std::sync::Arc;

pub enum LoadedModel {
    /// A model file, or random weights generated on the host for the CPU engine.
    Host(Arc<Model>),
    /// Random weights that each GPU engine generates on its device (a 7B shape in f32 would take
    /// tens of GB of host memory and minutes to upload).
    OnDevice(ModelConfig),
}

impl LoadedModel {
    /// What `args` names, for `placement`.
    pub fn load(args: &ModelArgs, placement: Placement) -> Result<LoadedModel> {
        let Some(shape) = &args.random_weights else {
            return Ok(LoadedModel::Host(Arc::new(load_model(args)?)));
        };
        let config = random_weights::shape_config(shape, args.layers)?;
        Ok(match placement {
            Placement::Cpu => {
                let model = Model::random_with_config(config, random_weights::SEED)
                    .with_context(|| format!("random weights of the {shape} shape"))?;
                LoadedModel::Host(Arc::new(model))
            }
            Placement::Gpus { .. } => LoadedModel::OnDevice(config),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        match self {
            LoadedModel::Host(m) => m.config(),
            LoadedModel::OnDevice(c) => c,
        }
    }

    pub fn has_random_weights(&self) -> bool {
        match self {
            LoadedModel::Host(m) => m.has_random_weights(),
            LoadedModel::OnDevice(_) => true,
        }
    }

    /// The tokenizer; `None` for random weights (prompts are token ids).
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        match self {
            LoadedModel::Host(m) => m.tokenizer().ok(),
            LoadedModel::OnDevice(_) => None,
        }
    }

    /// The weights of one more engine: host engines share the model, device ones regenerate it.
    pub fn engine_weights(&self) -> EngineWeights {
        match self {
            LoadedModel::Host(m) => EngineWeights::Model(Arc::clone(m)),
            LoadedModel::OnDevice(c) => {
                EngineWeights::Random { config: c.clone(), seed: random_weights::SEED, structured: None }
            }
        }
    }

    /// The model as the server sees it.
    pub fn served(&self) -> ServedModel {
        match self {
            LoadedModel::Host(m) => ServedModel::Loaded(Arc::clone(m)),
            LoadedModel::OnDevice(c) => ServedModel::Config(c.clone()),
        }
    }
}
