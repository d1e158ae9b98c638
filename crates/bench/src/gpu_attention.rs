//! The attention benchmark behind `minference bench attention`: one Llama-3-8B-shaped layer
//! (H=32, H_kv=8, D=128, bf16) per length, our dense kernel and the MInference layer (estimation,
//! index build, attention, timed separately with CUDA events) for several pattern sets and index
//! regimes. Kernel density and effective TF/s count the 64×64 tiles the kernel actually computed.

use crate::gpu_inputs::{inputs, load_file_inputs};
use crate::peer_export::{OursFigures, PeerExport};
use minference_core::{AttnShape, DType, HeadPattern};
use minference_cuda::{
    attention, hopper, layer_attention, CudaBackend, DeviceIndex, DeviceTensor, Gpu, LayerTimings, Result,
};

/// Which per-head patterns a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternSet {
    /// MInference's Llama-3-8B-262K budget mix: (1000,6096) 46%, (30,800) 27%, (100,800) 15%,
    /// (3500,100) 9%, (500,700) 3%.
    LlamaMix,
    /// Every head VS(1000, 6096).
    VsOnly,
    /// Every head Block-Sparse top-100.
    BsTop100,
    /// Every head A-shape 1024 + 4096.
    AShape,
}

impl PatternSet {
    pub fn name(&self) -> &'static str {
        match self {
            PatternSet::LlamaMix => "vs-mix",
            PatternSet::VsOnly => "vs(1000,6096)",
            PatternSet::BsTop100 => "bs-top100",
            PatternSet::AShape => "a-shape(1024,4096)",
        }
    }

    pub fn patterns(&self, heads: usize) -> Vec<HeadPattern> {
        match self {
            PatternSet::LlamaMix => llama_mix(heads),
            PatternSet::VsOnly => vec![HeadPattern::VerticalSlash { k_v: 1000, k_s: 6096 }; heads],
            PatternSet::BsTop100 => vec![HeadPattern::BlockSparse { k_b: 100 }; heads],
            PatternSet::AShape => vec![HeadPattern::AShape { n_init: 1024, n_local: 4096 }; heads],
        }
    }
}

