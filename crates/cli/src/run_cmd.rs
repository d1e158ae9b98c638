//! `minference run`: chat-templated (or raw) prompt → MInference prefill → streamed answer.

use crate::engines::{open_engine, PlacementArgs};
use crate::loaded_model::LoadedModel;
use crate::model_args::{attention_choice, peak_rss_bytes, AttentionKind, ModelArgs};
use crate::progress::{layer_bar, tick};
use anyhow::{anyhow, bail, Context, Result};
use minference_engine::{generate, AttentionChoice, GenerateOptions, Generation, PrefillEngine, Sampler, TextStream};
use minference_model::Tokenizer;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text.
    #[arg(long, conflicts_with = "prompt_file", required_unless_present_any = ["prompt_file", "prompt_tokens"])]
    pub prompt: Option<String>,
    /// Read the prompt from a UTF-8 file.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// The prompt is N seeded pseudo-random token ids (the ones `bench e2e` and `bench serve` time
    /// at that length): no tokenizer needed, so this is how random weights run.
    #[arg(long, value_name = "N", conflicts_with_all = ["prompt", "prompt_file", "raw"], value_parser = crate::lengths::parse_length)]
    pub prompt_tokens: Option<usize>,
    #[arg(long, value_enum, default_value_t = AttentionKind::Minference)]
    pub attention: AttentionKind,
    #[command(flatten)]
    pub placement: PlacementArgs,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use the prompt verbatim instead of applying the model's chat template.
    #[arg(long)]
    pub raw: bool,
    /// Allow prompts longer than the model's context (RoPE extrapolation; quality not guaranteed).
    #[arg(long)]
    pub allow_context_extension: bool,
}

pub fn read_prompt(prompt: &Option<String>, file: &Option<PathBuf>) -> Result<String> {
    match (prompt, file) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(f)) => {
            let bytes = std::fs::read(f).with_context(|| format!("reading prompt file {}", f.display()))?;
            String::from_utf8(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "prompt file {} is not UTF-8 (invalid byte at offset {})",
                    f.display(),
                    e.utf8_error().valid_up_to()
                )
            })
        }
        (None, None) => bail!("give --prompt or --prompt-file"),
    }
}

/// `prompt` through `engine` as `run` runs it: a per-layer bar on stderr, the answer streamed to
/// `out` as it comes (text, or token ids separated by spaces for a model without a tokenizer).
pub fn generate_streamed(
    engine: &mut dyn PrefillEngine,
    prompt: &[u32],
    attention: &AttentionChoice,
    opts: &GenerateOptions,
    tokenizer: Option<&Tokenizer>,
    out: &mut dyn Write,
) -> Result<Generation> {
    let bar = layer_bar(prompt.len(), engine.config().layers, "prefill");
    let mut first = true;
    let mut stream = TextStream::new();
    let gen = generate(engine, prompt, attention, opts, &mut tick(&bar), &mut |id| {
        if first {
            bar.finish_and_clear();
        }
        match tokenizer {
            Some(t) => {
                if let Ok(piece) = stream.push(t, id) {
                    let _ = out.write_all(piece.as_bytes());
                }
            }
            None => {
                let _ = write!(out, "{}{id}", if first { "" } else { " " });
            }
        }
        let _ = out.flush();
        first = false;
        true
    })?;
    bar.finish_and_clear();
    Ok(gen)
}

pub fn run(args: &RunArgs) -> Result<()> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!("--temperature must be a finite number >= 0");
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1]");
    }
    if args.model.random_weights.is_some() && args.prompt_tokens.is_none() {
        bail!("--random-weights: the model has no tokenizer; give the prompt as --prompt-tokens N (seeded token ids)");
    }
    let placement = args.placement.resolve()?;
    let model = LoadedModel::load(&args.model, placement)?;
    let tokenizer = model.tokenizer();
    let (prompt, what_prompt) = match args.prompt_tokens {
        Some(n) => (crate::random_weights::prompt(model.config(), n)?, "seeded token ids"),
        None => {
            let text = read_prompt(&args.prompt, &args.prompt_file)?;
            let t =
                tokenizer.ok_or_else(|| anyhow!("{} has no tokenizer; pass --prompt-tokens N", model.config().name))?;
            let prompt_text = if args.raw { text } else { t.chat_prompt(&text, None) };
            (t.encode_prompt(&prompt_text)?, "tokens")
        }
    };
    let dense_below = args.model.dense_below_for(placement.is_gpu());
    let (attention, what) = attention_choice(&args.model, model.config(), args.attention, dense_below)?;
    let what = crate::model_args::describe_attention(&what, &attention, prompt.len());
    let name = &model.config().name;
    let random = if model.has_random_weights() && !name.contains("random weights") { " [random weights]" } else { "" };
    let mut engine = open_engine(model.engine_weights(), placement, args.placement.precision)?;
    eprintln!(
        "model {name}{random} | device {} | attention {what} | prompt {} {what_prompt}",
        engine.device_name(),
        prompt.len()
    );
    engine.set_allow_context_extension(args.allow_context_extension)?;
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampler: if args.temperature == 0.0 {
            Sampler::greedy()
        } else {
            Sampler::new(args.temperature, args.top_p, args.seed)
        },
        stop_tokens: tokenizer.map(|t| t.stop_tokens.clone()).unwrap_or_default(),
    };
    let gen = generate_streamed(engine.as_mut(), &prompt, &attention, &opts, tokenizer, &mut std::io::stdout())?;
    println!();
    let p = &gen.prefill;
    let decoded = gen.tokens.len().saturating_sub(1).max(1);
    let (used, total) = engine.memory().unwrap_or((0, 0));
    eprintln!(
        "time to first token {:.3} s | prefill {:.1} tok/s ({} tokens; attention {:.1} ms = estimate {:.1} + index {:.1} + kernel {:.1}) | decode {:.1} tok/s ({} tokens) | device memory in use {} of {} | host peak {}",
        p.seconds,
        p.tokens as f64 / p.seconds.max(1e-9),
        p.tokens,
        p.attention_total_ms(),
        p.estimate_ms,
        p.index_ms,
        p.attention_ms,
        decoded as f64 / gen.decode_seconds.max(1e-9),
        gen.tokens.len(),
        fmt_bytes(used),
        fmt_bytes(total),
        peak_rss_bytes().map(fmt_bytes).unwrap_or_else(|| "n/a".into())
    );
    Ok(())
}

pub fn fmt_bytes(b: u64) -> String {
    let gib = b as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.2} GiB")
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}
