//! `minference search`: offline kernel-aware pattern search on a calibration prompt (issue 5).

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use minference_core::AdaptiveBudget;
use minference_cuda::Gpu;
use minference_engine_gpu::GpuEngine;
use minference_model::Model;
use minference_search::calibration::{load_calibrations, CalibrationSource};
use minference_search::{
    extras_of, merge_searches, search_model_gpu_with, search_model_with, CandidateSpace, ModelSearch, Objective,
    Preset, SearchOptions, TargetCost,
};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[path = "search_sensitivity.rs"]
mod sensitivity;
#[cfg(test)]
use sensitivity::sensitivity_metric;
use sensitivity::weigh_by_layer_sensitivity;

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("calibration_source").required(true).multiple(true).args(["calibration", "synthetic_kv_retrieval", "from_details"]))]
#[command(group = clap::ArgGroup::new("destination").required(true).multiple(true).args(["output", "hf_config"]))]
pub struct SearchArgs {
    /// GGUF file or safetensors directory (default: the SmolLM2 model under ./models, fetched if absent).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Calibration documents: UTF-8 text files (comma-separated or repeated), e.g. some code, some
    /// prose and a long retrieval prompt. Each gets its own dense forward; every head's patterns
    /// are scored on all of them and their scores averaged.
    #[arg(long, value_delimiter = ',')]
    pub calibration: Vec<PathBuf>,
    /// Also (or only) calibrate on a seeded synthetic KV-retrieval prompt (InfiniteBench kv_retrieval style).
    #[arg(long)]
    pub synthetic_kv_retrieval: bool,
    /// Instead of running the model: the scored candidates of an earlier search (its --details
    /// TSV), re-allocated to --density / --also-density (seconds instead of minutes).
    #[arg(long, conflicts_with_all = ["calibration", "synthetic_kv_retrieval"])]
    pub from_details: Option<PathBuf>,
    /// Seed of the synthetic prompt.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Calibration length in tokens (k = 1024). Default: the file's length, or 4096 for the synthetic prompt.
    #[arg(long, value_parser = parse_tokens)]
    pub len: Option<usize>,
    /// Where to write the config (MInference's JSON format).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Also (or instead) write the config into this Hugging Face config.json, under
    /// `sparse_attention_config` (where SGLang reads it): the key is replaced in place (inside
    /// `dual_chunk_attention_config` if it is there), every other key is kept.
    #[arg(long)]
    pub hf_config: Option<PathBuf>,
    /// output-residual: the head's output error through its output-projection columns, each row
    /// against the layer's input stream row (minimised; CPU only for now); output: relative L2
    /// error of the head's attention output against dense over the scored rows (minimised);
    /// recall: attention-weight recall (maximised); output-count: output elements off by more
    /// than 5e-3. auto (the default): output-residual on the CPU, output on the GPU.
    #[arg(long, default_value = "auto")]
    pub objective: String,
    /// Cost the kernel-aware candidates are fitted to: ashape:INIT,LOCAL (kernel work of that A-shape
    /// at the calibration length) or work:FRACTION (share of dense kernel work).
    #[arg(long, default_value = "ashape:1024,4096")]
    pub target_cost: String,
    /// Candidate sets, comma-separated: kernel-aware, paper (Table 7), code (released search lists).
    #[arg(long, default_value = "kernel-aware")]
    pub presets: String,
    /// Also score adaptive Vertical-Slash heads (keep a share `--gamma` of the estimated mass, per
    /// prompt) as candidates; a chosen one is written as an adaptive head.
    #[arg(long)]
    pub adaptive: bool,
    /// The adaptive candidates' shares of the estimated mass, comma-separated, each in (0, 1].
    #[arg(long, value_delimiter = ',', default_value = "0.8,0.9,0.95,0.98")]
    pub gamma: Vec<f64>,
    /// First scored row (default min(2500, N/4)).
    #[arg(long)]
    pub floor: Option<usize>,
    /// Also write every head's candidates and scores as TSV here.
    #[arg(long)]
    pub details: Option<PathBuf>,
    /// Also write the calibration prompt's text here.
    #[arg(long)]
    pub save_prompt: Option<PathBuf>,
    /// Global kernel-density target in (0, 1]: after scoring, one candidate per head is chosen so
    /// that the mean kernel density over all heads stays within it, by loss decrease per unit of
    /// density (a head that needs 90% gets it, a local head a sliver). Adds dense and a ladder of
    /// Vertical-Slash budgets to the candidates.
    #[arg(long, default_value_t = 0.4, conflicts_with = "per_head_fit")]
    pub density: f64,
    /// No global budget: every head takes its best candidate fitted to --target-cost (the
    /// released search's per-head fit).
    #[arg(long)]
    pub per_head_fit: bool,
    /// More density targets from the same scores (comma-separated): each writes
    /// `<output stem>.density-<F>.json` beside -o (for Pareto comparisons).
    #[arg(long, value_delimiter = ',', requires = "output", conflicts_with = "per_head_fit")]
    pub also_density: Vec<f64>,
    /// The density allocation minimises the sum over heads of loss^P, loss = the head's objective
    /// value (1 − recall for recall). 1 (default) = the relative output error itself; 2 = squared
    /// errors (as independent residual-stream errors add); below 1 favours removing many small
    /// errors over one large one.
    #[arg(long, default_value_t = 1.0)]
    pub budget_loss_power: f64,
    /// After allocating, measure each layer's end-to-end effect on every calibration document
    /// (one CPU forward per layer and document with only that layer sparse, against dense; the
    /// mean over the documents), weigh every layer's scores with it and allocate again. Adds one
    /// forward per layer and document (docs/search.md "Layer sensitivity"): one document's
    /// per-layer effects do not carry over to other text (docs/eval.md).
    #[arg(long, conflicts_with_all = ["per_head_fit", "from_details"])]
    pub layer_sensitivity: bool,
    /// What --layer-sensitivity measures against the dense forward: `kl` (the next-token
    /// distributions' KL on --sensitivity-rows evenly spaced positions) or `residual` (the final
    /// residual stream's relative change, no LM head).
    #[arg(long, default_value = "kl", requires = "layer_sensitivity")]
    pub sensitivity_metric: String,
    /// Positions the `kl` sensitivity samples (the LM head runs on these rows only).
    #[arg(long, default_value_t = 512, requires = "layer_sensitivity")]
    pub sensitivity_rows: usize,
    /// Where the forward and the scoring run: cpu, cuda, or auto (cuda when a usable GPU is present).
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// Where `minference search` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchDevice {
    Cpu,
    Cuda,
    Auto,
}

