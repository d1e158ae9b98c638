//! `minference bench cpu`: CPU dense vs CPU VS / BS / A-shape (issue 2's benchmark).

use anyhow::{anyhow, Result};
use minference_bench::{run_cpu_bench, CpuBenchConfig};
use minference_core::DType;

#[derive(clap::Args, Debug)]
pub struct BenchCpuArgs {
    /// Prompt lengths, comma-separated (k = 1024).
    #[arg(long, default_value = "8k,32k,64k", value_parser = crate::lengths::parse_lengths)]
    pub lengths: std::vec::Vec<usize>,
    /// Query heads (one KV group by default).
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 1)]
    pub kv_heads: usize,
    #[arg(long, default_value_t = 128)]
    pub head_dim: usize,
    /// Timed repeats per measurement (best reported).
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Use the random (unstructured, worst case for VS) workload instead of the structured one.
    #[arg(long)]
    pub random: bool,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

pub fn run(args: &BenchCpuArgs) -> Result<()> {
    let mut cfg = CpuBenchConfig {
        lengths: args.lengths.clone(),
        heads: args.heads,
        kv_heads: args.kv_heads,
        head_dim: args.head_dim,
        dtype: DType::Bf16,
        seed: args.seed,
        repeats: args.repeats.max(1),
        ..CpuBenchConfig::default()
    };
    if args.random {
        cfg.synth = minference_core::synth::SynthConfig::random();
    }
    let report = run_cpu_bench(&cfg).map_err(|e| anyhow!(e))?;
    println!("{report}");
    Ok(())
}

/// `minference bench cpu-e2e`: the CPU engine on a real GGUF (the default model unless `--model`):
/// prefill and decode tokens/s at each context, with llama.cpp (llama-cpp-python) on the same file
/// and the same token ids in the same run when its Python has `llama_cpp`, per-operation decode
/// times, and a STREAM-like memory bandwidth as the decode ceiling.
#[derive(clap::Args, Debug)]
pub struct BenchCpuE2eArgs {
    /// GGUF file (default: the default model, fetched if absent).
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// Context lengths: prompt tokens before decoding (k = 1024; 4k = 4096).
    #[arg(long, default_value = "512,4k,8k", value_parser = crate::lengths::parse_lengths)]
    pub contexts: std::vec::Vec<usize>,
    /// Decode steps timed at each context.
    #[arg(long, default_value_t = 32)]
    pub decode_tokens: usize,
    /// Python with llama-cpp-python installed (default: $MINFERENCE_LLAMA_PYTHON, else python3);
    /// llama.cpp is skipped when it has none.
    #[arg(long)]
    pub llama_python: Option<String>,
    /// Threads for both engines (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Skip llama.cpp.
    #[arg(long)]
    pub no_llama: bool,
}

