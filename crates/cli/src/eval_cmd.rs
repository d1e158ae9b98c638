//! `minference eval needle` (CPU, one GPU or a GPU group) and `minference eval ppl` (CPU): dense vs
//! MInference on a real model.

use crate::device::{parse_device, DeviceChoice};
use crate::engines::{open_engine, EngineWeights, Placement};
use crate::eval_variants::{variants, Variant, VariantArgs};
use crate::lengths::parse_length;
use crate::model_args::{load_model, ModelArgs};
use anyhow::{bail, Context, Result};
use minference_engine::PrefillEngine;
use minference_eval::{
    build_needle_prompt, needle_value, parse_depths, prefill_hidden_with_coverage, run_needle_cell, score_streams,
    write_pareto_png, write_png, Haystack, NeedleGrid, ParetoPoint, PromptFrame,
};
use minference_model::{Model, Tokenizer};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Subcommand, Debug)]
pub enum EvalCommand {
    /// Needle (passkey) retrieval over lengths × depths, each attention kind on the same cells; PNG heat map.
    Needle(NeedleArgs),
    /// Perplexity, mean NLL, next-token KL and kernel density on the end of a long document.
    Ppl(PplArgs),
}

#[derive(clap::Args, Debug)]
pub struct NeedleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub variants: VariantArgs,
    /// Prompt lengths in tokens.
    #[arg(long, value_delimiter = ',', value_parser = parse_length, default_value = "1k,2k,4k,8k")]
    pub lengths: Vec<usize>,
    /// Needle depths in percent of the haystack, e.g. `0,25,50,75,100` or `0,10,..,100`.
    #[arg(long, default_value = "0,25,50,75,100")]
    pub depths: String,
    /// Use the prompt verbatim, ending in "The pass key is" (no chat template).
    #[arg(long)]
    pub raw: bool,
    /// Haystack text file (UTF-8); default: filler sentences chosen by --seed.
    #[arg(long)]
    pub haystack: Option<PathBuf>,
    /// Seed of the filler rotation and of the pass keys.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokens decoded per cell (default 8 raw, 24 with the chat template).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Heat-map PNG.
    #[arg(short, long, default_value = "needle.png")]
    pub output: PathBuf,
    #[command(flatten)]
    pub device: EvalDevice,
}

#[derive(clap::Args, Debug)]
pub struct PplArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub variants: VariantArgs,
    /// The document (UTF-8 text).
    #[arg(long)]
    pub file: PathBuf,
    /// Tokens of the document prefilled (its first `len`).
    #[arg(long, value_parser = parse_length, default_value = "8192")]
    pub len: usize,
    /// Positions scored: the last `last` tokens of the prefix.
    #[arg(long, value_parser = parse_length, default_value = "4096")]
    pub last: usize,
    /// Also draw Δ perplexity against kernel density of every variant (but the reference) as a PNG
    /// (CPU only: the GPU kernels record no kernel density).
    #[arg(long)]
    pub pareto: Option<PathBuf>,
    #[command(flatten)]
    pub device: EvalDevice,
}

/// Where an eval runs. On a GPU the prefills run there; perplexity scoring stays on the host.
#[derive(clap::Args, Debug)]
pub struct EvalDevice {
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceChoice,
    /// GPUs to spread the model over (tensor parallel, NCCL), from the --device ordinal on.
    #[arg(long, default_value_t = 1)]
    pub gpus: usize,
    /// GPU storage precision: bf16 or f16.
    #[arg(long, default_value = "bf16", value_parser = crate::engines::parse_precision)]
    pub precision: minference_engine_gpu::Precision,
}

impl EvalDevice {
    fn placement(&self) -> Result<Placement> {
        Placement::resolve(self.device, self.gpus)
    }

    /// The engine for `model` where `--device`/`--gpus` put it.
    fn open(&self, model: &std::sync::Arc<Model>) -> Result<Box<dyn PrefillEngine>> {
        open_engine(EngineWeights::Model(model.clone()), self.placement()?, self.precision)
    }
}

pub fn run(command: &EvalCommand) -> Result<()> {
    match command {
        EvalCommand::Needle(a) => run_needle(a),
        EvalCommand::Ppl(a) => run_ppl(a),
    }
}