impl SearchDevice {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(SearchDevice::Cpu),
            "cuda" | "gpu" => Ok(SearchDevice::Cuda),
            "auto" => Ok(SearchDevice::Auto),
            other => bail!("unknown device `{other}` (expected cpu, cuda or auto)"),
        }
    }
}

/// The GPU engine for `model`, `None` for the CPU. `cuda` without a usable GPU is an error; `auto`
/// falls back to the CPU and says why.
fn open_device(device: SearchDevice, model: &Arc<Model>) -> Result<Option<GpuEngine>> {
    if device == SearchDevice::Cpu {
        return Ok(None);
    }
    let engine =
        Gpu::open(0).map_err(anyhow::Error::from).and_then(|gpu| Ok(GpuEngine::new(Arc::new(gpu), Arc::clone(model))?));
    match (engine, device) {
        (Ok(e), _) => Ok(Some(e)),
        (Err(e), SearchDevice::Cuda) => Err(e.context("--device cuda: cannot search on the GPU")),
        (Err(e), _) => {
            eprintln!("searching on the CPU ({e:#})");
            Ok(None)
        }
    }
}

fn parse_tokens(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim().to_ascii_lowercase();
    let (digits, mult) = match t.strip_suffix('k') {
        Some(d) => (d, 1024),
        None => (t.as_str(), 1),
    };
    let n: usize = digits.parse().map_err(|_| format!("`{s}` is not a token count (examples: 4096, 8k)"))?;
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("`{s}`: a token count must be > 0 and not huge")),
        Some(v) => Ok(v),
    }
}

