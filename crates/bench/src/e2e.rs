//! End-to-end time-to-first-token benchmark on a random-weight model of a named shape: dense and
//! MInference prefill of the same prompts in one run, as a markdown or CSV table.

use minference_core::HeadPattern;
use minference_engine::{
    random_tokens, AttentionChoice, EngineError, MInferencePlan, PrefillEngine, PrefillStats, Result,
};
use minference_model::{ModelConfig, StructuredAttention};
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E2eAttention {
    Dense,
    /// MInference's default for heads without a searched config: VS(1000, 6096) on every head of
    /// every layer (random weights have no head structure to search).
    MInference,
}

impl E2eAttention {
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dense" => Ok(E2eAttention::Dense),
            "minference" | "sparse" => Ok(E2eAttention::MInference),
            other => Err(EngineError::Input(format!("unknown attention `{other}` (dense, minference)"))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            E2eAttention::Dense => "dense",
            E2eAttention::MInference => "minference",
        }
    }
    pub fn choice(self, cfg: &ModelConfig) -> AttentionChoice {
        match self {
            E2eAttention::Dense => AttentionChoice::Dense,
            E2eAttention::MInference => AttentionChoice::MInference(MInferencePlan::uniform(cfg, HeadPattern::DEFAULT)),
        }
    }
}

/// What attention sees: i.i.d. random weights (near-uniform attention: VS indices scatter and
/// MInference is nearly dense), or the structured workload (`minference_model::structured`: sinks,
/// local band, far slashes, retrieval columns, as the core's synthetic generator).
#[derive(Debug, Clone, PartialEq)]
pub enum E2eWorkload {
    Random,
    Structured(StructuredAttention),
}

