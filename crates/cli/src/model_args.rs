//! Flags shared by the commands that load a model and choose its prefill attention.

use anyhow::{bail, Context, Result};
use minference_core::config::ModelPatternConfig;
use minference_core::HeadPattern;
use minference_engine::{AttentionChoice, MInferencePlan};
use minference_model::{Model, ModelConfig};
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
    /// Instead of a model file: random weights of a named shape (smollm2-135m, llama-3-8b,
    /// qwen2.5-7b, mistral-7b), generated on the GPU (on the host for --device cpu). There is no
    /// tokenizer: prompts are token ids (`run --prompt-tokens N`, the server's `"prompt": [ids]`).
    #[arg(long, value_name = "SHAPE", conflicts_with = "model")]
    pub random_weights: Option<String>,
    /// With --random-weights: the model's depth (default: the shape's).
    #[arg(long, requires = "random_weights")]
    pub layers: Option<usize>,
    /// MInference per-head pattern config: MInference's JSON format (a list of layers), or a
    /// Hugging Face config.json holding it under `sparse_attention_config` (as SGLang reads it;
    /// its `sparse_attention_threshold` replaces `--dense-below auto` for run and serve). Default:
    /// the shipped config for the model if there is one (configs/), else VS(1000, 6096) on every head.
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