/// Search options from the command-line strings (shared with `viz`).
pub fn search_options(
    objective: &str,
    target_cost: &str,
    presets: &str,
    adaptive: &[f64],
    floor: Option<usize>,
) -> Result<SearchOptions> {
    let objective = match objective {
        "recall" => Objective::Recall,
        "output" | "output-rel-l2" => Objective::OutputRelL2,
        "output-residual" | "auto" => Objective::OutputResidual,
        "output-count" => Objective::OutputCount { threshold: 5e-3 },
        other => bail!("unknown objective `{other}` (expected auto, output-residual, output, recall or output-count)"),
    };
    let presets =
        presets.split(',').filter(|p| !p.trim().is_empty()).map(Preset::parse).collect::<Result<Vec<_>, _>>()?;
    if presets.is_empty() {
        bail!("--presets names no candidate set");
    }
    let space = CandidateSpace {
        presets,
        target: TargetCost::parse(target_cost)?,
        adaptive: adaptive_rules(adaptive)?,
        ..CandidateSpace::default()
    };
    Ok(SearchOptions { objective, space, floor })
}

/// Adaptive candidates for `gammas` with the default bounds; a gamma outside (0, 1] is an error.
fn adaptive_rules(gammas: &[f64]) -> Result<Vec<AdaptiveBudget>> {
    gammas
        .iter()
        .map(|&gamma| {
            let rule = AdaptiveBudget { gamma, ..AdaptiveBudget::default() };
            rule.to_pattern().with_context(|| format!("--gamma {gamma}"))?;
            Ok(rule)
        })
        .collect()
}

/// The model at `path`, or the default one.
pub fn load_model(path: &Option<PathBuf>) -> Result<Model> {
    let path = match path {
        Some(p) => p.clone(),
        None => minference_model::ensure_default_model()?,
    };
    Model::load(&path).with_context(|| format!("loading model {}", path.display()))
}

pub fn run(args: &SearchArgs) -> Result<()> {
    SearchDevice::parse(&args.device)?;
    let mut opts = search_options(
        &args.objective,
        &args.target_cost,
        &args.presets,
        if args.adaptive { &args.gamma } else { &[] },
        args.floor,
    )?;
    if !(args.budget_loss_power.is_finite() && args.budget_loss_power > 0.0) {
        bail!("--budget-loss-power must be a positive number, got {}", args.budget_loss_power);
    }
    if !args.per_head_fit {
        for &d in std::iter::once(&args.density).chain(&args.also_density) {
            minference_search::budget::check_density(d)?;
        }
        opts.space.given.extend(density_ladder());
    }
    if args.output.is_none() && args.hf_config.is_none() {
        bail!("give -o/--output (MInference's JSON) or --hf-config (an HF config.json), or both");
    }
    // Fail on an unwritable output or a bad HF config before spending minutes on the search.
    let hf = args.hf_config.as_ref().map(|p| check_hf_config(p)).transpose()?;
    let out_file = match &args.output {
        Some(o) => {
            Some(std::fs::File::create(o).with_context(|| format!("cannot write the config to {}", o.display()))?)
        }
        None => None,
    };
    let result = search_and_write(args, &opts, out_file, hf.as_deref());
    if result.is_err() {
        if let Some(o) = &args.output {
            // Best effort: do not leave an empty config behind.
            let _ = std::fs::remove_file(o);
        }
    }
    result
}

/// The text of the HF config.json `search --hf-config` will update: it must exist, be a JSON
/// object and be writable. Returns its text.
fn check_hf_config(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("--hf-config {}: cannot read it (it must be an existing config.json)", path.display())
    })?;
    // Parses it the way the write will (a JSON object); the patterns written here are a placeholder.
    minference_core::write_hf_config(
        &text,
        &minference_core::ModelPatternConfig::default(),
        &path.display().to_string(),
    )
    .with_context(|| format!("--hf-config {}", path.display()))?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("--hf-config {}: cannot write it", path.display()))?;
    Ok(text)
}

