//! Model-level search: a dense forward over the calibration prompt in which every (layer, head)
//! is searched while its attention is computed (the dense output found on the way feeds the
//! forward, so attention is computed once).

use crate::capture::{GroupInputs, GroupVisitor, VisitingBackend};
use crate::dense::HeadInputs;
use crate::error::{Result, SearchError};
use crate::head::{search_head, HeadSearch, SearchOptions};
use crate::objective::Objective;
use crate::residual::{row_weights, ResidualWeight};
use minference_core::config::{HeadEntry, LayerPatterns, ModelPatternConfig};
use minference_core::HeadPattern;
use minference_engine::{AttentionChoice, CpuEngine, Observer};
use minference_model::{Model, ModelError};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Patterns scored on a head besides its own candidates, by `(layer, head)` (see
/// [`crate::multi`]: a later calibration document scores every pattern the first one had).
pub type HeadExtras = BTreeMap<(usize, usize), Vec<HeadPattern>>;

/// `opts` with `extra`'s patterns for `(layer, head)` added to the given candidates.
pub(crate) fn head_options(
    opts: &SearchOptions,
    extra: Option<&HeadExtras>,
    layer: usize,
    head: usize,
) -> SearchOptions {
    let mut o = opts.clone();
    if let Some(p) = extra.and_then(|e| e.get(&(layer, head))) {
        o.space.given.extend(p.iter().copied());
    }
    o
}

/// One head's search outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadReport {
    pub layer: usize,
    pub head: usize,
    pub search: HeadSearch,
}

/// The whole model's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSearch {
    pub config: ModelPatternConfig,
    pub heads: Vec<HeadReport>,
    pub tokens: usize,
    pub seconds: f64,
}

/// Each layer's per-row input weights, recorded as the forward enters the layer (the
/// output-residual objective weighs the layer's head errors with them).
struct LayerInputs<'a> {
    rows: &'a Mutex<BTreeMap<usize, Arc<[f64]>>>,
    hidden: usize,
}

impl Observer<[f32], ModelError> for LayerInputs<'_> {
    fn wants_layer_inputs(&self) -> bool {
        true
    }
    fn layer_input(&mut self, layer: usize, residual: &[f32]) {
        let w = row_weights(residual, self.hidden);
        if let Ok(mut m) = self.rows.lock() {
            m.insert(layer, w);
        }
    }
}

/// What the output-residual objective needs: the model's output projections and the layers'
/// input row weights.
struct ResidualSource<'a> {
    model: &'a Model,
    rows: &'a Mutex<BTreeMap<usize, Arc<[f64]>>>,
}

impl ResidualSource<'_> {
    fn weight(&self, layer: usize, head: usize) -> Result<ResidualWeight> {
        let rows = self
            .rows
            .lock()
            .map_err(|_| SearchError::Input("a search thread panicked".into()))?
            .get(&layer)
            .cloned()
            .ok_or_else(|| SearchError::Input(format!("layer {layer}'s input residual was not seen")))?;
        let wo = &self
            .model
            .weights()
            .layers
            .get(layer)
            .ok_or_else(|| SearchError::Input(format!("the model has no layer {layer}")))?
            .wo;
        ResidualWeight::of_head(&wo.weight, wo.out_dim, wo.in_dim, head, self.model.config().head_dim, rows)
    }
}

struct SearchVisitor<'a> {
    opts: &'a SearchOptions,
    extra: Option<&'a HeadExtras>,
    residual: Option<ResidualSource<'a>>,
    reports: Mutex<Vec<HeadReport>>,
    on_head: &'a (dyn Fn(usize, usize) + Sync),
}

