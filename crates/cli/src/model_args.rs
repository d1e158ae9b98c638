//! Flags shared by the commands that load a model and choose its prefill attention.

use anyhow::{bail, Context, Result};
use minference_core::config::ModelPatternConfig;
use minference_core::HeadPattern;
use minference_engine::{AttentionChoice, MInferencePlan};
use minference_model::Model;
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
    /// Prompts shorter than this many tokens run dense (the sparse path's estimation and index
    /// cost only pays off on long prompts). `auto` = the measured crossover of the device `run`
    /// uses (GPU 192K, CPU 8K; see DENSE_BELOW_*); `0` = never dense; the evals take `auto` as 0, since they measure
    /// the sparse path itself.
    #[arg(long, default_value = "auto", value_parser = parse_dense_below)]
    pub dense_below: DenseBelow,
}

/// `--dense-below`: the measured default, or a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseBelow {
    Auto,
    Tokens(usize),
}

impl DenseBelow {
    /// The length for the evals, where `auto` means 0 (they measure the sparse path itself).
    pub fn or_zero(self) -> usize {
        match self {
            DenseBelow::Auto => 0,
            DenseBelow::Tokens(n) => n,
        }
    }
}

/// Break-even of MInference against dense on the GPU: `minference bench e2e --random-weights
/// --shape qwen2.5-7b --attention dense,minference --lengths 32k,64k,128k,192k,256k` on an H200,
/// 2026-12-01, with the Hopper dense kernel (574 TF/s; the VS kernel did not speed up as much):
/// MInference/dense TTFT 0.69× at 32K, 0.79× at 64K, 0.92× at 128K, 0.98× at 192K, 1.10× at 256K.
/// Random weights make VS nearly dense, so a trained model breaks even earlier.
pub const DENSE_BELOW_GPU: usize = 192 * 1024;
/// The same on the CPU: `minference bench cpu --lengths 2k,4k,8k,16k` (structured workload),
/// 2026-11-26: VS 0.75× at 2K, 0.88× at 4K, 1.18× at 8K, 1.82× at 16K.
pub const DENSE_BELOW_CPU: usize = 8 * 1024;

/// `auto`, `0` (never dense, as in the evals) or a length such as `64k`.
fn parse_dense_below(s: &str) -> Result<DenseBelow, String> {
    match s.trim() {
        t if t.eq_ignore_ascii_case("auto") => Ok(DenseBelow::Auto),
        "0" => Ok(DenseBelow::Tokens(0)),
        t => crate::lengths::parse_length(t).map(DenseBelow::Tokens),
    }
}

/// What `run` prints about the attention: a prompt under the threshold runs dense.
pub fn describe_attention(what: &str, attention: &AttentionChoice, prompt_len: usize, dense_below: usize) -> String {
    match attention {
        AttentionChoice::MInference(_) if prompt_len < dense_below => {
            format!("{what}; dense for this prompt ({prompt_len} tokens < --dense-below {dense_below})")
        }
        _ => what.to_string(),
    }
}

impl ModelArgs {
    /// `--dense-below` for a prefill on the GPU (`gpu`) or the CPU.
    pub fn dense_below_for(&self, gpu: bool) -> usize {
        match self.dense_below {
            DenseBelow::Auto if gpu => DENSE_BELOW_GPU,
            DenseBelow::Auto => DENSE_BELOW_CPU,
            DenseBelow::Tokens(n) => n,
        }
    }
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

/// Builds the prefill attention choice for `kind`; prompts shorter than `dense_below` run dense.
pub fn attention_choice(
    args: &ModelArgs,
    model: &Model,
    kind: AttentionKind,
    dense_below: usize,
) -> Result<(AttentionChoice, String)> {
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
    let plan = plan.with_starting_layer(args.starting_layer).with_dense_below(dense_below);
    Ok((AttentionChoice::MInference(plan), what))
}

/// Peak resident memory of this process (Linux VmHWM), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod dense_below_tests {
    use super::*;

    #[test]
    fn auto_resolves_per_device_and_numbers_are_kept() {
        assert_eq!(parse_dense_below("auto"), Ok(DenseBelow::Auto));
        assert_eq!(parse_dense_below("32k"), Ok(DenseBelow::Tokens(32 * 1024)));
        assert!(parse_dense_below("soon").is_err());
        let mut args = ModelArgs { model: None, config: None, starting_layer: 0, dense_below: DenseBelow::Auto };
        assert_eq!((args.dense_below_for(true), args.dense_below_for(false)), (DENSE_BELOW_GPU, DENSE_BELOW_CPU));
        assert_eq!(args.dense_below.or_zero(), 0);
        args.dense_below = DenseBelow::Tokens(0);
        assert_eq!(args.dense_below_for(true), 0);
        let plan = AttentionChoice::MInference(MInferencePlan::uniform(
            &minference_model::ModelConfig::tiny_llama(true),
            HeadPattern::DEFAULT,
        ));
        assert!(describe_attention("vs", &plan, 100, 8192).contains("dense for this prompt"));
        assert_eq!(describe_attention("vs", &plan, 9000, 8192), "vs");
    }

    #[test]
    fn dense_below_zero_means_never_dense() {
        assert_eq!(parse_dense_below("0"), Ok(DenseBelow::Tokens(0)));
        assert_eq!(parse_dense_below("AUTO"), Ok(DenseBelow::Auto));
        assert_eq!(parse_dense_below("64k"), Ok(DenseBelow::Tokens(65536)));
        assert!(parse_dense_below("-1").is_err());
    }
}