fn search_and_write(
    args: &SearchArgs,
    opts: &SearchOptions,
    out_file: Option<std::fs::File>,
    hf_text: Option<&str>,
) -> Result<()> {
    let base = match &args.from_details {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading --from-details {}", p.display()))?;
            let s = minference_search::details::from_tsv(&text, &p.display().to_string())?;
            if let (Some(text), Some(path)) = (hf_text, &args.hf_config) {
                let (layers, heads) = (s.config.layers.len(), s.config.layers.first().map_or(0, |l| l.heads.len()));
                minference_core::hf_config::check_hf_model_shape(text, &path.display().to_string(), layers, heads)
                    .context("--hf-config: the file does not fit the searched model")?;
            }
            eprintln!("re-allocating the {} heads of {}", s.heads.len(), p.display());
            s
        }
        None => run_searches(args, opts, hf_text)?,
    };
    finish(args, opts, base, out_file, hf_text)
}

/// Loads the model and the calibration documents and searches every document; the merged search.
fn run_searches(args: &SearchArgs, opts: &SearchOptions, hf_text: Option<&str>) -> Result<ModelSearch> {
    let model = Arc::new(load_model(&args.model)?);
    if let (Some(text), Some(path)) = (hf_text, &args.hf_config) {
        let (layers, heads) = (model.config().layers, model.config().heads);
        minference_core::hf_config::check_hf_model_shape(text, &path.display().to_string(), layers, heads)
            .context("--hf-config: the file does not fit the model searched")?;
    }
    let mut engine = open_device(SearchDevice::parse(&args.device)?, &model)?;
    // The GPU scorer sums the unweighted output error: `auto` takes that objective there.
    let mut opts = opts.clone();
    if engine.is_some() && args.objective == "auto" {
        opts.objective = Objective::OutputRelL2;
    }
    let opts = &opts;
    let cfg = model.config().clone();
    let mut sources: Vec<CalibrationSource> = args.calibration.iter().cloned().map(CalibrationSource::File).collect();
    if args.synthetic_kv_retrieval {
        sources.push(CalibrationSource::SyntheticKvRetrieval { seed: args.seed });
    }
    let calibrations = load_calibrations(model.tokenizer()?, &sources, args.len, cfg.context_length)?;
    if let Some(p) = &args.save_prompt {
        let text: Vec<&str> = calibrations.iter().map(|c| c.text.as_str()).collect();
        std::fs::write(p, text.join("\n")).with_context(|| format!("writing {}", p.display()))?;
    }
    let described: Vec<&str> = calibrations.iter().map(|c| c.description.as_str()).collect();
    eprintln!(
        "searching {} ({} layers × {} heads) on {} ({}); objective {}, presets {}, target {}, {}",
        cfg.name,
        cfg.layers,
        cfg.heads,
        described.join(" + "),
        engine.as_ref().map_or("CPU".to_string(), |e| e.gpu().name().to_string()),
        opts.objective.name(),
        args.presets,
        args.target_cost,
        if args.per_head_fit { "per-head fit".to_string() } else { format!("mean kernel density <= {}", args.density) }
    );
    let style = ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} heads {elapsed}")
        .map_err(|e| anyhow!(e))?
        .progress_chars("=> ");
    // One bar per layer: a new bar starts when the first head of the next layer finishes.
    let bar: Mutex<Option<(usize, ProgressBar)>> = Mutex::new(None);
    let on_head = |layer: usize, _head: usize| {
        let Ok(mut guard) = bar.lock() else { return };
        if guard.as_ref().is_none_or(|(l, _)| *l != layer) {
            if let Some((_, old)) = guard.take() {
                old.finish();
            }
            let pb = ProgressBar::new(cfg.heads as u64).with_style(style.clone()).with_prefix(format!("layer {layer}"));
            *guard = Some((layer, pb));
        }
        if let Some((_, pb)) = guard.as_ref() {
            pb.inc(1);
        }
    };
    // The first document's patterns of every head are scored on the later ones too.
    let mut searches: Vec<ModelSearch> = Vec::with_capacity(calibrations.len());
    for c in &calibrations {
        let extra = searches.first().map(extras_of);
        let s = match engine.as_mut() {
            Some(e) => search_model_gpu_with(e, &c.tokens, opts, extra.as_ref(), &on_head)?,
            None => search_model_with(Arc::clone(&model), &c.tokens, opts, extra.as_ref(), &on_head)?,
        };
        if let Ok(mut guard) = bar.lock() {
            if let Some((_, pb)) = guard.take() {
                pb.finish();
            }
        }
        eprintln!("searched {} in {:.1} s", c.description, s.seconds);
        searches.push(s);
    }
    let merged = merge_searches(&searches, &opts.objective)?;
    if !args.layer_sensitivity {
        return Ok(merged);
    }
    let documents: Vec<&[u32]> = calibrations.iter().map(|c| c.tokens.as_slice()).collect();
    weigh_by_layer_sensitivity(args, opts, &model, &documents, merged)
}