impl E2eWorkload {
    pub fn name(&self) -> &'static str {
        match self {
            E2eWorkload::Random => "random",
            E2eWorkload::Structured(_) => "structured",
        }
    }

    /// The prompt of `n` tokens for `cfg`.
    pub fn tokens(&self, cfg: &ModelConfig, n: usize, seed: u64) -> Result<Vec<u32>> {
        match self {
            E2eWorkload::Random => Ok(random_tokens(n, cfg.vocab, seed)),
            E2eWorkload::Structured(w) => Ok(w.tokens(cfg, n, seed)?),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct E2eOptions {
    pub seed: u64,
    /// Dense rows above this many tokens are reported as skipped (dense 1M prefill takes many minutes).
    pub dense_max_tokens: Option<usize>,
    /// A short prefill of each kind before timing (module loads, cuBLASLt heuristics).
    pub warmup_tokens: usize,
    /// The engine's weights must have been made for this workload (its prompts come from here).
    pub workload: E2eWorkload,
}

/// The seed of the random weights and prompts of `bench e2e`; `--random-weights` in run, serve and
/// bench serve use it too, so that every command runs the same model on the same prompts.
pub const E2E_SEED: u64 = 0x5EED;

impl Default for E2eOptions {
    fn default() -> Self {
        E2eOptions { seed: E2E_SEED, dense_max_tokens: None, warmup_tokens: 4096, workload: E2eWorkload::Random }
    }
}

impl E2eOptions {
    /// The prompt of `n` tokens that the row of length `n` times.
    pub fn prompt(&self, cfg: &ModelConfig, n: usize) -> Result<Vec<u32>> {
        self.workload.tokens(cfg, n, self.seed ^ n as u64)
    }
}

#[derive(Debug, Clone)]
pub struct E2eRow {
    pub tokens: usize,
    pub attention: E2eAttention,
    /// The prefill's statistics, or why the row has none (skipped, out of memory, ...).
    pub outcome: std::result::Result<PrefillStats, String>,
}

#[derive(Debug, Clone)]
pub struct E2eTable {
    pub gpu: String,
    pub shape: String,
    /// [`E2eWorkload::name`].
    pub workload: String,
    pub rows: Vec<E2eRow>,
}

/// Runs every (length, attention) pair on one random-weight engine (one GPU or a group) and
/// tabulates TTFT.
pub fn bench_e2e(
    engine: &mut dyn PrefillEngine,
    lengths: &[usize],
    kinds: &[E2eAttention],
    opts: &E2eOptions,
    log: &mut dyn FnMut(&str),
) -> Result<E2eTable> {
    if !engine.has_random_weights() {
        return Err(EngineError::Input("bench e2e measures random-weight models of named shapes".into()));
    }
    engine.set_allow_context_extension(true)?;
    engine.set_max_new_tokens(1)?;
    let cfg = engine.config().clone();
    let device = engine.device_name();
    log(&format!("{} on {device}: random weights generated on the device", cfg.name));
    if opts.warmup_tokens > 0 {
        let tokens = opts.workload.tokens(&cfg, opts.warmup_tokens, opts.seed ^ 1)?;
        for kind in kinds {
            engine.prefill(&tokens, &kind.choice(&cfg), &mut |_| {})?;
        }
        engine.reset()?;
    }
    let mut rows = Vec::new();
    for &n in lengths {
        let tokens = opts.prompt(&cfg, n)?;
        for &kind in kinds {
            if kind == E2eAttention::Dense && opts.dense_max_tokens.is_some_and(|m| n > m) {
                rows.push(E2eRow { tokens: n, attention: kind, outcome: Err("skipped (above --dense-max)".into()) });
                continue;
            }
            let outcome =
                engine.prefill(&tokens, &kind.choice(&cfg), &mut |_| {}).map(|(_, s)| s).map_err(|e| e.to_string());
            engine.reset()?;
            match &outcome {
                Ok(s) => log(&format!(
                    "{n} tokens {}: TTFT {:.3} s (random weights, {} attention)",
                    kind.name(),
                    s.seconds,
                    opts.workload.name()
                )),
                Err(e) => log(&format!("{n} tokens {}: {e}", kind.name())),
            }
            rows.push(E2eRow { tokens: n, attention: kind, outcome });
        }
    }
    Ok(E2eTable { gpu: device, shape: cfg.name.clone(), workload: opts.workload.name().to_string(), rows })
}

/// One row's phases in seconds and its planned device memory in GiB: what both formats print.
struct RowSeconds {
    ttft: f64,
    qkv: f64,
    estimate: f64,
    index: f64,
    attention: f64,
    o_proj: f64,
    mlp: f64,
    offload: f64,
    planned_gib: f64,
}

impl RowSeconds {
    fn of(s: &PrefillStats) -> Self {
        RowSeconds {
            ttft: s.seconds,
            qkv: s.qkv_ms / 1e3,
            estimate: s.estimate_ms / 1e3,
            index: s.index_ms / 1e3,
            attention: s.attention_ms / 1e3,
            o_proj: s.o_proj_ms / 1e3,
            mlp: s.mlp_ms / 1e3,
            offload: s.offload_ms / 1e3,
            planned_gib: s.plan.device_needed_bytes as f64 / (1u64 << 30) as f64,
        }
    }
}

impl E2eTable {
    fn dense_ttft(&self, tokens: usize) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.tokens == tokens && r.attention == E2eAttention::Dense)
            .and_then(|r| r.outcome.as_ref().ok())
            .map(|s| s.seconds)
    }

    /// The shortest measured length from which MInference's TTFT beats dense at every measured
    /// length (the `dense_below` threshold this card and shape justify); `None` when it never does
    /// or a length lacks either row.
    pub fn crossover(&self) -> Option<usize> {
        let mut lengths: Vec<usize> = self.rows.iter().map(|r| r.tokens).collect();
        lengths.sort_unstable();
        lengths.dedup();
        let faster = |n: usize| {
            let sparse = self
                .rows
                .iter()
                .find(|r| r.tokens == n && r.attention == E2eAttention::MInference)
                .and_then(|r| r.outcome.as_ref().ok())
                .map(|s| s.seconds);
            Some(sparse? < self.dense_ttft(n)?)
        };
        let mut answer = None;
        for &n in lengths.iter().rev() {
            match faster(n) {
                Some(true) => answer = Some(n),
                _ => break,
            }
        }
        answer
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "TTFT, {}{}, {} attention workload, {}; MInference = VS(1000, 6096) on every head\n\n\
             | tokens | attention | TTFT s | speedup vs dense | QKV s | attention s (estimate + index + kernel) | O-proj s | MLP s | KV offload s | KV layers offloaded | planned device GiB |\n\
             |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            self.shape,
            if self.shape.contains("random weights") { "" } else { " (random weights)" },
            self.workload,
            self.gpu
        );
        for r in &self.rows {
            match &r.outcome {
                Ok(s) => {
                    let speedup =
                        self.dense_ttft(r.tokens).map_or("-".to_string(), |d| format!("{:.2}×", d / s.seconds));
                    let t = RowSeconds::of(s);
                    let _ = writeln!(
                        out,
                        "| {} | {} | {:.3} | {} | {:.3} | {:.3} ({:.3} + {:.3} + {:.3}) | {:.3} | {:.3} | {:.3} | {} | {:.1} |",
                        r.tokens,
                        r.attention.name(),
                        t.ttft,
                        speedup,
                        t.qkv,
                        t.estimate + t.index + t.attention,
                        t.estimate,
                        t.index,
                        t.attention,
                        t.o_proj,
                        t.mlp,
                        t.offload,
                        s.plan.kv_offloaded_layers,
                        t.planned_gib
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "| {} | {} | {e} | | | | | | | | |", r.tokens, r.attention.name());
                }
            }
        }
        if let Some(n) = self.crossover() {
            let _ = writeln!(out, "\nMInference is faster than dense from {n} tokens on (of the lengths measured).");
        }
        out
    }

    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "gpu,shape,workload,tokens,attention,ttft_s,qkv_s,estimate_s,index_s,attention_kernel_s,o_proj_s,mlp_s,offload_s,kv_offloaded_layers,planned_device_gib,status\n",
        );
        for r in &self.rows {
            let head =
                format!("\"{}\",\"{}\",{},{},{}", self.gpu, self.shape, self.workload, r.tokens, r.attention.name());
            match &r.outcome {
                Ok(s) => {
                    let t = RowSeconds::of(s);
                    let _ = writeln!(
                        out,
                        "{head},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{},{:.2},ok",
                        t.ttft,
                        t.qkv,
                        t.estimate,
                        t.index,
                        t.attention,
                        t.o_proj,
                        t.mlp,
                        t.offload,
                        s.plan.kv_offloaded_layers,
                        t.planned_gib
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "{head},,,,,,,,,,,\"{}\"", e.replace('"', "'"));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_names_round_trip_and_bad_names_error() {
        for k in [E2eAttention::Dense, E2eAttention::MInference] {
            assert_eq!(E2eAttention::parse(k.name()).ok(), Some(k));
        }
        assert!(E2eAttention::parse("flash").is_err());
    }

    fn row(tokens: usize, attention: E2eAttention, seconds: Option<f64>) -> E2eRow {
        let stats = |s: f64| PrefillStats {
            seconds: s,
            ..PrefillStats::zero(tokens, minference_engine::MemoryPlan::default())
        };
        E2eRow { tokens, attention, outcome: seconds.map(stats).ok_or_else(|| "skipped".to_string()) }
    }

    #[test]
    fn crossover_is_the_first_length_from_which_sparse_always_wins() {
        use E2eAttention::{Dense, MInference};
        let table = |rows| E2eTable { gpu: "t".into(), shape: "s".into(), workload: "random".into(), rows };
        let t = table(vec![
            row(16, Dense, Some(1.0)),
            row(16, MInference, Some(0.9)),
            row(32, Dense, Some(2.0)),
            row(32, MInference, Some(2.5)),
            row(64, Dense, Some(5.0)),
            row(64, MInference, Some(4.0)),
            row(128, Dense, Some(20.0)),
            row(128, MInference, Some(9.0)),
        ]);
        assert_eq!(t.crossover(), Some(64));
        assert!(t.to_markdown().contains("from 64 tokens"));
        let never = table(vec![row(16, Dense, Some(1.0)), row(16, MInference, Some(2.0))]);
        assert_eq!(never.crossover(), None);
        let no_dense = table(vec![row(16, Dense, None), row(16, MInference, Some(2.0))]);
        assert_eq!(no_dense.crossover(), None);
    }

    #[test]
    fn skipped_rows_render_in_both_formats() {
        let t = E2eTable {
            gpu: "test".into(),
            shape: "qwen2.5-7b".into(),
            workload: "structured".into(),
            rows: vec![E2eRow { tokens: 1 << 20, attention: E2eAttention::Dense, outcome: Err("skipped".into()) }],
        };
        assert!(t.to_markdown().contains("random weights"));
        assert!(t.to_markdown().contains("structured attention workload"));
        assert!(t.to_markdown().contains("skipped"));
        assert_eq!(t.to_csv().lines().count(), 2);
        assert!(t.to_csv().lines().nth(1).is_some_and(|l| l.contains(",structured,")));
    }
}
