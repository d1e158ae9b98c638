//! Flags shared by the commands that load a model and choose its prefill attention.

use anyhow::{bail, Context, Result};
use minference_core::config::ModelPatternConfig;
use minference_core::HeadPattern;
use minference_model::{AttentionChoice, MInferencePlan, Model};
use std::path::{Path, PathBuf};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKind {
    Dense,
    Minference,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// GGUF file or Hugging Face safetensors directory. Default: SmolLM2-135M-Instruct, fetched
    /// into ./models if absent.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// MInference per-head pattern config (MInference's JSON format). Default: the shipped config
    /// for the model if there is one (configs/), else VS(1000, 6096) on every head.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Layers below this one use dense attention (MInference's starting_layer).
    #[arg(long, default_value_t = 0)]
    pub starting_layer: usize,
    /// Prompts shorter than this many tokens run dense (the sparse path only pays off when long).
    #[arg(long, default_value_t = 0)]
    pub dense_below: usize,
}

/// Loads the model named by `--model` or the default one (fetching it when absent).
pub fn load_model(args: &ModelArgs) -> Result<Model> {
    let path = match &args.model {
        Some(p) => {
            if !p.exists() {
                bail!(
                    "model `{}` not found. Pass a GGUF file or a safetensors directory, or omit --model to use \
                     the default SmolLM2-135M-Instruct (scripts/fetch-model.sh downloads it)",
                    p.display()
                );
            }
            p.clone()
        }
        None => minference_model::ensure_default_model().context("fetching the default model")?,
    };
    Model::load(&path).with_context(|| format!("loading model {}", path.display()))
}

/// The shipped config for a model, found by its name under `configs/`.
fn shipped_config(model: &Model) -> Option<PathBuf> {
    let name = model.config().name.to_ascii_lowercase();
    let candidates = [("smollm2-135m", "smollm2-135m-instruct.json")];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    for (key, file) in candidates {
        if name.replace(' ', "-").contains(key) {
            for dir in [PathBuf::from("configs"), root.clone()] {
                let p = dir.join(file);
                if p.exists() {
                    return Some(p);
                }
            }
        }
    }
    None
}

/// Builds the prefill attention choice for `kind`.
pub fn attention_choice(args: &ModelArgs, model: &Model, kind: AttentionKind) -> Result<(AttentionChoice, String)> {
    if kind == AttentionKind::Dense {
        return Ok((AttentionChoice::Dense, "dense".into()));
    }
    let cfg = model.config();
    let config_path = args.config.clone().or_else(|| shipped_config(model));
    let (plan, what) = match config_path {
        Some(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading config {}", path.display()))?;
            let parsed = ModelPatternConfig::from_json_str(&text, &path.display().to_string())?;
            (MInferencePlan::from_config(cfg, &parsed)?, format!("minference ({})", path.display()))
        }
        None => (MInferencePlan::uniform(cfg, HeadPattern::DEFAULT), "minference (VS 1000/6096 on every head)".into()),
    };
    let plan = plan.with_starting_layer(args.starting_layer).with_dense_below(args.dense_below);
    Ok((AttentionChoice::MInference(plan), what))
}

/// Peak resident memory of this process (Linux VmHWM), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