/// The allocation's loss of one candidate: the objective's loss to the power `power`.
fn loss_fn(opts: &SearchOptions, power: f64) -> impl Fn(&minference_search::CandidateScore) -> f64 {
    let objective = opts.objective;
    move |c: &minference_search::CandidateScore| {
        minference_search::budget::candidate_loss(c, &objective).max(0.0).powf(power)
    }
}

/// Allocates, writes the config(s), the details and the summary.
fn finish(
    args: &SearchArgs,
    opts: &SearchOptions,
    base: ModelSearch,
    out_file: Option<std::fs::File>,
    hf_text: Option<&str>,
) -> Result<()> {
    let mut search = base.clone();
    let loss = loss_fn(opts, args.budget_loss_power);
    if !args.per_head_fit {
        let reached = search.allocate_density_by(args.density, &loss)?;
        eprintln!(
            "--density {}: allocated mean kernel density {reached:.4} across {} heads",
            args.density,
            search.heads.len()
        );
    }
    if let Some(o) = &args.output {
        for &d in &args.also_density {
            let mut s = base.clone();
            let reached = s.allocate_density_by(d, &loss)?;
            let path = density_path(o, d);
            std::fs::write(&path, s.config.to_json_string()).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("--also-density {d}: mean kernel density {reached:.4}, wrote {}", path.display());
        }
    }
    if let (Some(mut f), Some(o)) = (out_file, &args.output) {
        f.write_all(search.config.to_json_string().as_bytes()).with_context(|| format!("writing {}", o.display()))?;
    }
    if let (Some(text), Some(path)) = (hf_text, &args.hf_config) {
        write_hf_file(path, text, &search.config)?;
    }
    if let Some(p) = &args.details {
        std::fs::write(p, minference_search::details::to_tsv(&search))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    println!("{}", search.summary());
    for p in args.output.iter().chain(&args.hf_config) {
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// Writes `config` into the HF config.json at `path` (whose text was `text`): through a temporary
/// file beside it and a rename, so an interrupted write leaves the old file.
fn write_hf_file(path: &std::path::Path, text: &str, config: &minference_core::ModelPatternConfig) -> Result<()> {
    let updated = minference_core::write_hf_config(text, config, &path.display().to_string())?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".minference-tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, updated).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// `dir/stem.density-<d>.json` for `-o dir/stem.json`.
fn density_path(output: &std::path::Path, density: f64) -> PathBuf {
    let stem = output.file_stem().unwrap_or_default().to_string_lossy();
    output.with_file_name(format!("{stem}.density-{density}.json"))
}

/// Candidates added under `--density`, so every head has options from a sliver to dense.
fn density_ladder() -> Vec<minference_core::HeadPattern> {
    use minference_core::HeadPattern::*;
    let vs = |k_v, k_s| VerticalSlash { k_v, k_s };
    vec![
        Dense,
        vs(30, 200),
        vs(30, 400),
        vs(30, 800),
        vs(200, 1000),
        vs(500, 2000),
        vs(100, 800),
        vs(100, 1500),
        vs(300, 2000),
        vs(500, 4000),
        vs(1000, 6096),
        vs(2000, 8192),
        AShape { n_init: 64, n_local: 512 },
    ]
}

#[cfg(test)]
#[path = "search_cmd_tests.rs"]
mod tests;