/// What `run` prints about the attention: a prompt under the plan's threshold runs dense.
pub fn describe_attention(what: &str, attention: &AttentionChoice, prompt_len: usize) -> String {
    match attention {
        AttentionChoice::MInference(p) if prompt_len < p.dense_below => {
            format!("{what}; dense for this prompt ({prompt_len} tokens < dense-below {})", p.dense_below)
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

/// Loads the model named by `--model` or the default one (fetching it when absent); the commands
/// that read text (the evals) refuse `--random-weights`.
pub fn load_model(args: &ModelArgs) -> Result<Model> {
    if let Some(shape) = &args.random_weights {
        bail!(
            "--random-weights {shape}: this command reads text, and random-weight models have no tokenizer;              they run with `run --prompt-tokens N`, `serve` and `bench serve`"
        );
    }
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
fn shipped_config(cfg: &ModelConfig) -> Option<PathBuf> {
    let name = cfg.name.to_ascii_lowercase();
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

/// A pattern config file: MInference's JSON, or an HF config.json's `sparse_attention_config`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    pub patterns: ModelPatternConfig,
    /// `sparse_attention_threshold` of an HF config.json (its default 32768 when the key is
    /// absent); `None` for MInference's format.
    pub hf_threshold: Option<usize>,
}

/// Reads `path` in either format (an object at the top level is an HF config.json). An HF config
/// without `sparse_attention_config`, with sparse attention disabled, or with a
/// `sparse_attention_last_q` other than the engine's 64 is an error naming the key.
pub fn load_pattern_config(path: &Path) -> Result<LoadedConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
    let file = path.display().to_string();
    if !minference_core::is_hf_config(&text) {
        return Ok(LoadedConfig { patterns: ModelPatternConfig::from_json_str(&text, &file)?, hf_threshold: None });
    }
    let hf = minference_core::read_hf_config(&text, &file)?;
    if !hf.enabled {
        bail!("{file}: sparse_attention_enabled is false; set it to true, or run with --attention dense");
    }
    if hf.last_q != minference_core::VS_LAST_Q {
        bail!(
            "{file}: sparse_attention_last_q = {}, but this engine estimates Vertical-Slash indices from the \
             last {} query rows; set it to {} or remove it",
            hf.last_q,
            minference_core::VS_LAST_Q,
            minference_core::VS_LAST_Q
        );
    }
    Ok(LoadedConfig { patterns: hf.patterns, hf_threshold: Some(hf.threshold) })
}

/// Builds the prefill attention choice for `kind`; prompts shorter than `dense_below` run dense.
/// `dense_below` is the caller's reading of `--dense-below` (the device crossover for run and
/// serve, 0 for the evals). With `--dense-below auto` and an HF config.json, run and serve use the
/// file's `sparse_attention_threshold` instead of the device crossover, as the serving stack
/// would; the evals (auto = 0, they measure the sparse path) and an explicit `--dense-below N`
/// are unchanged. Random weights get no shipped config (it was searched on the trained model):
/// VS(1000, 6096) on every head, as `bench e2e` runs them.
pub fn attention_choice(
    args: &ModelArgs,
    cfg: &ModelConfig,
    kind: AttentionKind,
    dense_below: usize,
) -> Result<(AttentionChoice, String)> {
    if kind == AttentionKind::Dense {
        return Ok((AttentionChoice::Dense, "dense".into()));
    }
    let shipped = if args.random_weights.is_some() { None } else { shipped_config(cfg) };
    let config_path = args.config.clone().or(shipped);
    let (plan, what) = match config_path {
        Some(path) => {
            let loaded = load_pattern_config(&path)?;
            let plan = MInferencePlan::from_config(cfg, &loaded.patterns)
                .with_context(|| format!("config {} does not fit model {}", path.display(), cfg.name))?;
            let dense_below = match (args.dense_below, loaded.hf_threshold) {
                (DenseBelow::Auto, Some(threshold)) if dense_below != 0 => threshold,
                _ => dense_below,
            };
            (plan.with_dense_below(dense_below), format!("minference ({})", path.display()))
        }
        None => (
            MInferencePlan::uniform(cfg, HeadPattern::DEFAULT).with_dense_below(dense_below),
            "minference (VS 1000/6096 on every head)".into(),
        ),
    };
    let plan = plan.with_starting_layer(args.starting_layer);
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
        let mut args = ModelArgs {
            model: None,
            random_weights: None,
            layers: None,
            config: None,
            starting_layer: 0,
            dense_below: DenseBelow::Auto,
        };
        assert_eq!((args.dense_below_for(true), args.dense_below_for(false)), (DENSE_BELOW_GPU, DENSE_BELOW_CPU));
        assert_eq!(args.dense_below.or_zero(), 0);
        args.dense_below = DenseBelow::Tokens(0);
        assert_eq!(args.dense_below_for(true), 0);
        let plan = AttentionChoice::MInference(
            MInferencePlan::uniform(&minference_model::ModelConfig::tiny_llama(true), HeadPattern::DEFAULT)
                .with_dense_below(8192),
        );
        assert!(describe_attention("vs", &plan, 100).contains("dense for this prompt"));
        assert_eq!(describe_attention("vs", &plan, 9000), "vs");
    }

    #[test]
    fn dense_below_zero_means_never_dense() {
        assert_eq!(parse_dense_below("0"), Ok(DenseBelow::Tokens(0)));
        assert_eq!(parse_dense_below("AUTO"), Ok(DenseBelow::Auto));
        assert_eq!(parse_dense_below("64k"), Ok(DenseBelow::Tokens(65536)));
        assert!(parse_dense_below("-1").is_err());
    }
}

#[cfg(test)]
mod hf_config_tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures").join(name)
    }

    fn args(config: PathBuf, dense_below: DenseBelow) -> ModelArgs {
        ModelArgs {
            model: None,
            random_weights: None,
            layers: None,
            config: Some(config),
            starting_layer: 0,
            dense_below,
        }
    }

    fn tiny() -> Model {
        Model::random_with_config(minference_model::ModelConfig::tiny_llama(true), 1).unwrap()
    }

    fn temp(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("minference-model-args-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn plan(choice: &AttentionChoice) -> &MInferencePlan {
        match choice {
            AttentionChoice::MInference(p) => p,
            AttentionChoice::Dense => panic!("expected a MInference plan"),
        }
    }

    #[test]
    fn an_hf_config_loads_like_the_minference_file_and_its_threshold_replaces_auto() {
        let model = tiny();
        let hf = args(fixture("hf_config_two_layers.json"), DenseBelow::Auto);
        let mi = args(fixture("minference_two_layers.json"), DenseBelow::Auto);
        let (a, _) = attention_choice(&hf, model.config(), AttentionKind::Minference, DENSE_BELOW_CPU).unwrap();
        let (b, _) = attention_choice(&mi, model.config(), AttentionKind::Minference, DENSE_BELOW_CPU).unwrap();
        assert_eq!(plan(&a).patterns, plan(&b).patterns);
        // The file says 4096; the MInference file keeps the device crossover.
        assert_eq!((plan(&a).dense_below, plan(&b).dense_below), (4096, DENSE_BELOW_CPU));
        // The evals (auto = 0) and an explicit --dense-below keep theirs.
        let (e, _) = attention_choice(&hf, model.config(), AttentionKind::Minference, 0).unwrap();
        assert_eq!(plan(&e).dense_below, 0);
        let explicit = args(fixture("hf_config_two_layers.json"), DenseBelow::Tokens(100));
        let (x, _) = attention_choice(&explicit, model.config(), AttentionKind::Minference, 100).unwrap();
        assert_eq!(plan(&x).dense_below, 100);
    }

    #[test]
    fn hf_config_problems_are_clear_errors() {
        let model = tiny();
        let fixture_text = std::fs::read_to_string(fixture("hf_config_two_layers.json")).unwrap();
        let cases: Vec<(PathBuf, &str)> = vec![
            (fixture("hf_config_no_key.json"), "sparse_attention_config"),
            (
                temp(
                    "disabled.json",
                    &fixture_text.replace("\"sparse_attention_enabled\": true", "\"sparse_attention_enabled\": false"),
                ),
                "sparse_attention_enabled is false",
            ),
            (
                temp(
                    "lastq.json",
                    &fixture_text.replace("\"sparse_attention_last_q\": 64", "\"sparse_attention_last_q\": 128"),
                ),
                "sparse_attention_last_q = 128",
            ),
            (temp("shape.json", r#"{"sparse_attention_config": [{}, {}, {}]}"#), "3 layers but the model has 2"),
            (
                temp("heads.json", r#"{"sparse_attention_config": [{"9": ["vertical_and_slash", 1, 1, 0]}, {}]}"#),
                "head id out of range",
            ),
            (
                temp("entry.json", r#"{"sparse_attention_config": [{"0": ["vertical_and_slash", 1]}, {}]}"#),
                "4 elements",
            ),
        ];
        for (path, needle) in cases {
            let a = args(path.clone(), DenseBelow::Auto);
            let err = attention_choice(&a, model.config(), AttentionKind::Minference, 0).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(needle) && msg.contains(&path.display().to_string()), "{needle}: {msg}");
        }
    }
}
