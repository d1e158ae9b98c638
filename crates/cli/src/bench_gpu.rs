//! `minference bench attention` (one layer, our kernels + the SDPA baselines in the same run) and
//! `minference bench e2e` (TTFT of a random-weight model, dense vs MInference).

use crate::gpu::open_gpu;
use crate::gpu::{open_engine, EngineWeights};
use anyhow::{bail, Result};
use minference_cuda::bench::{format_row, run_attention_bench, BenchConfig, PatternSet, Regime, TABLE_HEADER};
use minference_engine_gpu::{bench_e2e, E2eAttention, E2eOptions};
use minference_model::ModelConfig;
use std::path::{Path, PathBuf};
use std::process::Command;

fn parse_set(s: &str) -> Result<PatternSet, String> {
    match s.trim() {
        "vs-mix" => Ok(PatternSet::LlamaMix),
        "vs" => Ok(PatternSet::VsOnly),
        "bs" => Ok(PatternSet::BsTop100),
        "ashape" => Ok(PatternSet::AShape),
        o => Err(format!("unknown pattern set `{o}` (vs-mix, vs, bs, ashape)")),
    }
}

fn parse_regime(s: &str) -> Result<Regime, String> {
    match s.trim() {
        "structured" => Ok(Regime::Structured),
        "random" => Ok(Regime::Random),
        o => Err(format!("unknown index regime `{o}` (structured, random)")),
    }
}

#[derive(clap::Args, Debug)]
pub struct BenchAttentionArgs {
    #[arg(long, default_value = "16k,32k,64k,128k,256k,512k,1m", value_parser = crate::lengths::parse_lengths)]
    pub lengths: std::vec::Vec<usize>,
    /// Pattern sets: vs-mix (Llama-3-8B-262K budget mix), vs (1000,6096), bs (top-100), ashape (1024+4096).
    #[arg(long, value_delimiter = ',', default_value = "vs-mix,vs,bs,ashape", value_parser = parse_set)]
    pub sets: Vec<PatternSet>,
    #[arg(long, value_delimiter = ',', default_value = "structured,random", value_parser = parse_regime)]
    pub regimes: Vec<Regime>,
    /// Our dense kernel runs only up to this length.
    #[arg(long, default_value = "256k", value_parser = crate::lengths::parse_length)]
    pub dense_max: usize,
    /// Random-regime rows only up to this length (random indices make VS nearly dense).
    #[arg(long, default_value = "128k", value_parser = crate::lengths::parse_length)]
    pub random_max: usize,
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    #[arg(long, default_value_t = 32)]
    pub heads: usize,
    #[arg(long, default_value_t = 8)]
    pub kv_heads: usize,
    #[arg(long, default_value_t = 128)]
    pub head_dim: usize,
    /// Skip the PyTorch SDPA (flash, cuDNN) baseline run.
    #[arg(long)]
    pub no_baseline: bool,
    /// SDPA runs only up to this length.
    #[arg(long, default_value = "1m", value_parser = crate::lengths::parse_length)]
    pub baseline_max: usize,
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
    /// Read Q/K/V from a safetensors file (`q`, `k`, optional `v`; e.g. captured from a model with
    /// `cargo run -p minference-model --release --example capture_qk`) instead of synthesising
    /// them; one captured head is replicated over the layer's heads; --lengths is then ignored.
    #[arg(long)]
    pub qk_file: Option<PathBuf>,
}

fn baseline_script() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from("bench/sdpa_baseline.py"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/sdpa_baseline.py"),
    ];
    candidates.into_iter().find(|p| p.exists())
}

fn fmt_len(n: usize) -> String {
    if n % (1 << 20) == 0 {
        format!("{}m", n >> 20)
    } else if n % 1024 == 0 {
        format!("{}k", n >> 10)
    } else {
        n.to_string()
    }
}

