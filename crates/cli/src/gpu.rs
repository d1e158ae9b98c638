//! GPU paths of the commands: device opening with a clean fallback message, and `run` on the GPU.

use crate::model_args::{attention_choice, load_model};
use crate::progress::{layer_bar, tick};
use crate::run_cmd::{fmt_bytes, RunArgs};
use anyhow::{Context, Result};
use minference_cuda::{CudaError, Gpu};
use minference_engine_gpu::GpuEngine;
use minference_model::{Sampler, TextStream};
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

pub fn run_on_gpu(args: &RunArgs, text: &str, ordinal: usize) -> Result<()> {
    let gpu = open_gpu(ordinal)?;
    let model = Arc::new(load_model(&args.model)?);
    let tokenizer = model.tokenizer()?;
    let prompt_text = if args.raw { text.to_string() } else { tokenizer.chat_prompt(text, None) };
    let prompt = tokenizer.encode_prompt(&prompt_text)?;
    let (attention, what) = attention_choice(&args.model, &model, args.attention)?;
    let layers = model.config().layers;
    let random = if model.has_random_weights() { " [random weights]" } else { "" };
    eprintln!("model {}{random} | device {} | attention {what} | prompt {} tokens", model.config().name, gpu.name(), prompt.len());
    let mut engine = GpuEngine::new(Arc::clone(&gpu), Arc::clone(&model))?;
    engine.set_allow_context_extension(args.allow_context_extension);
    engine.set_max_new_tokens(args.max_new_tokens.max(1));
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
    let (free, total) = gpu.mem_info().unwrap_or((0, 0));
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
        fmt_bytes((total - free) as u64),
        fmt_bytes(total as u64),
        crate::model_args::peak_rss_bytes().map(fmt_bytes).unwrap_or_else(|| "n/a".into()),
    );
    Ok(())
}
