//! GPU paths of the commands: device opening with a clean fallback message, and `run` on the GPU.

use crate::model_args::{attention_choice, load_model};
use crate::progress::{layer_bar, tick};
use crate::run_cmd::{fmt_bytes, RunArgs};
use anyhow::{Context, Result};
use minference_cuda::{CudaError, Gpu};
use minference_engine_gpu::{EngineSetup, GpuEngine, Precision, PrefillEngine};
use minference_eval::{EvalError, GreedyGenerator};
use minference_model::{AttentionChoice, Model, ModelConfig, PrefillProgress, Sampler, TextStream};
use minference_multi_gpu::{TpEngine, TpModel, TpOptions};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

/// Whether a CUDA device can be used by this binary (driver present, device 0 opens).
pub fn gpu_usable() -> bool {
    match Gpu::open(0) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("no usable GPU ({e}); running on the CPU");
            false
        }
    }
}

/// Opens GPU `ordinal` with an error that says what to do instead.
pub fn open_gpu(ordinal: usize) -> Result<Arc<Gpu>> {
    match Gpu::open(ordinal) {
        Ok(g) => Ok(Arc::new(g)),
        Err(CudaError::NoGpu(m)) => anyhow::bail!("--device cuda:{ordinal}: no usable GPU ({m}); use --device cpu"),
        Err(e) => Err(e).with_context(|| format!("opening GPU {ordinal}")),
    }
}

/// The weights an engine runs.
pub enum EngineWeights {
    Model(Arc<Model>),
    /// A named shape with random weights generated on the device(s).
    Random {
        config: ModelConfig,
        seed: u64,
    },
}

/// Parses `--precision`.
pub fn parse_precision(s: &str) -> Result<Precision, String> {
    Precision::parse(s).map_err(|e| e.to_string())
}

/// One GPU (`gpus == 1`) or a tensor-parallel group of GPUs `ordinal..ordinal + gpus`.
pub fn open_engine(
    weights: EngineWeights,
    ordinal: usize,
    gpus: usize,
    precision: Precision,
) -> Result<Box<dyn PrefillEngine>> {
    match gpus {
        0 => anyhow::bail!("--gpus must be at least 1"),
        1 => {
            let gpu = open_gpu(ordinal)?;
            let setup = EngineSetup { precision, ..EngineSetup::default() };
            Ok(match weights {
                EngineWeights::Model(m) => Box::new(GpuEngine::new_with(gpu, m, setup)?),
                EngineWeights::Random { config, seed } => Box::new(GpuEngine::random_with(gpu, config, seed, setup)?),
            })
        }
        n => {
            let model = match weights {
                EngineWeights::Model(m) => TpModel::Host(m),
                EngineWeights::Random { config, seed } => TpModel::Random { config, seed },
            };
            let ordinals: Vec<usize> = (ordinal..ordinal + n).collect();
            let opts = TpOptions { precision, ..TpOptions::default() };
            let group = TpEngine::new(&ordinals, model, opts)
                .with_context(|| format!("starting a tensor-parallel group on GPUs {ordinals:?}"))?;
            Ok(Box::new(group))
        }
    }
}

/// Greedy generation on a GPU engine, for the evals.
pub struct GpuGenerator(pub Box<dyn PrefillEngine>);

impl GreedyGenerator for GpuGenerator {
    fn generate_greedy(
        &mut self,
        prompt: &[u32],
        attention: &AttentionChoice,
        max_new_tokens: usize,
        stop_tokens: &[u32],
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> minference_eval::Result<Vec<u32>> {
        let e = |e: minference_engine_gpu::EngineError| EvalError::Engine(e.to_string());
        self.0.set_max_new_tokens(max_new_tokens.max(1)).map_err(e)?;
        let (mut logits, _) = self.0.prefill(prompt, attention, progress).map_err(e)?;
        let mut sampler = Sampler::greedy();
        let mut out = Vec::new();
        while out.len() < max_new_tokens {
            let next = sampler.sample(&logits);
            if stop_tokens.contains(&next) {
                break;
            }
            out.push(next);
            if out.len() < max_new_tokens {
                logits = self.0.decode_step(next).map_err(e)?;
            }
        }
        Ok(out)
    }
}

pub fn run_on_gpu(args: &RunArgs, text: &str, ordinal: usize) -> Result<()> {
    let model = Arc::new(load_model(&args.model)?);
    let tokenizer = model.tokenizer()?;
    let prompt_text = if args.raw { text.to_string() } else { tokenizer.chat_prompt(text, None) };
    let prompt = tokenizer.encode_prompt(&prompt_text)?;
    let dense_below = args.model.dense_below_for(true);
    let (attention, what) = attention_choice(&args.model, &model, args.attention, dense_below)?;
    let what = crate::model_args::describe_attention(&what, &attention, prompt.len(), dense_below);
    let layers = model.config().layers;
    let random = if model.has_random_weights() { " [random weights]" } else { "" };
    let mut engine = open_engine(EngineWeights::Model(Arc::clone(&model)), ordinal, args.gpus, args.precision)?;
    eprintln!(
        "model {}{random} | device {} | attention {what} | prompt {} tokens",
        model.config().name,
        engine.device_name(),
        prompt.len()
    );
    engine.set_allow_context_extension(args.allow_context_extension)?;
    engine.set_max_new_tokens(args.max_new_tokens.max(1))?;
    let mut sampler =
        if args.temperature == 0.0 { Sampler::greedy() } else { Sampler::new(args.temperature, args.top_p, args.seed) };

    let bar = layer_bar(prompt.len(), layers, "prefill");
    let (mut logits, stats) = engine.prefill(&prompt, &attention, &mut tick(&bar))?;
    bar.finish_and_clear();
    let t0 = Instant::now();
    let mut stream = TextStream::new();
    let mut out = std::io::stdout();
    let mut produced = 0usize;
    while produced < args.max_new_tokens {
        let next = sampler.sample(&logits);
        if tokenizer.stop_tokens.contains(&next) {
            break;
        }
        produced += 1;
        let piece = stream.push(tokenizer, next)?;
        out.write_all(piece.as_bytes())?;
        out.flush()?;
        if produced == args.max_new_tokens {
            break;
        }
        logits = engine.decode_step(next)?;
    }
    println!();
    let decode_s = t0.elapsed().as_secs_f64();
    let (used, total) = engine.memory().unwrap_or((0, 0));
    eprintln!(
        "time to first token {:.3} s | prefill {:.1} tok/s ({} tokens; attention {:.1} ms = estimate {:.1} + index {:.1} + kernel {:.1}) | decode {:.1} tok/s ({} tokens) | GPU memory in use {} of {} | host peak {}",
        stats.seconds,
        stats.tokens as f64 / stats.seconds.max(1e-9),
        stats.tokens,
        stats.estimate_ms + stats.index_ms + stats.attention_ms,
        stats.estimate_ms,
        stats.index_ms,
        stats.attention_ms,
        produced.saturating_sub(1).max(1) as f64 / decode_s.max(1e-9),
        produced,
        fmt_bytes(used),
        fmt_bytes(total),
        crate::model_args::peak_rss_bytes().map(fmt_bytes).unwrap_or_else(|| "n/a".into()),
    );
    Ok(())
}