/// Per-head budgets in the proportions of the Llama-3-8B-262K config, spread over the heads.
pub fn llama_mix(heads: usize) -> Vec<HeadPattern> {
    let mix = [((1000, 6096), 0.46), ((30, 800), 0.27), ((100, 800), 0.15), ((3500, 100), 0.09), ((500, 700), 0.03)];
    let mut out = Vec::with_capacity(heads);
    let mut acc = 0.0;
    for (i, &((k_v, k_s), frac)) in mix.iter().enumerate() {
        acc += frac;
        let upto = if i + 1 == mix.len() { heads } else { ((acc * heads as f64).round() as usize).min(heads) };
        while out.len() < upto {
            out.push(HeadPattern::VerticalSlash { k_v, k_s });
        }
    }
    // Interleave so that every KV group gets a mix (heads of one group are adjacent).
    let mut shuffled = Vec::with_capacity(heads);
    let stride = 7usize;
    let mut seen = vec![false; heads];
    let mut i = 0;
    while shuffled.len() < heads {
        while seen[i % heads] {
            i += 1;
        }
        seen[i % heads] = true;
        shuffled.push(out[i % heads]);
        i += stride;
    }
    shuffled
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// i.i.d. normal Q/K (VS worst case: scattered slashes).
    Random,
    /// core's structured synthetic generator (sinks, local decay, far slashes, retrieval columns),
    /// one KV group generated on the host and replicated to the others.
    Structured,
    /// Q/K (and V) read from a safetensors file ([`BenchConfig::qk_file`]), e.g. captured from a model.
    File,
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub lengths: Vec<usize>,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub sets: Vec<PatternSet>,
    pub regimes: Vec<Regime>,
    /// Dense runs only up to this length (a 1M dense layer takes ~30 s).
    pub dense_max: usize,
    /// Random-regime runs only up to this length (random indices make VS nearly dense).
    pub random_max: usize,
    pub reps: usize,
    pub seed: u64,
    /// When set, the benchmark runs on the tensors of this safetensors file instead of generated
    /// inputs: `q` `[N, D]` or `[H, N, D]`, `k` `[N_kv, D]` or `[H_kv, N_kv, D]`, optional `v` like
    /// `k` (f32, bf16 or f16). 2-D tensors (one captured head) are replicated over `heads` /
    /// `kv_heads`; lengths and regimes are then ignored.
    pub qk_file: Option<std::path::PathBuf>,
    /// When set, the inputs, VS selections, indices and output samples of every length (first
    /// regime only) are written there for the peer script (format: [`crate::peer_export`]).
    pub export: Option<std::path::PathBuf>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            lengths: vec![16_384, 32_768, 65_536, 131_072, 262_144, 524_288, 1_048_576],
            heads: 32,
            kv_heads: 8,
            head_dim: 128,
            sets: vec![PatternSet::LlamaMix, PatternSet::VsOnly, PatternSet::BsTop100, PatternSet::AShape],
            regimes: vec![Regime::Structured, Regime::Random],
            dense_max: 262_144,
            random_max: 131_072,
            reps: 3,
            seed: 1,
            qk_file: None,
            export: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BenchRow {
    pub n: usize,
    pub what: String,
    pub regime: Option<Regime>,
    /// Median over reps.
    pub timings: LayerTimings,
    /// Tiles computed / tiles of dense causal attention.
    pub density: f64,
    /// FLOPs of the computed tiles / attention time.
    pub effective_tflops: f64,
    /// Dense-equivalent FLOPs / whole layer time.
    pub dense_equiv_tflops: f64,
    /// The Hopper planner's chunks of the index heads (None: no index, or not the Hopper kernel).
    pub plan: Option<hopper::PlanSummary>,
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub card: String,
    pub rows: Vec<BenchRow>,
    /// The peer export's manifest, when [`BenchConfig::export`] was set.
    pub export: Option<std::path::PathBuf>,
}

/// (tiles computed, tiles of dense causal attention) for one sequence of length n.
fn tile_counts(
    gpu: &Gpu,
    seq: minference_core::SeqLen,
    patterns: &[HeadPattern],
    index: Option<&DeviceIndex>,
) -> Result<(f64, f64)> {
    let (r, off, q_len) = (seq.row_blocks(), seq.offset(), seq.q_len);
    let last = |m: usize| (m * 64 + 63).min(q_len - 1) + off;
    let dense_per_head: f64 = (0..r).map(|m| (last(m) / 64 + 1) as f64).sum();
    let (tile_ptr, col_ptr) = match index {
        Some(ix) => ix.download_row_pointers(gpu)?,
        None => (Vec::new(), Vec::new()),
    };
    let mut computed = 0.0;
    for (h, p) in patterns.iter().enumerate() {
        match *p {
            HeadPattern::Dense => computed += dense_per_head,
            HeadPattern::AShape { n_init, n_local } => {
                for m in 0..r {
                    let pos0 = m * 64 + off;
                    let win_end = last(m) / 64 + 1;
                    let win_begin = ((pos0 + 1).saturating_sub(n_local) / 64).min(win_end);
                    let sink_end = n_init.min(seq.kv_len).div_ceil(64).min(win_end);
                    computed += (sink_end.min(win_begin) + win_end - win_begin) as f64;
                }
            }
            _ => {
                for m in 0..r {
                    let s = h * r + m;
                    if s + 1 < tile_ptr.len() {
                        computed += (tile_ptr[s + 1] - tile_ptr[s]) as f64
                            + ((col_ptr[s + 1] - col_ptr[s]) as f64 / 64.0).ceil();
                    }
                }
            }
        }
    }
    Ok((computed, dense_per_head * patterns.len() as f64))
}

fn median(mut xs: Vec<LayerTimings>) -> LayerTimings {
    xs.sort_by(|a, b| a.total_ms().total_cmp(&b.total_ms()));
    xs[xs.len() / 2]
}

/// Runs the benchmark; `progress` receives each row as it is measured.
pub fn run_attention_bench(
    backend: &CudaBackend,
    cfg: &BenchConfig,
    mut progress: impl FnMut(&BenchRow),
) -> Result<BenchReport> {
    let gpu = backend.gpu();
    let mut rows = Vec::new();
    if let Some(path) = &cfg.qk_file {
        let (shape, [q, k, v]) = load_file_inputs(gpu, path, cfg)?;
        measure(backend, cfg, &shape, [&q, &k, &v], Regime::File, true, None, &mut |r| {
            progress(&r);
            rows.push(r)
        })?;
        return Ok(BenchReport { card: gpu.name().to_string(), rows, export: None });
    }
    let mut export = match &cfg.export {
        Some(dir) => {
            let first = AttnShape::single(cfg.heads, cfg.kv_heads, cfg.head_dim, 64);
            Some(PeerExport::new(dir, gpu, &first)?)
        }
        None => None,
    };
    for &n in &cfg.lengths {
        let shape = AttnShape::single(cfg.heads, cfg.kv_heads, cfg.head_dim, n);
        for &regime in &cfg.regimes {
            if regime == Regime::File || (regime == Regime::Random && n > cfg.random_max) {
                continue;
            }
            let [q, k, v] = inputs(gpu, &shape, regime, cfg.seed ^ n as u64)?;
            let first = regime == cfg.regimes[0];
            let with_dense = n <= cfg.dense_max && first;
            let ex = if first { export.as_mut() } else { None };
            let ex = match ex {
                Some(e) => {
                    e.begin(gpu, &shape, regime_name(Some(regime)), [&q, &k, &v])?;
                    Some(e)
                }
                None => None,
            };
            measure(backend, cfg, &shape, [&q, &k, &v], regime, with_dense, ex, &mut |r| {
                progress(&r);
                rows.push(r)
            })?;
        }
    }
    let export = match export {
        Some(e) => Some(e.finish()?),
        None => None,
    };
    Ok(BenchReport { card: gpu.name().to_string(), rows, export })
}

pub(crate) fn regime_name(r: Option<Regime>) -> &'static str {
    match r {
        None => "-",
        Some(Regime::Random) => "random",
        Some(Regime::Structured) => "structured",
        Some(Regime::File) => "file",
    }
}

