//! `search --layer-sensitivity`: the searched scores weighed by each layer's measured effect on
//! the model's output (docs/search.md "Layer sensitivity").

use super::{loss_fn, SearchArgs};
use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};
use minference_model::Model;
use minference_search::sensitivity::SensitivityMetric;
use minference_search::{ModelSearch, SearchOptions};
use std::sync::Arc;

/// `search`'s scores weighed by each layer's measured sensitivity under the allocation at
/// `--density`, the mean over `documents` (docs/search.md "Layer sensitivity").
pub(super) fn weigh_by_layer_sensitivity(
    args: &SearchArgs,
    opts: &SearchOptions,
    model: &Arc<Model>,
    documents: &[&[u32]],
    mut search: ModelSearch,
) -> Result<ModelSearch> {
    if documents.is_empty() {
        return Err(anyhow!("no calibration document to measure the layer sensitivity on"));
    }
    let mut allocated = search.clone();
    allocated.allocate_density_by(args.density, &loss_fn(opts, args.budget_loss_power))?;
    let layers = model.config().layers;
    // One tick per layer's forward; each document's dense reference runs before its first.
    let pb = ProgressBar::new((layers * documents.len()) as u64)
        .with_style(
            ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} forwards {elapsed}")
                .map_err(|e| anyhow!(e))?
                .progress_chars("=> "),
        )
        .with_prefix("layers");
    let start = std::time::Instant::now();
    let metric = sensitivity_metric(&args.sensitivity_metric, args.sensitivity_rows)?;
    let mut measured = vec![0f64; layers];
    for tokens in documents {
        let floor = opts.floor_for(tokens.len());
        let one = minference_search::sensitivity::measure(model, tokens, &allocated, floor, metric, &|_| pb.inc(1))?;
        for (m, x) in measured.iter_mut().zip(one) {
            *m += x / documents.len() as f64;
        }
    }
    pb.finish();
    let factors = minference_search::sensitivity::factors(&allocated, &measured)?;
    minference_search::sensitivity::scale(&mut search, &factors)?;
    let shown: Vec<String> = factors.iter().map(|f| format!("{f:.2}")).collect();
    eprintln!(
        "layer sensitivity ({} forwards, {:.1} s): weights {}",
        (layers + 1) * documents.len(),
        start.elapsed().as_secs_f64(),
        shown.join(" ")
    );
    Ok(search)
}

/// `--sensitivity-metric` and `--sensitivity-rows`.
pub(super) fn sensitivity_metric(name: &str, rows: usize) -> Result<SensitivityMetric> {
    match name {
        "kl" if rows > 0 => Ok(SensitivityMetric::Kl { rows }),
        "kl" => Err(anyhow!("--sensitivity-rows must be at least 1")),
        "residual" => Ok(SensitivityMetric::Residual),
        o => Err(anyhow!("unknown --sensitivity-metric `{o}` (kl, residual)")),
    }
}