/// Bytes/s of a two-thread-pool copy (`a → b`, read + write counted) and of a sum (reads only):
/// best of 5 over 256 MiB buffers, so caches do not count.
fn stream_bandwidth() -> (f64, f64) {
    use rayon::prelude::*;
    let n = 64 << 20; // f32 values: 256 MiB per buffer
    let a: Vec<f32> = (0..n).into_par_iter().map(|i| (i % 7) as f32).collect();
    let mut b = vec![0f32; n];
    let chunk = n / (4 * rayon::current_num_threads().max(1));
    let (mut copy, mut read) = (0f64, 0f64);
    for _ in 0..5 {
        let t = std::time::Instant::now();
        b.par_chunks_mut(chunk).zip(a.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s));
        copy = copy.max(2.0 * 4.0 * n as f64 / t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        let s: f32 = b
            .par_chunks(chunk)
            .map(|c| {
                // 16 independent sums so the loop runs at load speed, not add latency.
                let mut acc = [0f32; 16];
                for v in c.chunks_exact(16) {
                    for l in 0..16 {
                        acc[l] += v[l];
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        read = read.max(4.0 * n as f64 / t.elapsed().as_secs_f64());
        std::hint::black_box(s);
    }
    (copy, read)
}

#[derive(Debug, Clone, Copy, Default)]
struct E2eRow {
    prefill_tps: f64,
    decode_tps: f64,
}

fn llama_cpp_run(
    args: &BenchCpuE2eArgs,
    model: &std::path::Path,
    tokens: &[u32],
    threads: usize,
) -> Result<Option<E2eRow>> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/llama_cpp_bench.py");
    let ids = std::env::temp_dir().join(format!("minference-llama-ids-{}.txt", std::process::id()));
    std::fs::write(&ids, tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" "))?;
    let python = args
        .llama_python
        .clone()
        .or_else(|| std::env::var("MINFERENCE_LLAMA_PYTHON").ok())
        .unwrap_or_else(|| "python3".into());
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg("--model")
        .arg(model)
        .arg("--tokens")
        .arg(&ids)
        .arg("--decode")
        .arg(args.decode_tokens.to_string())
        .arg("--threads")
        .arg(threads.to_string())
        .output();
    let _ = std::fs::remove_file(&ids);
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("llama.cpp skipped: cannot start {python}: {e}");
            return Ok(None);
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().rev().find(|l| l.starts_with("RESULT ")) else {
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("llama.cpp skipped: {}", err.lines().last().unwrap_or("no result"));
        return Ok(None);
    };
    let mut row = E2eRow::default();
    for kv in line.split_whitespace().skip(1) {
        match kv.split_once('=') {
            Some(("prefill_tps", v)) => row.prefill_tps = v.parse()?,
            Some(("decode_tps", v)) => row.decode_tps = v.parse()?,
            _ => {}
        }
    }
    Ok(Some(row))
}

/// A prompt of exactly `n` token ids: plain English prose tokenized and repeated.
fn prompt_tokens(model: &minference_model::Model, n: usize) -> Result<Vec<u32>> {
    let tok = model.tokenizer().map_err(|e| anyhow!(e))?;
    let text = "The river runs past the old mill, where the miller's children count the boats that \
                carry grain to the city. In spring the water rises and the wheel turns faster; in \
                autumn the leaves gather at the sluice and the miller rakes them out each morning. ";
    let base = tok.encode(text).map_err(|e| anyhow!(e))?;
    Ok(base.iter().copied().cycle().take(n).collect())
}

pub fn run_e2e(args: &BenchCpuE2eArgs) -> Result<()> {
    use minference_engine::{cpu_engine, generate, AttentionChoice, GenerateOptions, Sampler};
    if let Some(t) = args.threads {
        rayon::ThreadPoolBuilder::new().num_threads(t).build_global().ok();
    }
    let threads = rayon::current_num_threads();
    let path = match &args.model {
        Some(p) => p.clone(),
        None => minference_model::ensure_default_model().map_err(|e| anyhow!(e))?,
    };
    let model = std::sync::Arc::new(minference_model::Model::load(&path).map_err(|e| anyhow!(e))?);
    let cfg = model.config().clone();
    let w = model.weights();
    // Bytes a decode step must read: quantized (or f32) weights, the tied head, KV rows.
    let lin_bytes =
        |l: &minference_model::weights::Linear| l.quant.as_ref().map_or(4 * l.weight.len(), |q| q.data.len());
    let weight_bytes: usize = w
        .layers
        .iter()
        .map(|l| {
            [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down].iter().map(|x| lin_bytes(x)).sum::<usize>()
        })
        .sum::<usize>()
        + w.lm_head
            .as_ref()
            .map_or_else(|| w.embed_quant.as_ref().map_or(4 * w.embed.len(), |q| q.data.len()), lin_bytes);
    let kv_row_bytes = 2 * cfg.layers * cfg.kv_dim() * minference_engine::kv_cache::KV_BYTES;

    println!(
        "model: {} ({} layers, hidden {}, {} heads / {} KV heads)",
        path.display(),
        cfg.layers,
        cfg.hidden,
        cfg.heads,
        cfg.kv_heads
    );
    println!("threads: {threads}; machine shared with other jobs (figures are one run, same run for both engines)");
    let (copy, read) = stream_bandwidth();
    println!(
        "memory bandwidth (STREAM-like, {threads} threads, 256 MiB): copy {:.1} GB/s, read {:.1} GB/s",
        copy / 1e9,
        read / 1e9
    );
    println!(
        "decode step reads {:.1} MB of weights + {:.1} KB of KV cache per context token\n",
        weight_bytes as f64 / 1e6,
        kv_row_bytes as f64 / 1e3
    );

    kernel_table(w);

    let mut rows = Vec::new();
    let mut profiles = Vec::new();
    for &ctx in &args.contexts {
        // The prompt and the decoded tokens fit the model's context (8K = 8192 − decode − 1).
        let ctx = ctx.min(cfg.context_length.saturating_sub(args.decode_tokens + 1)).max(1);
        let tokens = prompt_tokens(&model, ctx)?;
        let mut engine = cpu_engine(model.clone());
        let opts =
            GenerateOptions { max_new_tokens: args.decode_tokens + 1, sampler: Sampler::greedy(), stop_tokens: vec![] };
        engine.reset_decode_profile();
        let gen = generate(&mut engine, &tokens, &AttentionChoice::Dense, &opts, &mut |_| {}, &mut |_| true)
            .map_err(|e| anyhow!(e))?;
        let prof = engine.decode_profile().clone();
        let ours = E2eRow {
            prefill_tps: ctx as f64 / gen.prefill.seconds,
            decode_tps: prof.steps as f64 / prof.total_seconds.max(1e-9),
        };
        drop(engine);
        let llama = if args.no_llama { None } else { llama_cpp_run(args, &path, &tokens, threads)? };
        let ceiling = read / (weight_bytes + ctx * kv_row_bytes) as f64;
        eprintln!("context {ctx}: ours {ours:?}, llama.cpp {llama:?}");
        rows.push((ctx, ours, llama, ceiling));
        profiles.push((ctx, prof));
    }
    println!("| context | ours prefill tok/s | llama.cpp prefill tok/s | ratio | ours decode tok/s | llama.cpp decode tok/s | ratio | decode ceiling (read BW) tok/s |");
    println!("|---|---|---|---|---|---|---|---|");
    for (ctx, ours, llama, ceiling) in &rows {
        let f = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.1}"));
        let r = |a: f64, b: Option<f64>| b.map_or("—".to_string(), |b| format!("{:.2}×", a / b));
        println!(
            "| {ctx} | {:.1} | {} | {} | {:.1} | {} | {} | {:.0} |",
            ours.prefill_tps,
            f(llama.map(|l| l.prefill_tps)),
            r(ours.prefill_tps, llama.map(|l| l.prefill_tps)),
            ours.decode_tps,
            f(llama.map(|l| l.decode_tps)),
            r(ours.decode_tps, llama.map(|l| l.decode_tps)),
            ceiling
        );
    }
    for (ctx, prof) in &profiles {
        println!("\ndecode step at context {ctx}:\n{prof}");
    }
    Ok(())
}

/// Matrix-vector products of layer 0's MLP gate and of the tied head: the quantized kernel
/// (dispatched), its portable form on one thread, and the f32 weights (the path before).
fn kernel_table(w: &minference_model::weights::Weights) {
    let time = |f: &mut dyn FnMut()| {
        f();
        let reps = 20;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            f();
        }
        t.elapsed().as_secs_f64() * 1e6 / reps as f64
    };
    println!(
        "| matvec | blocks | quantized kernel µs | 8-bit activation µs | portable (1 thread) µs | f32 weights µs |"
    );
    println!("|---|---|---|---|---|---|");
    let gate = &w.layers[0].w_gate;
    let mut mats = vec![("layer 0 ffn_gate", gate.quant.as_ref(), gate.in_dim, gate.out_dim)];
    if w.lm_head.is_none() {
        let hidden = w.embed.len() / w.embed_quant.as_ref().map_or(1, |q| q.rows.max(1));
        mats.push(("tied LM head", w.embed_quant.as_ref(), hidden, w.embed.len() / hidden.max(1)));
    }
    for (name, q, cols, rows) in mats {
        let Some(q) = q else {
            println!("| {name} | f32 | — | — | — | — |");
            continue;
        };
        let x: Vec<f32> = (0..cols).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
        let mut y = vec![0f32; rows];
        let fast = time(&mut || q.matvec(&x, &mut y));
        let int8 = time(&mut || q.matvec_int8(&x, &mut y));
        let port = time(&mut || q.matvec_portable(&x, &mut y));
        let f = q.dequantize();
        let lin = minference_model::weights::Linear { weight: f, bias: None, out_dim: rows, in_dim: cols, quant: None };
        let dense = time(&mut || minference_engine::ops::linear(&x, 1, &lin, &mut y));
        println!("| {name} {rows}×{cols} | {:?} | {fast:.1} | {int8:.1} | {port:.1} | {dense:.1} |", q.ty);
    }
    println!();
}