fn encoder(tokenizer: &Tokenizer) -> impl Fn(&str) -> minference_eval::Result<Vec<u32>> + '_ {
    move |text| Ok(tokenizer.encode(text)?)
}

fn run_needle(args: &NeedleArgs) -> Result<()> {
    let depths = parse_depths(&args.depths)?;
    if args.lengths.is_empty() {
        bail!("--lengths needs at least one length");
    }
    let model = std::sync::Arc::new(load_model(&args.model)?);
    let context = model.config().context_length;
    if let Some(l) = args.lengths.iter().find(|&&l| l > context) {
        bail!("length {l} is longer than the model's context of {context} tokens");
    }
    let tokenizer = model.tokenizer()?;
    let encode = encoder(tokenizer);
    let haystack = match &args.haystack {
        Some(path) => Haystack::from_file(path, &encode)?,
        None => Haystack::filler(args.seed, &encode)?,
    };
    let frame = if args.raw {
        PromptFrame::raw()
    } else {
        const MARKER: &str = "\u{1}USER\u{1}";
        PromptFrame::from_rendered(&tokenizer.chat_prompt(MARKER, None), MARKER)?
    };
    // BOS goes in front when the model's tokenizer asks for one (as `minference run` does).
    let frame = PromptFrame { bos: if tokenizer.add_bos { tokenizer.bos } else { None }, ..frame };
    let max_new_tokens = args.max_new_tokens.unwrap_or(if args.raw { 8 } else { 24 });
    let variants = variants(&args.variants, &args.model, &model)?;
    let names: Vec<String> = variants.iter().map(|v| v.title.clone()).collect();
    let mut grid = NeedleGrid::new(args.lengths.clone(), depths.clone(), names);
    eprintln!(
        "needle: model {} | {} mode | haystack {} | {} lengths × {} depths × {} attention kinds",
        model.config().name,
        if args.raw { "raw" } else { "chat" },
        args.haystack.as_ref().map_or(format!("filler (seed {})", args.seed), |p| p.display().to_string()),
        args.lengths.len(),
        depths.len(),
        variants.len()
    );

    let mut engine = args.device.open(&model)?;
    let device = engine.device_name();
    eprintln!("needle device: {device}");
    let bar = crate::progress::count_bar(args.lengths.len() * depths.len() * variants.len(), "needle");
    let start = Instant::now();
    for (c, &length) in args.lengths.iter().enumerate() {
        for (r, &depth) in depths.iter().enumerate() {
            let value = needle_value(args.seed, length, depth);
            // Decoded tokens must fit in the context too.
            let prompt_len = length.min(context.saturating_sub(max_new_tokens));
            let prompt = build_needle_prompt(&haystack, &frame, &encode, prompt_len, depth, &value)?;
            for (v, Variant { title: name, attention, .. }) in variants.iter().enumerate() {
                let cell = run_needle_cell(engine.as_mut(), tokenizer, &prompt, attention, max_new_tokens, &mut |_| {})
                    .with_context(|| format!("needle cell {length} tokens, depth {depth}%, {name}"))?;
                bar.set_message(format!(
                    "{name} {length} tok {depth}%: {} ({:.1} s)",
                    if cell.found { "found" } else { "missed" },
                    cell.seconds
                ));
                bar.inc(1);
                if bar.is_hidden() {
                    eprintln!(
                        "{name} {length} tok {depth}%: {} {:?} ({:.1} s)",
                        if cell.found { "found" } else { "missed" },
                        cell.answer,
                        cell.seconds
                    );
                }
                grid.cells[v][r][c] = Some(cell);
            }
        }
    }
    bar.finish_and_clear();
    println!(
        "## Needle retrieval: {} ({} mode, {} decoded tokens, seed {}), {device}, {:.0} s",
        model.config().name,
        if args.raw { "raw" } else { "chat" },
        max_new_tokens,
        args.seed,
        start.elapsed().as_secs_f64()
    );
    print!("{}", grid.markdown());
    let caption = format!(
        "{} | needle retrieval, {} prompt | columns: prompt tokens, rows: needle depth | green found, red missed",
        model.config().name,
        if args.raw { "raw" } else { "chat" }
    );
    write_png(&args.output, &grid.panels(), &args.lengths, &depths, &caption)?;
    eprintln!("heat map written to {}", args.output.display());
    Ok(())
}

