//! `minference run`: chat-templated (or raw) prompt → MInference prefill → streamed answer.

use crate::engines::{open_engine, EngineWeights, PlacementArgs};
use crate::model_args::{attention_choice, load_model, peak_rss_bytes, AttentionKind, ModelArgs};
use crate::progress::{layer_bar, tick};
use anyhow::{bail, Context, Result};
use minference_engine::{generate, GenerateOptions, Sampler, TextStream};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text.
    #[arg(long, conflicts_with = "prompt_file", required_unless_present = "prompt_file")]
    pub prompt: Option<String>,
    /// Read the prompt from a UTF-8 file.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
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

pub fn run(args: &RunArgs) -> Result<()> {
    let text = read_prompt(&args.prompt, &args.prompt_file)?;
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!("--temperature must be a finite number >= 0");
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1]");
    }
    let placement = args.placement.resolve()?;
    let model = Arc::new(load_model(&args.model)?);
    let tokenizer = model.tokenizer()?;
    let prompt_text = if args.raw { text } else { tokenizer.chat_prompt(&text, None) };
    let prompt = tokenizer.encode_prompt(&prompt_text)?;
    let dense_below = args.model.dense_below_for(placement.is_gpu());
    let (attention, what) = attention_choice(&args.model, &model, args.attention, dense_below)?;
    let what = crate::model_args::describe_attention(&what, &attention, prompt.len());
    let layers = model.config().layers;
    let random = if model.has_random_weights() { " [random weights]" } else { "" };
    let mut engine = open_engine(EngineWeights::Model(Arc::clone(&model)), placement, args.placement.precision)?;
    eprintln!(
        "model {}{random} | device {} | attention {what} | prompt {} tokens",
        model.config().name,
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
        stop_tokens: tokenizer.stop_tokens.clone(),
    };
    let bar = layer_bar(prompt.len(), layers, "prefill");
    let mut first = true;
    let mut stream = TextStream::new();
    let mut out = std::io::stdout();
    let gen = generate(engine.as_mut(), &prompt, &attention, &opts, &mut tick(&bar), &mut |id| {
        if first {
            bar.finish_and_clear();
            first = false;
        }
        if let Ok(piece) = stream.push(tokenizer, id) {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
        true
    })?;
    bar.finish_and_clear();
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