impl GroupVisitor for SearchVisitor<'_> {
    fn visit(&self, g: &GroupInputs) -> Result<Vec<f32>> {
        let (n, d) = (g.n, g.head_dim);
        let results: Vec<Result<HeadSearch>> = (0..g.group)
            .into_par_iter()
            .map(|local| {
                let q = &g.q[local * n * d..(local + 1) * n * d];
                let head = g.kv_group * g.group + local;
                let weight = self.residual.as_ref().map(|r| r.weight(g.layer, head)).transpose()?;
                let mut h = HeadInputs::new(q, g.k, Some(g.v), d)?;
                if let Some(w) = &weight {
                    h = h.with_residual(w)?;
                }
                let r = search_head(&h, &head_options(self.opts, self.extra, g.layer, head), true);
                (self.on_head)(g.layer, head);
                r
            })
            .collect();
        let mut out = Vec::with_capacity(g.group * n * d);
        let mut reports = self.reports.lock().map_err(|_| SearchError::Input("a search thread panicked".into()))?;
        for (local, r) in results.into_iter().enumerate() {
            let mut search = r?;
            let o = search
                .dense_output
                .take()
                .ok_or_else(|| SearchError::Input("search returned no dense output".into()))?;
            out.extend_from_slice(&o);
            reports.push(HeadReport { layer: g.layer, head: g.kv_group * g.group + local, search });
        }
        Ok(out)
    }
}

/// Runs `model` densely on `tokens`, searching every head. `on_head(layer, head)` is called as each
/// head finishes (from worker threads).
pub fn search_model(
    model: Arc<Model>,
    tokens: &[u32],
    opts: &SearchOptions,
    on_head: &(dyn Fn(usize, usize) + Sync),
) -> Result<ModelSearch> {
    search_model_with(model, tokens, opts, None, on_head)
}

/// [`search_model`] with extra patterns scored on some heads (`extra`, by `(layer, head)`).
pub fn search_model_with(
    model: Arc<Model>,
    tokens: &[u32],
    opts: &SearchOptions,
    extra: Option<&HeadExtras>,
    on_head: &(dyn Fn(usize, usize) + Sync),
) -> Result<ModelSearch> {
    let start = Instant::now();
    let cfg = model.config().clone();
    if tokens.is_empty() {
        return Err(SearchError::Input("the calibration prompt is empty".into()));
    }
    if tokens.len() > cfg.context_length {
        return Err(SearchError::Input(format!(
            "the calibration prompt has {} tokens but the model's context is {} tokens",
            tokens.len(),
            cfg.context_length
        )));
    }
    let rows = Mutex::new(BTreeMap::new());
    let weighted = opts.objective == Objective::OutputResidual;
    let residual = weighted.then(|| ResidualSource { model: &model, rows: &rows });
    let visitor = SearchVisitor { opts, extra, residual, reports: Mutex::new(Vec::new()), on_head };
    let mut engine = CpuEngine::new(Arc::clone(&model), VisitingBackend::new(visitor, cfg.kv_heads));
    if weighted {
        let mut observer = LayerInputs { rows: &rows, hidden: cfg.hidden };
        engine.prefill_observed(tokens, &AttentionChoice::Dense, &mut |_| {}, &mut observer)?;
    } else {
        engine.prefill(tokens, &AttentionChoice::Dense, &mut |_| {})?;
    }
    let mut heads = std::mem::take(
        &mut *engine
            .backend()
            .visitor()
            .reports
            .lock()
            .map_err(|_| SearchError::Input("a search thread panicked".into()))?,
    );
    heads.sort_by_key(|r| (r.layer, r.head));
    if heads.len() != cfg.layers * cfg.heads {
        return Err(SearchError::Input(format!("searched {} heads, expected {}", heads.len(), cfg.layers * cfg.heads)));
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

impl ModelSearch {
    /// Pattern distribution, mean recall / density / work of the chosen candidates.
    pub fn summary(&self) -> String {
        let mut dist: BTreeMap<String, usize> = BTreeMap::new();
        let (mut recall, mut density, mut work) = (0.0, 0.0, 0.0);
        for r in &self.heads {
            let c = r.search.chosen();
            let key = c.pattern.describe();
            *dist.entry(key).or_default() += 1;
            recall += c.recall;
            density += c.density;
            work += c.work;
        }
        let k = self.heads.len().max(1) as f64;
        let mut s = format!(
            "{} heads, {} tokens, {:.1} s: mean recall {:.4}, mean kernel density {:.4}, mean kernel work {:.4}\n",
            self.heads.len(),
            self.tokens,
            self.seconds,
            recall / k,
            density / k,
            work / k
        );
        let mut by_family: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &self.heads {
            *by_family.entry(r.search.chosen().pattern.name()).or_default() += 1;
        }
        for (name, count) in by_family {
            s += &format!("  {name}: {count}\n");
        }
        let mut rows: Vec<_> = dist.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (name, count) in rows {
            s += &format!("    {name}: {count}\n");
        }
        s
    }
}