/// Times our dense kernel (optionally) and every pattern set on one input.
fn measure(
    backend: &CudaBackend,
    cfg: &BenchConfig,
    shape: &AttnShape,
    [q, k, v]: [&DeviceTensor; 3],
    regime: Regime,
    with_dense: bool,
    mut export: Option<&mut PeerExport>,
    emit: &mut dyn FnMut(BenchRow),
) -> Result<()> {
    let gpu = backend.gpu();
    let n = shape.seqs[0].q_len;
    let dense_flops = shape.dense_causal_flops();
    let tile_flops = 4.0 * 64.0 * 64.0 * shape.head_dim as f64;
    let mut out = DeviceTensor::alloc(gpu, DType::Bf16, shape.q_elems())?;
    if with_dense {
        let dense = vec![HeadPattern::Dense; shape.heads];
        let mut times = Vec::new();
        for rep in 0..=cfg.reps {
            let (e0, e1) = (gpu.event()?, gpu.event()?);
            gpu.record(&e0)?;
            attention(gpu, shape, q, k, v, &dense, None, &mut out)?;
            gpu.record(&e1)?;
            gpu.sync()?;
            let ms = e0.elapsed_ms(&e1).unwrap_or(f32::NAN);
            if rep > 0 || cfg.reps == 0 {
                times.push(LayerTimings { attention_ms: ms, ..Default::default() });
            }
        }
        let t = median(times);
        if let Some(e) = export.as_deref_mut() {
            e.dense_ms(t.attention_ms);
        }
        let tf = dense_flops / (t.attention_ms as f64 * 1e-3) / 1e12;
        emit(BenchRow {
            n,
            what: "dense (ours)".into(),
            regime: None,
            timings: t,
            density: 1.0,
            effective_tflops: tf,
            dense_equiv_tflops: tf,
            plan: None,
        });
    }
    for set in &cfg.sets {
        let patterns = set.patterns(shape.heads);
        let mut times = Vec::new();
        let mut last_index = None;
        for rep in 0..=cfg.reps {
            let (t, index) = layer_attention(backend, shape, q, k, v, &patterns, &mut out)?;
            if rep > 0 || cfg.reps == 0 {
                times.push(t);
            }
            last_index = index;
        }
        let t = median(times);
        let (computed, dense_tiles) = tile_counts(gpu, shape.seqs[0], &patterns, last_index.as_ref())?;
        let plan = if hopper::applies(gpu, shape, q.dtype, out.dtype).is_ok() {
            hopper::plan_summary(gpu, shape, &patterns, last_index.as_ref())?
        } else {
            None
        };
        let row = BenchRow {
            n,
            what: set.name().into(),
            regime: Some(regime),
            timings: t,
            density: computed / dense_tiles,
            effective_tflops: computed * tile_flops / (t.attention_ms as f64 * 1e-3) / 1e12,
            dense_equiv_tflops: dense_flops / (t.total_ms() as f64 * 1e-3) / 1e12,
            plan,
        };
        if let Some(e) = export.as_deref_mut() {
            let ours = OursFigures {
                estimate_ms: t.estimate_ms,
                index_ms: t.index_ms,
                attention_ms: t.attention_ms,
                density: row.density,
                effective_tflops: row.effective_tflops,
            };
            e.set(gpu, shape, set.name(), [q, k], &patterns, last_index.as_ref(), &out, &ours)?;
        }
        drop(last_index);
        emit(row);
    }
    Ok(())
}

/// One line per row (markdown table body).
pub fn format_row(r: &BenchRow) -> String {
    let regime = regime_name(r.regime);
    let t = &r.timings;
    format!(
        "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {:.0} | {:.0} |",
        r.n,
        r.what,
        regime,
        t.total_ms(),
        t.estimate_ms,
        t.index_ms,
        t.attention_ms,
        r.density,
        r.effective_tflops,
        r.dense_equiv_tflops
    )
}

pub const TABLE_HEADER: &str = "| N | method | regime | total ms | estimate ms | index ms | attention ms | kernel density | eff. TF/s | dense-equiv TF/s |\n|---|---|---|---|---|---|---|---|---|---|";

/// CSV columns of [`csv_row`].
pub const CSV_HEADER: &str =
    "card,n,method,regime,total_ms,estimate_ms,index_ms,attention_ms,kernel_density,effective_tflops,dense_equiv_tflops";

/// One row as CSV (`card` quoted).
pub fn csv_row(card: &str, r: &BenchRow) -> String {
    let t = &r.timings;
    format!(
        "\"{}\",{},\"{}\",{},{:.4},{:.4},{:.4},{:.4},{:.5},{:.2},{:.2}",
        card.replace('"', "'"),
        r.n,
        r.what,
        regime_name(r.regime),
        t.total_ms(),
        t.estimate_ms,
        t.index_ms,
        t.attention_ms,
        r.density,
        r.effective_tflops,
        r.dense_equiv_tflops
    )
}
