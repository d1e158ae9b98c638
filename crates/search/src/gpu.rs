//! The search on the GPU: the model's dense forward runs on the device
//! ([`GpuEngine::prefill_observed`]); after each attention call the pass's Q/K are copied to the host
//! and every head's candidates are built exactly as on the CPU ([`HeadCandidates`]), so both paths
//! choose among the same masks; the candidates are then scored on the device
//! ([`crate::gpu_score::score_masks`]) and ranked by the same [`pick_best`].

use crate::candidates::{Candidate, HeadCandidates};
use crate::dense::HeadInputs;
use crate::driver::{head_options, HeadExtras, HeadReport, ModelSearch};
use crate::error::SearchError;
use crate::gpu_score::{score_masks, ScoreMask, ScoreRequest, ScoreSums};
use crate::head::{HeadSearch, SearchOptions};
use crate::mask::HeadMask;
use crate::objective::{Objective, Tally};
use minference_core::config::{HeadEntry, LayerPatterns, ModelPatternConfig};
use minference_cuda::{CudaError, DeviceHead, Gpu, HeadSlice};
use minference_engine::AttentionChoice;
use minference_engine_gpu::{AttentionPass, EngineError, GpuEngine, PassObserver};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::time::Instant;
use thiserror::Error;

/// Every way the GPU search can fail.
#[derive(Debug, Error)]
pub enum GpuSearchError {
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Cuda(#[from] CudaError),
}

pub type GpuResult<T> = std::result::Result<T, GpuSearchError>;

/// The device scorer's view of a candidate's mask.
pub fn score_mask(mask: &HeadMask) -> ScoreMask<'_> {
    match mask {
        HeadMask::Dense => ScoreMask::Dense,
        HeadMask::AShape { n_init, n_local } => ScoreMask::AShape { n_init: *n_init, n_local: *n_local },
        HeadMask::Index(rows) => ScoreMask::Index(rows),
    }
}

/// Output-count threshold of `objective` (the CPU path's default for the others).
fn output_threshold(objective: &Objective) -> f32 {
    match *objective {
        Objective::OutputCount { threshold } => threshold,
        _ => 5e-3,
    }
}

impl From<ScoreSums> for Tally {
    fn from(s: ScoreSums) -> Self {
        Tally { rows: s.rows, mass: s.mass, err_sq: s.err_sq, ref_sq: s.ref_sq, over: s.over, ..Tally::default() }
    }
}

/// Scores `cands` of one head on the device: the same [`Tally`] sums as the CPU path.
pub fn score_candidates_gpu(
    gpu: &Gpu,
    head: &DeviceHead,
    cands: &[Candidate],
    opts: &SearchOptions,
) -> GpuResult<Vec<Tally>> {
    let masks: Vec<ScoreMask> = cands.iter().map(|c| score_mask(&c.mask)).collect();
    let req = ScoreRequest {
        floor: opts.floor_for(head.n),
        want_output: opts.objective.needs_output(),
        threshold: output_threshold(&opts.objective),
    };
    Ok(score_masks(gpu, head, &masks, &req)?.into_iter().map(Tally::from).collect())
}

/// Ranks scored candidates as [`crate::search_head`] does (no dense output is kept).
fn head_search(cands: &[Candidate], tallies: &[Tally], opts: &SearchOptions) -> HeadSearch {
    let (candidates, best) = crate::head::rank_candidates(cands, tallies, opts);
    HeadSearch { candidates, best, dense_output: None }
}

/// Searches one head: candidates from `host` (its Q/K as f32, the same values as on the device),
/// scores from `head` on the device.
pub fn search_head_gpu(gpu: &Gpu, head: &DeviceHead, host: &HeadInputs, opts: &SearchOptions) -> GpuResult<HeadSearch> {
    if host.n != head.n || host.head_dim != head.head_dim {
        return Err(SearchError::Input(format!(
            "host head is [{}, {}] but the device head is [{}, {}]",
            host.n, host.head_dim, head.n, head.head_dim
        ))
        .into());
    }
    let cands = HeadCandidates::new(host)?.build(&opts.space)?;
    let tallies = score_candidates_gpu(gpu, head, &cands, opts)?;
    Ok(head_search(&cands, &tallies, opts))
}

