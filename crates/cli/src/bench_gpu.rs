//! `minference bench attention` (one layer, our kernels + the SDPA baselines in the same run) and
//! `minference bench e2e` (TTFT of a random-weight model, dense vs MInference).

use crate::engines::open_gpu;
use crate::engines::{open_engine, EngineWeights, Placement};
use anyhow::{bail, Result};
use minference_bench::gpu_attention::{
    csv_row, format_row, run_attention_bench, BenchConfig, BenchRow, PatternSet, Regime, CSV_HEADER, TABLE_HEADER,
};
use minference_bench::{bench_e2e, E2eAttention, E2eOptions, E2eWorkload};
use minference_model::{ModelConfig, StructuredAttention};
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
    /// `cargo run -p minference-engine --release --example capture_qk`) instead of synthesising
    /// them; one captured head is replicated over the layer's heads; --lengths is then ignored.
    #[arg(long)]
    pub qk_file: Option<PathBuf>,
    /// Run the peers (PyTorch SDPA flash/cuDNN, MInference 0.1.6.0, FlexAttention) on exactly our
    /// Q/K/V and our VS indices, in the same call (bench/peers_attention.py). Default: on when
    /// `python3 -c "import torch"` works.
    #[arg(long, conflicts_with = "no_peers")]
    pub peers: bool,
    /// Skip the peer run.
    #[arg(long)]
    pub no_peers: bool,
    /// Peers run only up to this length.
    #[arg(long, default_value = "1m", value_parser = crate::lengths::parse_length)]
    pub peers_max: usize,
    /// Where the peer export goes (kept); default: a temporary folder, removed afterwards.
    #[arg(long)]
    pub export_dir: Option<PathBuf>,
    /// Write our rows as CSV here; the peer table goes beside it as `<stem>-peers.csv`.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Commit recorded in the CSVs (default: $MINFERENCE_COMMIT, else "unknown").
    #[arg(long)]
    pub commit: Option<String>,
}

fn baseline_script() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from("bench/sdpa_baseline.py"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/sdpa_baseline.py"),
    ];
    candidates.into_iter().find(|p| p.exists())
}

fn fmt_len(n: usize) -> String {
    if n.is_multiple_of(1 << 20) {
        format!("{}m", n >> 20)
    } else if n.is_multiple_of(1024) {
        format!("{}k", n >> 10)
    } else {
        n.to_string()
    }
}

