//! Times dense vs MInference prefill on the CPU and compares their next-token distributions.
//!
//! cargo run -p minference-engine --release --example prefill -- [TOKENS] [MODEL.gguf | random:SHAPE[:LAYERS]]
//! Defaults: 2048 tokens, the default model (fetched when absent).

use minference_core::HeadPattern;
use minference_cpu::CpuBackend;
use minference_engine::{sampling::argmax, AttentionChoice, CpuEngine as Engine, MInferencePlan};
use minference_model::Model;
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(2048);
    let model = match args.get(1) {
        Some(spec) if spec.starts_with("random:") => {
            let mut parts = spec["random:".len()..].split(':');
            let shape = parts.next().unwrap_or("smollm2-135m");
            let layers = parts.next().map(str::parse).transpose()?;
            Model::random(shape, layers, 1)?
        }
        Some(path) => Model::load(std::path::Path::new(path))?,
        None => Model::load(&minference_model::ensure_default_model()?)?,
    };
    let model = Arc::new(model);
    let cfg = model.config().clone();
    let tokens: Vec<u32> = match model.tokenizer() {
        Ok(tok) => {
            let mut text = String::new();
            let mut i = 0;
            while tok.encode(&text)?.len() < n {
                text.push_str(&format!("Record {i}: the value of item {i} is {}. ", (i * 7919) % 1000));
                i += 1;
            }
            tok.encode(&text)?[..n].to_vec()
        }
        Err(_) => (0..n).map(|i| ((i * 7919) % cfg.vocab) as u32).collect(),
    };
    let weights_note = if model.has_random_weights() { " (random weights)" } else { "" };
    println!(
        "model {}{weights_note}: {} layers, {} heads, {} kv heads, {n} tokens",
        cfg.name, cfg.layers, cfg.heads, cfg.kv_heads
    );
    let mut engine = Engine::new(model.clone(), CpuBackend::new());
    let (dense, ds) = engine.prefill(&tokens, &AttentionChoice::Dense, &mut |_| {})?;
    println!("dense: {:.2} s total, {:.2} s attention", ds.seconds, ds.attention_total_ms() / 1e3);
    for (name, pattern) in [
        ("vs(1000,6096)", HeadPattern::VerticalSlash { k_v: 1000, k_s: 6096 }),
        ("vs(64,256)", HeadPattern::VerticalSlash { k_v: 64, k_s: 256 }),
        ("a_shape(64,256)", HeadPattern::AShape { n_init: 64, n_local: 256 }),
        ("block_sparse(8)", HeadPattern::BlockSparse { k_b: 8 }),
    ] {
        let plan = MInferencePlan::uniform(&cfg, pattern);
        let (sparse, s) = engine.prefill(&tokens, &AttentionChoice::MInference(plan), &mut |_| {})?;
        println!(
            "{name}: {:.2} s total, {:.2} s attention, top-1 {} (dense {}), KL {:.4}",
            s.seconds,
            s.attention_total_ms() / 1e3,
            argmax(&sparse),
            argmax(&dense),
            kl(&dense, &sparse)
        );
    }
    Ok(())
}

fn kl(p: &[f32], q: &[f32]) -> f64 {
    let ls = |v: &[f32]| {
        let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = v.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln() + m;
        v.iter().map(move |&x| x as f64 - lse).collect::<Vec<_>>()
    };
    ls(p).iter().zip(ls(q)).map(|(a, b)| a.exp() * (a - b)).sum()
}