/// Searches every query head of one attention pass.
fn search_pass(
    gpu: &Gpu,
    pass: &AttentionPass,
    opts: &SearchOptions,
    extra: Option<&HeadExtras>,
    on_head: &(dyn Fn(usize, usize) + Sync),
) -> GpuResult<Vec<HeadReport>> {
    let (n, d) = (pass.tokens, pass.head_dim);
    if pass.kv_heads == 0 || !pass.heads.is_multiple_of(pass.kv_heads) {
        return Err(SearchError::Input(format!(
            "{} query heads do not group over {} KV heads",
            pass.heads, pass.kv_heads
        ))
        .into());
    }
    let group = pass.heads / pass.kv_heads;
    let q = pass.q.download_f32(gpu)?;
    let k = pass.k.download_f32(gpu)?;
    if q.len() < pass.heads * n * d || k.len() < pass.kv_heads * n * d || pass.v.len < pass.kv_heads * n * d {
        return Err(SearchError::Input("the attention pass's tensors are smaller than its shape".into()).into());
    }
    let slice = |t: &[f32], i: usize| -> Vec<f32> { t[i * n * d..(i + 1) * n * d].to_vec() };
    // Candidates on the host (the CPU path's code), the pass's heads in parallel.
    let built: Vec<crate::error::Result<Vec<Candidate>>> = (0..pass.heads)
        .into_par_iter()
        .map(|h| {
            let (qh, kh) = (slice(&q, h), slice(&k, h / group));
            let inputs = HeadInputs::new(&qh, &kh, None, d)?;
            HeadCandidates::new(&inputs)?.build(&head_options(opts, extra, pass.layer, pass.first_head + h).space)
        })
        .collect();
    let mut reports = Vec::with_capacity(pass.heads);
    for (h, cands) in built.into_iter().enumerate() {
        let cands = cands?;
        let kv = h / group;
        let dev = DeviceHead {
            q: HeadSlice { tensor: pass.q, offset: h * n * d },
            k: HeadSlice { tensor: pass.k, offset: kv * n * d },
            v: HeadSlice { tensor: pass.v, offset: kv * n * d },
            n,
            head_dim: d,
        };
        let tallies = score_candidates_gpu(gpu, &dev, &cands, opts)?;
        let head = pass.first_head + h;
        reports.push(HeadReport { layer: pass.layer, head, search: head_search(&cands, &tallies, opts) });
        on_head(pass.layer, head);
    }
    Ok(reports)
}

/// [`crate::search_model`] on the GPU: runs `engine`'s model densely on `tokens`, searching every
/// head. `on_head(layer, head)` is called as each head finishes (in order). Heads' dense outputs
/// are not kept (the engine's forward has its own).
pub fn search_model_gpu(
    engine: &mut GpuEngine,
    tokens: &[u32],
    opts: &SearchOptions,
    on_head: &(dyn Fn(usize, usize) + Sync),
) -> GpuResult<ModelSearch> {
    search_model_gpu_with(engine, tokens, opts, None, on_head)
}

/// [`search_model_gpu`] with extra patterns scored on some heads (`extra`, by `(layer, head)`).
pub fn search_model_gpu_with(
    engine: &mut GpuEngine,
    tokens: &[u32],
    opts: &SearchOptions,
    extra: Option<&HeadExtras>,
    on_head: &(dyn Fn(usize, usize) + Sync),
) -> GpuResult<ModelSearch> {
    let start = Instant::now();
    let cfg = engine.config().clone();
    if opts.objective == Objective::OutputResidual {
        return Err(SearchError::Input(
            "objective output-residual runs on the CPU only for now (--device cpu), the GPU scorer sums the unweighted error"
                .into(),
        )
        .into());
    }
    if tokens.is_empty() {
        return Err(SearchError::Input("the calibration prompt is empty".into()).into());
    }
    if tokens.len() > cfg.context_length {
        return Err(SearchError::Input(format!(
            "the calibration prompt has {} tokens but the model's context is {} tokens",
            tokens.len(),
            cfg.context_length
        ))
        .into());
    }
    let mut heads: Vec<HeadReport> = Vec::new();
    let mut failure: Option<GpuSearchError> = None;
    let result = {
        let mut observer = |gpu: &Gpu, pass: &AttentionPass| -> minference_engine_gpu::Result<()> {
            match search_pass(gpu, pass, opts, extra, on_head) {
                Ok(r) => {
                    heads.extend(r);
                    Ok(())
                }
                Err(e) => {
                    let message = format!("search of layer {} failed: {e}", pass.layer);
                    failure = Some(e);
                    Err(EngineError::Input(message))
                }
            }
        };
        engine.prefill_observed(tokens, &AttentionChoice::Dense, &mut |_| {}, Some(&mut observer as &mut PassObserver))
    };
    if let Some(e) = failure {
        return Err(e);
    }
    result?;
    heads.sort_by_key(|r| (r.layer, r.head));
    if heads.len() != cfg.layers * cfg.heads {
        return Err(
            SearchError::Input(format!("searched {} heads, expected {}", heads.len(), cfg.layers * cfg.heads)).into()
        );
    }
    let mut layers = vec![LayerPatterns { heads: BTreeMap::new() }; cfg.layers];
    for r in &heads {
        let c = r.search.chosen();
        layers[r.layer].heads.insert(r.head, HeadEntry { pattern: c.pattern, score: c.score });
    }
    Ok(ModelSearch {
        config: ModelPatternConfig { layers },
        heads,
        tokens: tokens.len(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_map_one_to_one_and_sums_become_tallies() {
        let rows = vec![minference_core::RowBlockIndex { tiles: vec![0], columns: vec![5] }];
        assert_eq!(score_mask(&HeadMask::Dense), ScoreMask::Dense);
        assert_eq!(
            score_mask(&HeadMask::AShape { n_init: 2, n_local: 9 }),
            ScoreMask::AShape { n_init: 2, n_local: 9 }
        );
        assert_eq!(score_mask(&HeadMask::Index(rows.clone())), ScoreMask::Index(&rows));
        let t = Tally::from(ScoreSums { rows: 4, mass: 3.0, err_sq: 1.0, ref_sq: 4.0, over: 2 });
        assert_eq!(t.recall(), 0.75);
        assert_eq!(t.score(&Objective::OutputRelL2), 0.5);
        assert_eq!(output_threshold(&Objective::OutputCount { threshold: 0.25 }), 0.25);
        assert_eq!(output_threshold(&Objective::Recall), 5e-3);
    }
}