/// `python3 -c "import torch"` works (the peers' precondition).
fn torch_available() -> bool {
    Command::new("python3")
        .args(["-c", "import torch"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn script(name: &str) -> Option<PathBuf> {
    let candidates =
        [PathBuf::from("bench").join(name), Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench").join(name)];
    candidates.into_iter().find(|p| p.exists())
}

/// UTC date as YYYY-MM-DD (civil from days, Howard Hinnant's algorithm).
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn commit_id(arg: &Option<String>) -> String {
    arg.clone().or_else(|| std::env::var("MINFERENCE_COMMIT").ok()).unwrap_or_else(|| "unknown".into())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    path.with_file_name(format!("{stem}{suffix}{ext}"))
}

pub fn attention(args: &BenchAttentionArgs) -> Result<()> {
    let peers = if args.no_peers || args.qk_file.is_some() {
        false
    } else if args.peers {
        if !torch_available() {
            bail!("--peers needs python3 with torch (python3 -c \"import torch\" failed)");
        }
        true
    } else {
        torch_available()
    };
    let peer_script = if peers { script("peers_attention.py") } else { None };
    if peers && peer_script.is_none() {
        bail!("peer script bench/peers_attention.py not found; run from the repository root");
    }
    let temp_export = std::env::temp_dir().join(format!("minference-peers-{}", std::process::id()));
    let export_dir = args.export_dir.clone().unwrap_or_else(|| temp_export.clone());
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
        export: None,
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
    let card = gpu.name().to_string();
    let (date, commit) = (utc_date(), commit_id(&args.commit));
    let mut csv = format!("{CSV_HEADER},date,commit\n");
    let mut on_row = |r: &BenchRow| {
        println!("{}", format_row(r));
        if let Some(plan) = &r.plan {
            eprintln!("  plan of {} at {}: {plan}", r.what, r.n);
        }
        csv.push_str(&format!("{},{date},{commit}\n", csv_row(&card, r)));
    };
    // Peers see the lengths up to --peers-max: ours runs those with the export first, the rest without.
    let (with_peers, rest): (Vec<usize>, Vec<usize>) = cfg.lengths.iter().partition(|&&n| peers && n <= args.peers_max);
    let mut manifest = None;
    let backend = minference_cuda::CudaBackend::of(gpu);
    if !with_peers.is_empty() {
        let c = BenchConfig { lengths: with_peers, export: Some(export_dir.clone()), ..cfg.clone() };
        manifest = run_attention_bench(&backend, &c, &mut on_row)?.export;
    }
    if !rest.is_empty() {
        let c = BenchConfig { lengths: rest, ..cfg.clone() };
        run_attention_bench(&backend, &c, &mut on_row)?;
    }
    // The peers need the card's memory: ours is given back first.
    drop(backend);
    if let Some(path) = &args.csv {
        std::fs::write(path, &csv)?;
        eprintln!("wrote {}", path.display());
    }
    if let (Some(script), Some(manifest)) = (peer_script, manifest) {
        println!("\nPeers on the same card, same Q/K/V, our VS indices (bench/peers_attention.py):");
        let mut cmd = Command::new("python3");
        cmd.env("PYTHONUNBUFFERED", "1").arg(&script).arg("--manifest").arg(&manifest).args([
            "--reps",
            &args.reps.max(1).to_string(),
            "--commit",
            &commit,
            "--date",
            &date,
        ]);
        if let Some(path) = &args.csv {
            cmd.arg("--csv").arg(sibling(path, "-peers"));
        }
        let status = cmd.status();
        if args.export_dir.is_none() {
            let _ = std::fs::remove_dir_all(&temp_export);
        }
        return match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => bail!("peer script exited with {s}"),
            Err(e) => bail!("could not start python3 for the peers: {e}"),
        };
    }
    if args.no_baseline || args.qk_file.is_some() || peers {
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
    /// The model's depth (default: the shape's), as `--layers` of `--random-weights`.
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(long, default_value = "32k,128k", value_parser = crate::lengths::parse_lengths)]
    pub lengths: std::vec::Vec<usize>,
    /// Comma-separated: dense, minference.
    #[arg(long, default_value = "dense,minference")]
    pub attention: String,
    /// Attention workloads, comma-separated: random (i.i.d. random weights: near-uniform
    /// attention, VS indices scatter) and structured (weights built so that attention has the
    /// core generator's sinks, local band, far slashes and retrieval columns; shapes without Q/K
    /// biases get them, as the table says).
    #[arg(long, value_delimiter = ',', default_value = "random,structured", value_parser = parse_workload)]
    pub workload: Vec<WorkloadKind>,
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
    #[arg(long, default_value = "bf16", value_parser = crate::engines::parse_precision)]
    pub precision: minference_engine_gpu::Precision,
    /// Also run HF transformers + SDPA dense prefill of the same shape in the same call
    /// (bench/hf_e2e_baseline.py). Default: on when `python3 -c "import torch"` works.
    #[arg(long, conflicts_with = "no_hf")]
    pub hf: bool,
    /// Skip the HF transformers baseline.
    #[arg(long)]
    pub no_hf: bool,
    /// HF rows only up to this length.
    #[arg(long, default_value = "1m", value_parser = crate::lengths::parse_length)]
    pub hf_max: usize,
    /// SDPA backend of the HF run: auto (PyTorch's choice), flash, cudnn, efficient.
    #[arg(long, default_value = "auto")]
    pub hf_sdpa: String,
    /// Commit recorded in the CSVs (default: $MINFERENCE_COMMIT, else "unknown").
    #[arg(long)]
    pub commit: Option<String>,
}

/// Runs bench/hf_e2e_baseline.py on the shape of `config`; its CSV goes to `csv` when given.
fn run_hf_baseline(config: &ModelConfig, shape: &str, args: &BenchE2eArgs, csv: Option<&Path>) -> Result<()> {
    let Some(script) = script("hf_e2e_baseline.py") else {
        bail!("bench/hf_e2e_baseline.py not found; run from the repository root");
    };
    let lens: Vec<String> = args.lengths.iter().filter(|&&n| n <= args.hf_max).map(|&n| fmt_len(n)).collect();
    if lens.is_empty() {
        return Ok(());
    }
    let arch = match config.arch {
        minference_model::Architecture::Llama => "llama",
        minference_model::Architecture::Mistral => "mistral",
        minference_model::Architecture::Qwen2 => "qwen2",
    };
    let mut cmd = Command::new("python3");
    cmd.env("PYTHONUNBUFFERED", "1").arg(&script).args([
        "--arch",
        arch,
        "--name",
        shape,
        "--hidden",
        &config.hidden.to_string(),
        "--intermediate",
        &config.intermediate.to_string(),
        "--layers",
        &config.layers.to_string(),
        "--heads",
        &config.heads.to_string(),
        "--kv-heads",
        &config.kv_heads.to_string(),
        "--vocab",
        &config.vocab.to_string(),
        "--rope-theta",
        &config.rope_theta.to_string(),
        "--rms-eps",
        &config.rms_eps.to_string(),
        "--lengths",
        &lens.join(","),
        "--sdpa-backend",
        &args.hf_sdpa,
        "--commit",
        &commit_id(&args.commit),
        "--date",
        &utc_date(),
    ]);
    if config.tie_embeddings {
        cmd.arg("--tie");
    }
    if config.qkv_bias {
        cmd.arg("--qkv-bias");
    }
    if let Some(p) = csv {
        cmd.arg("--csv").arg(p);
    }
    println!("\nHF transformers + SDPA dense prefill, same shape, same card (bench/hf_e2e_baseline.py):");
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => bail!("HF baseline exited with {s}"),
        Err(e) => bail!("could not start python3 for the HF baseline: {e}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Random,
    Structured,
}

fn parse_workload(s: &str) -> Result<WorkloadKind, String> {
    match s.trim() {
        "random" => Ok(WorkloadKind::Random),
        "structured" => Ok(WorkloadKind::Structured),
        o => Err(format!("unknown attention workload `{o}` (random, structured)")),
    }
}

/// The config and the workload of one e2e table: the structured workload needs Q/K biases.
fn workload_setup(config: &ModelConfig, kind: WorkloadKind, max_len: usize) -> (ModelConfig, E2eWorkload) {
    match kind {
        WorkloadKind::Random => (config.clone(), E2eWorkload::Random),
        WorkloadKind::Structured => {
            let mut c = config.clone();
            if !c.qkv_bias {
                c.qkv_bias = true;
                c.name = format!("{} + Q/K biases", c.name);
            }
            (c, E2eWorkload::Structured(StructuredAttention::new(max_len)))
        }
    }
}

pub fn e2e(args: &BenchE2eArgs) -> Result<()> {
    if !args.random_weights {
        bail!("bench e2e runs random-weight models of named shapes; pass --random-weights");
    }
    let kinds = args.attention.split(',').map(E2eAttention::parse).collect::<Result<Vec<_>, _>>()?;
    let opts = E2eOptions { dense_max_tokens: args.dense_max, ..E2eOptions::default() };
    let config = crate::random_weights::shape_config(&args.shape, args.layers)?;
    let max_len = args.lengths.iter().copied().max().unwrap_or(0).max(opts.warmup_tokens);
    let mut csv = String::new();
    let runs = args.gpus.iter().flat_map(|&g| args.workload.iter().map(move |&w| (g, w)));
    for (i, (gpus, kind)) in runs.enumerate() {
        let (config, workload) = workload_setup(&config, kind, max_len);
        let structured = match &workload {
            E2eWorkload::Structured(w) => Some(Box::new(w.clone())),
            E2eWorkload::Random => None,
        };
        let opts = E2eOptions { workload, ..opts.clone() };
        let weights = EngineWeights::Random { config: config.clone(), seed: opts.seed, structured };
        let mut engine = open_engine(weights, Placement::Gpus { first: args.gpu, count: gpus }, args.precision)?;
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
        let (date, commit) = (utc_date(), commit_id(&args.commit));
        let mut lines = csv.lines();
        let mut out = format!("{},date,commit\n", lines.next().unwrap_or_default());
        for l in lines {
            out.push_str(&format!("{l},{date},{commit}\n"));
        }
        std::fs::write(path, out)?;
        eprintln!("wrote {}", path.display());
    }
    let hf = if args.no_hf {
        false
    } else if args.hf {
        if !torch_available() {
            bail!("--hf needs python3 with torch (python3 -c \"import torch\" failed)");
        }
        true
    } else {
        torch_available()
    };
    if hf {
        let hf_csv = args.csv.as_ref().map(|p| sibling(p, "-hf"));
        run_hf_baseline(&config, &args.shape, args, hf_csv.as_deref())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse_and_the_structured_one_adds_named_biases() {
        assert_eq!(parse_workload("structured"), Ok(WorkloadKind::Structured));
        assert_eq!(parse_workload(" random "), Ok(WorkloadKind::Random));
        assert!(parse_workload("natural").is_err());
        let llama = ModelConfig::named_shape("llama-3-8b").unwrap_or_else(|e| panic!("{e}"));
        let (c, w) = workload_setup(&llama, WorkloadKind::Structured, 1 << 17);
        assert!(c.qkv_bias && c.name.contains("Q/K biases"), "{}", c.name);
        assert_eq!(w, E2eWorkload::Structured(StructuredAttention::new(1 << 17)));
        let qwen = ModelConfig::named_shape("qwen2.5-7b").unwrap_or_else(|e| panic!("{e}"));
        let (c, _) = workload_setup(&qwen, WorkloadKind::Structured, 1 << 17);
        assert_eq!(c, qwen, "a shape with biases keeps its name");
        assert_eq!(workload_setup(&llama, WorkloadKind::Random, 8).0, llama);
    }
}
