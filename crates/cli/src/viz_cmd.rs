//! `minference viz`: a PNG of one head's attention (or a grid of a layer's heads) with the kernel
//! mask of its pattern overlaid; recall and kernel density in the caption.

use crate::search_cmd::{load_model, search_options};
use anyhow::{bail, Context, Result};
use minference_core::config::ModelPatternConfig;
use minference_search::calibration::{load_calibration, CalibrationSource};
use minference_search::capture::capture_layer;
use minference_search::viz::{grid, render_head, VizOptions};
use minference_search::{search_head, HeadCandidates, HeadInputs};
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("prompt_source").required(true).args(["prompt", "synthetic_kv_retrieval"]))]
pub struct VizArgs {
    /// GGUF file or safetensors directory (default: the SmolLM2 model under ./models).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Prompt text file.
    #[arg(long)]
    pub prompt: Option<PathBuf>,
    /// Use the seeded synthetic KV-retrieval prompt instead of a file.
    #[arg(long)]
    pub synthetic_kv_retrieval: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Prompt length in tokens (default: the file's length, or 4096 for the synthetic prompt).
    #[arg(long)]
    pub len: Option<usize>,
    #[arg(long)]
    pub layer: usize,
    /// Query head (required unless --grid).
    #[arg(long)]
    pub head: Option<usize>,
    /// All heads of the layer in one picture.
    #[arg(long)]
    pub grid: bool,
    #[arg(short, long)]
    pub output: PathBuf,
    /// Take each head's pattern from this MInference config instead of searching it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Search settings when no --config is given (see `minference search`).
    #[arg(long, default_value = "ashape:1024,4096")]
    pub target_cost: String,
    #[arg(long, default_value = "kernel-aware")]
    pub presets: String,
    /// Largest side of each heat map in pixels.
    #[arg(long, default_value_t = 768)]
    pub max_px: usize,
    /// Prompts longer than this show the last 64 query rows instead of the full matrix.
    #[arg(long, default_value_t = 8192)]
    pub full_limit: usize,
}

pub fn run(args: &VizArgs) -> Result<()> {
    if !args.grid && args.head.is_none() {
        bail!("pass --head H, or --grid for all heads of the layer");
    }
    let model = load_model(&args.model)?;
    let cfg = model.config().clone();
    if args.layer >= cfg.layers {
        bail!("layer {} does not exist ({} has {} layers)", args.layer, cfg.name, cfg.layers);
    }
    if let Some(h) = args.head.filter(|&h| h >= cfg.heads) {
        bail!("head {h} does not exist ({} has {} query heads)", cfg.name, cfg.heads);
    }
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let c = ModelPatternConfig::from_json_str(&text, &path.display().to_string())?;
            c.validate_model(cfg.layers, cfg.heads)
                .with_context(|| format!("{} does not fit {}", path.display(), cfg.name))?;
            Some(c)
        }
        None => None,
    };
    let source = match &args.prompt {
        Some(p) => CalibrationSource::File(p.clone()),
        None => CalibrationSource::SyntheticKvRetrieval { seed: args.seed },
    };
    let prompt = load_calibration(model.tokenizer()?, &source, args.len, cfg.context_length)?;
    // Check the output location before the forward pass; a failed run leaves no empty file behind.
    std::fs::File::create(&args.output).with_context(|| format!("cannot write {}", args.output.display()))?;
    let result = draw(args, &cfg, config.as_ref(), &prompt.tokens, model);
    if result.is_err() {
        let _ = std::fs::remove_file(&args.output);
    }
    result
}

fn draw(
    args: &VizArgs,
    cfg: &minference_model::ModelConfig,
    config: Option<&ModelPatternConfig>,
    tokens: &[u32],
    model: minference_model::Model,
) -> Result<()> {
    let heads: Vec<usize> = if args.grid { (0..cfg.heads).collect() } else { args.head.into_iter().collect() };
    let captured = capture_layer(Arc::new(model), tokens, args.layer)?;
    let viz = VizOptions { max_px: args.max_px, full_limit: args.full_limit, ..VizOptions::default() };
    let images = heads
        .par_iter()
        .map(|&head| -> Result<_> {
            let c = &captured[head];
            let h = HeadInputs::new(&c.q, &c.k, Some(&c.v), c.head_dim)?;
            let mut opts = search_options("recall", &args.target_cost, &args.presets, &[], None)?;
            if let Some(config) = config {
                opts.space.presets.clear();
                opts.space.given = vec![config.pattern(args.layer, head)?];
            }
            let result = search_head(&h, &opts, false)?;
            let chosen = result.chosen();
            let mask = HeadCandidates::new(&h)?.mask(&chosen.pattern)?;
            let view = if c.n <= viz.full_limit { "full" } else { "last 64 rows" };
            let caption = vec![
                format!("layer {} head {}  N={}  ({view})", args.layer, head, c.n),
                chosen.pattern.describe(),
                format!("recall {:.4}  kernel density {:.3}  work {:.3}", chosen.recall, chosen.density, chosen.work),
            ];
            Ok(render_head(&h, &mask, &caption, &viz)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let image = if images.len() == 1 {
        images.into_iter().next().unwrap_or_else(|| grid(&[], 1))
    } else {
        grid(&images, (images.len() as f64).sqrt().ceil() as usize)
    };
    image.write_png(&args.output)?;
    println!("wrote {} ({}×{})", args.output.display(), image.width, image.height);
    Ok(())
}