/// The first `len` tokens of a UTF-8 document.
fn document_tokens(path: &PathBuf, tokenizer: &Tokenizer, len: usize) -> Result<Vec<u32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!("{} is not UTF-8 (invalid byte at offset {})", path.display(), e.utf8_error().valid_up_to())
    })?;
    if text.trim().is_empty() {
        bail!("{} is empty", path.display());
    }
    let mut tokens = tokenizer.encode_prompt(&text)?;
    if tokens.len() < len {
        bail!("{} has only {} tokens; --len asks for {len}", path.display(), tokens.len());
    }
    tokens.truncate(len);
    Ok(tokens)
}

fn run_ppl(args: &PplArgs) -> Result<()> {
    let model = std::sync::Arc::new(load_model(&args.model)?);
    let context = model.config().context_length;
    if args.len > context {
        bail!("--len {} is longer than the model's context of {context} tokens", args.len);
    }
    if args.last == 0 || args.last >= args.len {
        bail!("--last must be in 1..{} (the first token has no prediction)", args.len);
    }
    let tokenizer = model.tokenizer()?;
    let tokens = document_tokens(&args.file, tokenizer, args.len)?;
    let variants = variants(&args.variants, &args.model, &model)?;
    eprintln!(
        "ppl: model {} | {} | first {} tokens, scoring the last {}",
        model.config().name,
        args.file.display(),
        args.len,
        args.last
    );

    let layers = model.config().layers;
    let bar = crate::progress::count_bar(variants.len() * layers, "prefill");
    let mut streams = Vec::with_capacity(variants.len());
    let mut densities = Vec::with_capacity(variants.len());
    let mut seconds = Vec::with_capacity(variants.len());
    let device = match args.device.placement()? {
        placement @ Placement::Gpus { .. } => {
            let mut engine = open_engine(EngineWeights::Model(model.clone()), placement, args.device.precision)?;
            let name = engine.device_name();
            for (v, Variant { title: variant, attention, .. }) in variants.iter().enumerate() {
                bar.set_message(variant.clone());
                let (hidden, stats) = engine.prefill_residual(&tokens, attention, &mut |p| {
                    bar.set_position((v * layers + p.layer + 1) as u64)
                })?;
                eprintln!("prefill `{variant}` on {name}: {:.2} s", stats.seconds);
                // The GPU kernels keep no per-entry coverage record.
                densities.push(f64::NAN);
                seconds.push(stats.seconds);
                streams.push(hidden);
            }
            name
        }
        Placement::Cpu => {
            // On the CPU an observer also measures the kernel density of each variant.
            let mut engine = minference_engine::cpu_engine(model.clone());
            for (v, Variant { title: name, attention, .. }) in variants.iter().enumerate() {
                bar.set_message(name.clone());
                let (hidden, stats, coverage) =
                    prefill_hidden_with_coverage(&mut engine, &tokens, attention, &mut |p| {
                        bar.set_position((v * layers + p.layer + 1) as u64)
                    })?;
                let density = coverage.density();
                eprintln!("prefill `{name}`: {:.1} s, kernel density {:.1}%", stats.seconds, 100.0 * density);
                densities.push(density);
                seconds.push(stats.seconds);
                streams.push(hidden);
            }
            "CPU".to_string()
        }
    };
    bar.finish_and_clear();
    eprintln!("scoring {} positions of {} prefills", args.last, streams.len());
    let refs: Vec<&[f32]> = streams.iter().map(Vec::as_slice).collect();
    let positions = args.len - 1 - args.last..args.len - 1;
    let scores = score_streams(&model, &tokens, positions, &refs)?;

    let reference = &variants[0].title;
    println!(
        "## Perplexity: {} on {} (first {} tokens, last {} scored), {device}\n",
        model.config().name,
        args.file.display(),
        args.len,
        args.last
    );
    println!("| attention | mean NLL | Δ NLL vs {reference} | perplexity | Δ ppl | KL({reference} ‖ ·) nats/token | top-1 agreement | kernel density | prefill s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let base = scores[0];
    for ((Variant { title: name, .. }, s), (density, secs)) in
        variants.iter().zip(&scores).zip(densities.iter().zip(&seconds))
    {
        println!(
            "| {name} | {:.4} | {:+.2}% | {:.3} | {:+.2}% | {:.5} | {:.2}% | {} | {:.1} |",
            s.mean_nll,
            100.0 * (s.mean_nll / base.mean_nll - 1.0),
            s.perplexity,
            100.0 * (s.perplexity / base.perplexity - 1.0),
            s.mean_kl,
            100.0 * s.top1_agreement,
            if density.is_nan() { "n/a (GPU)".to_string() } else { format!("{:.1}%", 100.0 * density) },
            secs
        );
    }
    println!("\ntop-1 agreement: share of scored positions whose most likely next token is {reference}'s.");
    println!("kernel density: causal (query, key) pairs the attention kernels computed over every layer and head of the whole prefill, from the indices they used.");
    if let Some(path) = &args.pareto {
        let points: Vec<ParetoPoint> = variants
            .iter()
            .zip(&scores)
            .zip(&densities)
            .skip(1)
            .map(|((v, s), &density)| ParetoPoint {
                label: v.title.clone(),
                group: v.group.clone(),
                density,
                delta_ppl_percent: 100.0 * (s.perplexity / base.perplexity - 1.0),
            })
            .collect();
        let caption = format!(
            "{} | {} | first {} tokens, last {} scored | delta perplexity vs {reference} against kernel density",
            model.config().name,
            args.file.file_name().unwrap_or_default().to_string_lossy(),
            args.len,
            args.last
        );
        write_pareto_png(path, &points, &caption).with_context(|| format!("Pareto picture {}", path.display()))?;
        eprintln!("Pareto picture written to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ppl_args(file: PathBuf, len: usize, last: usize) -> Option<PplArgs> {
        let model = minference_test_support::default_model()?;
        Some(PplArgs {
            model: ModelArgs {
                model: Some(model),
                random_weights: None,
                layers: None,
                config: None,
                starting_layer: 0,
                dense_below: crate::model_args::DenseBelow::Auto,
            },
            variants: VariantArgs {
                attention: vec![crate::model_args::AttentionKind::Dense],
                budgets: vec![],
                adaptive: vec![],
                configs: vec![],
            },
            file,
            len,
            last,
            pareto: None,
            device: EvalDevice { device: DeviceChoice::Cpu, gpus: 1, precision: Default::default() },
        })
    }

    #[test]
    fn gpus_on_the_cpu_is_an_error() {
        assert!(Placement::resolve(DeviceChoice::Cpu, 2).is_err());
        assert!(Placement::resolve(DeviceChoice::Cpu, 0).is_err());
        assert_eq!(Placement::resolve(DeviceChoice::Cpu, 1).ok(), Some(Placement::Cpu));
        assert_eq!(Placement::resolve(DeviceChoice::Cuda(1), 2).ok(), Some(Placement::Gpus { first: 1, count: 2 }));
    }

    #[test]
    fn ppl_bad_input_gives_clear_errors() {
        let dir = std::env::temp_dir().join(format!("minference-eval-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let (latin1, empty, short) = (dir.join("latin1.txt"), dir.join("empty.txt"), dir.join("short.txt"));
        std::fs::write(&latin1, b"caf\xe9").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&empty, b"").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&short, "fn main() {}\n").unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            (short.clone(), 16384, 100, "context"),
            (short.clone(), 1024, 1024, "--last"),
            (latin1, 1024, 100, "not UTF-8"),
            (empty, 1024, 100, "empty"),
            (short, 1024, 100, "only"),
        ];
        for (file, len, last, expected) in cases {
            let Some(args) = ppl_args(file, len, last) else { return };
            let err = run_ppl(&args).expect_err("bad input must fail");
            assert!(format!("{err:#}").contains(expected), "expected `{expected}` in: {err:#}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