pub fn attention(args: &BenchAttentionArgs) -> Result<()> {
    let gpu = open_gpu(args.gpu)?;
    let cfg = BenchConfig {
        lengths: args.lengths.clone(),
        heads: args.heads,
        kv_heads: args.kv_heads,
        head_dim: args.head_dim,
        sets: args.sets.clone(),
        regimes: args.regimes.clone(),
        dense_max: args.dense_max,
        random_max: args.random_max,
        reps: args.reps.max(1),
        seed: 1,
        qk_file: args.qk_file.clone(),
    };
    match &args.qk_file {
        // The file decides N and D; its head is replicated over the layer's heads.
        Some(f) => println!(
            "card: {} | Q/K/V from {} (one head replicated over H={} H_kv={}) bf16, causal",
            gpu.name(),
            f.display(),
            cfg.heads,
            cfg.kv_heads
        ),
        None => {
            println!("card: {} | H={} H_kv={} D={} bf16, causal", gpu.name(), cfg.heads, cfg.kv_heads, cfg.head_dim)
        }
    }
    println!("{TABLE_HEADER}");
    run_attention_bench(&gpu, &cfg, |r| println!("{}", format_row(r)))?;
    drop(gpu);
    if args.no_baseline || args.qk_file.is_some() {
        return Ok(());
    }
    let Some(script) = baseline_script() else {
        eprintln!("baseline script bench/sdpa_baseline.py not found; run from the repository root");
        return Ok(());
    };
    let lens: Vec<String> = args.lengths.iter().filter(|&&n| n <= args.baseline_max).map(|&n| fmt_len(n)).collect();
    if lens.is_empty() {
        return Ok(());
    }
    println!("\nPyTorch SDPA baselines, same card, same shape (K/V repeated to H heads):");
    let status = Command::new("python3")
        .arg(&script)
        .args(["--lengths", &lens.join(","), "--heads", &args.heads.to_string(), "--dim", &args.head_dim.to_string()])
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => bail!("baseline script exited with {s}"),
        Err(e) => {
            eprintln!("could not start python3 for the SDPA baseline: {e}");
            Ok(())
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct BenchE2eArgs {
    /// Named model shape (qwen2.5-7b, llama-3-8b, smollm2-135m, mistral-7b).
    #[arg(long, default_value = "qwen2.5-7b")]
    pub shape: String,
    /// Weights are generated on the device; required to say so explicitly.
    #[arg(long)]
    pub random_weights: bool,
    #[arg(long, default_value = "32k,128k", value_parser = crate::lengths::parse_lengths)]
    pub lengths: std::vec::Vec<usize>,
    /// Comma-separated: dense, minference.
    #[arg(long, default_value = "dense,minference")]
    pub attention: String,
    /// Dense rows above this length are skipped (reported as such).
    #[arg(long, value_parser = crate::lengths::parse_length)]
    pub dense_max: Option<usize>,
    /// Also write the table as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// First GPU (device ordinal).
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
    /// GPUs to spread the model over (tensor parallel, NCCL), from --gpu on. A list such as
    /// `1,2,4` runs each group size in turn (the scaling table, single GPU in the same run).
    #[arg(long, default_value = "1", value_delimiter = ',')]
    pub gpus: Vec<usize>,
    /// Device memory each GPU may use, in GiB (weights included): plans as on a smaller card,
    /// e.g. 80 for an 80 GB H100 on an H200.
    #[arg(long)]
    pub memory_gib: Option<f64>,
    /// GPU storage precision: bf16 or f16.
    #[arg(long, default_value = "bf16", value_parser = crate::gpu::parse_precision)]
    pub precision: minference_engine_gpu::Precision,
}

pub fn e2e(args: &BenchE2eArgs) -> Result<()> {
    if !args.random_weights {
        bail!("bench e2e runs random-weight models of named shapes; pass --random-weights");
    }
    let kinds = args.attention.split(',').map(E2eAttention::parse).collect::<Result<Vec<_>, _>>()?;
    let opts = E2eOptions { dense_max_tokens: args.dense_max, ..E2eOptions::default() };
    let config = ModelConfig::named_shape(&args.shape)?;
    let mut csv = String::new();
    for (i, &gpus) in args.gpus.iter().enumerate() {
        let weights = EngineWeights::Random { config: config.clone(), seed: opts.seed };
        let mut engine = open_engine(weights, args.gpu, gpus, args.precision)?;
        if let Some(g) = args.memory_gib {
            if !(g > 0.0 && g.is_finite()) {
                bail!("--memory-gib must be a positive number");
            }
            engine.set_memory_limit(Some((g * (1u64 << 30) as f64) as u64))?;
        }
        let table = bench_e2e(engine.as_mut(), &args.lengths, &kinds, &opts, &mut |line| eprintln!("{line}"))?;
        drop(engine);
        println!("{}", table.to_markdown());
        let text = table.to_csv();
        csv.push_str(if i == 0 { &text } else { text.split_once('\n').map_or("", |(_, rows)| rows) });
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, csv)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
