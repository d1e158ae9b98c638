//! CPU benchmark (`minference bench cpu`): dense vs VS / BS / A-shape for one KV group on the
//! structured synthetic workload, with the machine's sgemm rate as the ceiling and the synthetic
//! heads' distance from the calibration targets. A command, not a test: nothing here asserts timings.

use minference_core::{
    attention_recall, generate_qkv, index_head_coverage, kernel_mask_keep, AttentionBackend, AttnShape, Coverage,
    DType, HeadPattern, HostTensor, OwnedTensor, SparseIndex, SynthConfig, VsSelection,
};
use minference_cpu::rng::TestRng;
use minference_cpu::CpuBackend;
use std::fmt;
use std::time::{Duration, Instant};

/// VS budgets of the Llama-3-8B-262K config and their shares (spec §3.3).
pub const LLAMA3_VS_MIX: [((usize, usize), f64); 5] =
    [((1000, 6096), 0.46), ((30, 800), 0.27), ((100, 800), 0.15), ((3500, 100), 0.09), ((500, 700), 0.03)];

#[derive(Debug, Clone)]
pub struct CpuBenchConfig {
    pub lengths: Vec<usize>,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub dtype: DType,
    pub synth: SynthConfig,
    pub seed: u64,
    /// Timed runs per measurement (the best is reported).
    pub repeats: usize,
    pub bs_top_k: usize,
    pub ashape: (usize, usize),
    /// Sequence length of the calibration figures (0 skips them).
    pub calibration_len: usize,
    /// Worker threads (`None`: rayon's global pool).
    pub threads: Option<usize>,
}

impl Default for CpuBenchConfig {
    fn default() -> Self {
        CpuBenchConfig {
            lengths: vec![8192, 32768, 65536],
            heads: 4,
            kv_heads: 1,
            head_dim: 128,
            dtype: DType::Bf16,
            synth: SynthConfig::structured(),
            seed: 7,
            repeats: 1,
            bs_top_k: 100,
            ashape: (1024, 4096),
            calibration_len: 8192,
            threads: None,
        }
    }
}

/// One pattern at one length.
#[derive(Debug, Clone)]
pub struct PatternRow {
    pub pattern: String,
    /// Estimation + index building (0 for dense / A-shape).
    pub index_time: Duration,
    pub kernel_time: Duration,
    /// Process CPU seconds (all threads) of the timed runs, where the OS reports them.
    pub index_cpu_seconds: Option<f64>,
    pub kernel_cpu_seconds: Option<f64>,
    /// Fraction of causal entries the kernel computes, over all heads.
    pub density: f64,
    /// FLOPs the kernel executes (64×64 per tile and per gather group).
    pub kernel_flops: f64,
    /// Dense causal FLOPs of the same problem.
    pub dense_flops: f64,
}

impl PatternRow {
    pub fn total_time(&self) -> Duration {
        self.index_time + self.kernel_time
    }
    /// Executed FLOPs per second of the kernel alone.
    pub fn kernel_gflops(&self) -> f64 {
        self.kernel_flops / self.kernel_time.as_secs_f64() / 1e9
    }
    /// CPU seconds of index building plus kernel.
    pub fn total_cpu_seconds(&self) -> Option<f64> {
        Some(self.index_cpu_seconds.unwrap_or(0.0) + self.kernel_cpu_seconds?)
    }
    /// Executed FLOPs per CPU-second: robust to other load on a shared machine.
    pub fn kernel_gflops_per_core(&self) -> Option<f64> {
        self.kernel_cpu_seconds.filter(|&s| s > 0.0).map(|s| self.kernel_flops / s / 1e9)
    }
    /// Dense-equivalent FLOPs per second, index time included.
    pub fn effective_gflops(&self) -> f64 {
        self.dense_flops / self.total_time().as_secs_f64() / 1e9
    }
}

#[derive(Debug, Clone)]
pub struct LengthReport {
    pub n: usize,
    pub vs_budgets: Vec<(usize, usize)>,
    pub rows: Vec<PatternRow>,
}

/// Structure of the synthetic heads vs the calibration targets (real model, 8K).
#[derive(Debug, Clone, Copy)]
pub struct Calibration {
    pub n: usize,
    /// Fraction of the VS(30, 800) selections' slash distances `< 256` / `< 1024` (target ~0.3 / ~0.7).
    pub slashes_within_256: f64,
    pub slashes_within_1024: f64,
    /// VS(30, 800) kernel density (target ~0.4; random Q/K ~1.0) and attention recall (target ~0.92).
    pub vs_30_800_density: f64,
    pub vs_30_800_recall: f64,
}

#[derive(Debug, Clone)]
pub struct CpuBenchReport {
    pub device: String,
    pub sgemm: SgemmRate,
    pub config: CpuBenchConfig,
    pub lengths: Vec<LengthReport>,
    pub calibration: Option<Calibration>,
}

/// Process CPU time (user + system, all threads) in seconds, from Linux `/proc/self/stat`
/// (clock ticks of 1/100 s); `None` where that file does not exist.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Best-of-`repeats` wall time of `f`, the CPU seconds of that best run, and the last result.
fn timed<T>(repeats: usize, mut f: impl FnMut() -> T) -> (Duration, Option<f64>, T) {
    let mut best = (Duration::MAX, None);
    let mut last = None;
    for _ in 0..repeats.max(1) {
        let (t0, cpu0) = (Instant::now(), process_cpu_seconds());
        let out = f();
        let wall = t0.elapsed();
        let cpu = process_cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
        if wall < best.0 {
            best = (wall, cpu);
        }
        last = Some(out);
    }
    (best.0, best.1, last.expect("at least one repeat"))
}

/// The machine's f32 GEMM rate (`matrixmultiply` sgemm, its default threads).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgemmRate {
    /// Best single run, wall clock.
    pub wall_gflops: f64,
    /// All runs' FLOPs over their CPU time: the rate per busy core, robust to other load.
    pub per_core_gflops: Option<f64>,
}

/// `matrixmultiply` sgemm on `n³`, `reps` runs.
pub fn sgemm_rate(n: usize, reps: usize) -> SgemmRate {
    let mut rng = TestRng::new(1);
    let a = rng.normals(n * n);
    let b = rng.normals(n * n);
    let mut c = vec![0.0f32; n * n];
    let flops = 2.0 * (n as f64).powi(3);
    let mut best = Duration::MAX;
    let cpu0 = process_cpu_seconds();
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        minference_cpu::gemm::sgemm(
            n,
            n,
            n,
            1.0,
            minference_cpu::gemm::Mat { data: &a, rs: n, cs: 1 },
            minference_cpu::gemm::Mat { data: &b, rs: n, cs: 1 },
            0.0,
            &mut c,
            n,
        );
        best = best.min(t0.elapsed());
    }
    let cpu = process_cpu_seconds().zip(cpu0).map(|(b, a)| b - a).filter(|&s| s > 0.0);
    SgemmRate {
        wall_gflops: flops / best.as_secs_f64() / 1e9,
        per_core_gflops: cpu.map(|s| reps.max(1) as f64 * flops / s / 1e9),
    }
}

/// f32 GEMM rate of this machine: `matrixmultiply` sgemm on `n³`, best of 3 wall-clock runs, GF/s.
pub fn sgemm_gflops(n: usize) -> f64 {
    sgemm_rate(n, 3).wall_gflops
}

/// Draws one VS budget per head from [`LLAMA3_VS_MIX`].
pub fn draw_vs_budgets(heads: usize, seed: u64) -> Vec<(usize, usize)> {
    let mut rng = TestRng::new(seed);
    (0..heads)
        .map(|_| {
            let mut u = rng.uniform();
            for &(budget, share) in &LLAMA3_VS_MIX {
                if u < share {
                    return budget;
                }
                u -= share;
            }
            LLAMA3_VS_MIX[0].0
        })
        .collect()
}

fn coverage_of(shape: &AttnShape, patterns: &[HeadPattern], index: &SparseIndex) -> Coverage {
    let mut total = Coverage::default();
    for b in 0..shape.seqs.len() {
        for (h, p) in patterns.iter().enumerate() {
            if let Ok(c) = index_head_coverage(p, index, shape, b, h) {
                total.add(&c);
            }
        }
    }
    total
}

struct Inputs {
    shape: AttnShape,
    q: OwnedTensor,
    k: OwnedTensor,
    v: OwnedTensor,
}

fn inputs(cfg: &CpuBenchConfig, n: usize, synth: &SynthConfig) -> Inputs {
    let shape = AttnShape::single(cfg.heads, cfg.kv_heads, cfg.head_dim, n);
    let (q, k, v) = generate_qkv(&shape, synth, cfg.seed);
    Inputs {
        q: OwnedTensor::from_f32(&q, cfg.dtype),
        k: OwnedTensor::from_f32(&k, cfg.dtype),
        v: OwnedTensor::from_f32(&v, cfg.dtype),
        shape,
    }
}

fn bench_pattern(
    backend: &CpuBackend,
    cfg: &CpuBenchConfig,
    x: &Inputs,
    name: String,
    patterns: Vec<HeadPattern>,
) -> Result<PatternRow, String> {
    let (shape, q, k, v) = (&x.shape, x.q.view(), x.k.view(), x.v.view());
    let (index_time, index_cpu_seconds, index) = timed(cfg.repeats, || -> Result<SparseIndex, String> {
        let needs_index =
            patterns.iter().any(|p| matches!(p, HeadPattern::VerticalSlash { .. } | HeadPattern::BlockSparse { .. }));
        if !needs_index {
            return Ok(SparseIndex::empty(shape));
        }
        let vs = backend.estimate(shape, q, k, &patterns).map_err(|e| e.to_string())?;
        backend.index(shape, q, k, &patterns, &vs).map_err(|e| e.to_string())
    });
    let index = index?;
    let (kernel_time, kernel_cpu_seconds, out) =
        timed(cfg.repeats, || attend(backend, shape, [q, k, v], &patterns, Some(&index)));
    out.map_err(|e| e.to_string())?;
    let cov = coverage_of(shape, &patterns, &index);
    Ok(PatternRow {
        pattern: name,
        index_time,
        kernel_time,
        index_cpu_seconds,
        kernel_cpu_seconds,
        density: cov.density(),
        kernel_flops: cov.kernel_flops(shape.head_dim),
        dense_flops: shape.dense_causal_flops(),
    })
}

/// The backend's attention into a fresh output (what the timings measure: no host copies).
fn attend(
    backend: &CpuBackend,
    shape: &AttnShape,
    [q, k, v]: [HostTensor<'_>; 3],
    patterns: &[HeadPattern],
    index: Option<&SparseIndex>,
) -> Result<Vec<f32>, minference_cpu::CpuError> {
    let mut out = Vec::new();
    backend.attend(shape, q, k, v, patterns, index, &mut out)?;
    Ok(out)
}

fn bench_length(backend: &CpuBackend, cfg: &CpuBenchConfig, n: usize) -> Result<LengthReport, String> {
    let x = inputs(cfg, n, &cfg.synth);
    let (shape, q, k, v) = (&x.shape, x.q.view(), x.k.view(), x.v.view());
    let dense = vec![HeadPattern::Dense; cfg.heads];
    let (dense_time, dense_cpu, out) = timed(cfg.repeats, || attend(backend, shape, [q, k, v], &dense, None));
    out.map_err(|e| e.to_string())?;
    let dense_cov = coverage_of(shape, &vec![HeadPattern::Dense; cfg.heads], &SparseIndex::empty(shape));
    let mut rows = vec![PatternRow {
        pattern: "dense".into(),
        index_time: Duration::ZERO,
        index_cpu_seconds: Some(0.0),
        kernel_time: dense_time,
        kernel_cpu_seconds: dense_cpu,
        density: 1.0,
        kernel_flops: dense_cov.kernel_flops(cfg.head_dim),
        dense_flops: shape.dense_causal_flops(),
    }];
    let budgets = draw_vs_budgets(cfg.heads, cfg.seed ^ n as u64);
    let vs = budgets.iter().map(|&(k_v, k_s)| HeadPattern::VerticalSlash { k_v, k_s }).collect();
    let names: Vec<String> = budgets.iter().map(|(a, b)| format!("{a},{b}")).collect();
    rows.push(bench_pattern(backend, cfg, &x, format!("VS ({})", names.join(" / ")), vs)?);
    let bs = vec![HeadPattern::BlockSparse { k_b: cfg.bs_top_k }; cfg.heads];
    rows.push(bench_pattern(backend, cfg, &x, format!("BS top-{}", cfg.bs_top_k), bs)?);
    let (n_init, n_local) = cfg.ashape;
    let ashape = vec![HeadPattern::AShape { n_init, n_local }; cfg.heads];
    rows.push(bench_pattern(backend, cfg, &x, format!("A-shape {n_init}+{n_local}"), ashape)?);
    Ok(LengthReport { n, vs_budgets: budgets, rows })
}

/// Dense with the portable (`matrixmultiply`) micro-kernels, to show what the AVX-512 ones gain.
fn bench_portable_dense(cfg: &CpuBenchConfig, n: usize) -> Result<PatternRow, String> {
    let x = inputs(cfg, n, &cfg.synth);
    let mut row = bench_pattern(
        &backend_for(cfg, CpuBackend::portable())?,
        cfg,
        &x,
        "dense, portable kernels".into(),
        vec![HeadPattern::Dense; cfg.heads],
    )?;
    row.density = 1.0;
    Ok(row)
}

/// Softmax probabilities (f32) of `positions` of head 0 over all keys (0 beyond causal).
fn probability_rows(x: &Inputs, positions: &[usize]) -> Vec<f32> {
    let (n, d) = (x.shape.seqs[0].kv_len, x.shape.head_dim);
    let (q, k) = (x.q.view().to_f32_vec(), x.k.view().to_f32_vec());
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0.0f32; positions.len() * n];
    for (r, &pos) in positions.iter().enumerate() {
        let row = &mut out[r * n..(r + 1) * n];
        let qi = &q[pos * d..(pos + 1) * d];
        for (j, p) in row.iter_mut().enumerate().take(pos + 1) {
            *p = qi.iter().zip(&k[j * d..(j + 1) * d]).map(|(a, b)| a * b).sum::<f32>() * scale;
        }
        let max = row[..=pos].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0.0f32;
        for p in &mut row[..=pos] {
            *p = (*p - max).exp();
            sum += *p;
        }
        for p in &mut row[..=pos] {
            *p /= sum;
        }
    }
    out
}

fn calibrate(backend: &CpuBackend, cfg: &CpuBenchConfig) -> Result<Calibration, String> {
    let n = cfg.calibration_len;
    let x = inputs(cfg, n, &cfg.synth);
    let (shape, q, k) = (&x.shape, x.q.view(), x.k.view());
    let patterns = vec![HeadPattern::VerticalSlash { k_v: 30, k_s: 800 }; cfg.heads];
    let vs: Vec<VsSelection> = backend.estimate(shape, q, k, &patterns).map_err(|e| e.to_string())?;
    let index = backend.index(shape, q, k, &patterns, &vs).map_err(|e| e.to_string())?;
    let slashes: Vec<u32> = vs.iter().flat_map(|s| s.slashes.iter().copied()).collect();
    let within = |limit: u32| slashes.iter().filter(|&&d| d < limit).count() as f64 / slashes.len().max(1) as f64;
    let density = coverage_of(shape, &patterns, &index).density();
    // Recall of head 0 over 64 rows spread across the second half of the sequence.
    let positions: Vec<usize> = (0..64).map(|r| n / 2 + r * (n / 2) / 64).collect();
    let probs = probability_rows(&x, &positions);
    let slot_of = |pos: usize| index.slot(shape, 0, 0, pos / minference_core::TILE);
    let recall = attention_recall(&probs, &positions, |pos, key| {
        let s = slot_of(pos);
        kernel_mask_keep(&patterns[0], index.tiles(s), index.columns(s), pos, key, n)
    })
    .map_err(|e| e.to_string())?;
    Ok(Calibration {
        n,
        slashes_within_256: within(256),
        slashes_within_1024: within(1024),
        vs_30_800_density: density,
        vs_30_800_recall: recall,
    })
}

fn backend_for(cfg: &CpuBenchConfig, backend: CpuBackend) -> Result<CpuBackend, String> {
    match cfg.threads {
        Some(t) => backend.with_threads(t).map_err(|e| e.to_string()),
        None => Ok(backend),
    }
}

/// sgemm runs per measurement: enough CPU time (~0.5 s) for the 10 ms clock-tick resolution.
const SGEMM_REPS: usize = 20;

/// Runs the whole benchmark. Errors (none expected on valid configs) are reported as strings.
pub fn run_cpu_bench(cfg: &CpuBenchConfig) -> Result<CpuBenchReport, String> {
    let backend = backend_for(cfg, CpuBackend::new())?;
    // The machine may be shared: the ceiling is the best of several sgemm runs spread over the bench.
    let mut sgemm = sgemm_rate(1024, SGEMM_REPS);
    let mut lengths = Vec::new();
    for (i, &n) in cfg.lengths.iter().enumerate() {
        let mut report = bench_length(&backend, cfg, n)?;
        if i == 0 {
            report.rows.insert(1, bench_portable_dense(cfg, n)?);
        }
        lengths.push(report);
        let again = sgemm_rate(1024, SGEMM_REPS);
        sgemm = SgemmRate {
            wall_gflops: sgemm.wall_gflops.max(again.wall_gflops),
            per_core_gflops: match (sgemm.per_core_gflops, again.per_core_gflops) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        };
    }
    let calibration = if cfg.calibration_len > 0 { Some(calibrate(&backend, cfg)?) } else { None };
    Ok(CpuBenchReport { device: backend.name(), sgemm, config: cfg.clone(), lengths, calibration })
}

impl fmt::Display for CpuBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "CPU attention benchmark — {}, H={} H_kv={} D={} {:?}, synthetic {:?}, seed {}",
            self.device, c.heads, c.kv_heads, c.head_dim, c.dtype, c.synth.mode, c.seed
        )?;
        let per_core = |x: Option<f64>| x.map_or("n/a".to_string(), |g| format!("{g:.1}"));
        writeln!(
            f,
            "sgemm 1024³ (matrixmultiply): best run {:.1} GF/s wall; {} GF/s per core-second\n",
            self.sgemm.wall_gflops,
            per_core(self.sgemm.per_core_gflops)
        )?;
        writeln!(
            f,
            "\"% sgemm\" compares per core-second rates where available (robust to other load), else wall rates.\n"
        )?;
        writeln!(f, "\"speed-up\" is dense time / pattern time (index included), by wall clock and by CPU time.\n")?;
        writeln!(f, "| N | pattern | index ms | kernel ms | total ms | density | kernel GF/s | GF/s per core | % sgemm | eff. GF/s | speed-up wall | speed-up CPU |")?;
        writeln!(f, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
        for l in &self.lengths {
            let dense = l.rows[0].total_time().as_secs_f64();
            let dense_cpu = l.rows[0].total_cpu_seconds();
            for r in &l.rows {
                writeln!(
                    f,
                    "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1}% | {:.1} | {} | {:.0}% | {:.1} | {:.2}× | {} |",
                    l.n,
                    r.pattern,
                    r.index_time.as_secs_f64() * 1e3,
                    r.kernel_time.as_secs_f64() * 1e3,
                    r.total_time().as_secs_f64() * 1e3,
                    r.density * 100.0,
                    r.kernel_gflops(),
                    per_core(r.kernel_gflops_per_core()),
                    100.0
                        * match (r.kernel_gflops_per_core(), self.sgemm.per_core_gflops) {
                            (Some(a), Some(b)) => a / b,
                            _ => r.kernel_gflops() / self.sgemm.wall_gflops,
                        },
                    r.effective_gflops(),
                    dense / r.total_time().as_secs_f64(),
                    match (dense_cpu, r.total_cpu_seconds()) {
                        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                        _ => "n/a".into(),
                    },
                )?;
            }
        }
        if let Some(cal) = &self.calibration {
            writeln!(
                f,
                "\nCalibration of the synthetic heads at N={} (targets from real-model attention at 8K):\n",
                cal.n
            )?;
            writeln!(f, "| figure | synthetic | target |")?;
            writeln!(f, "|---|---|---|")?;
            writeln!(f, "| VS(30,800) slashes with d < 256 | {:.0}% | ~30% |", cal.slashes_within_256 * 100.0)?;
            writeln!(f, "| VS(30,800) slashes with d < 1024 | {:.0}% | ~70% |", cal.slashes_within_1024 * 100.0)?;
            writeln!(
                f,
                "| VS(30,800) kernel density | {:.0}% | ~40% (random Q/K ~100%) |",
                cal.vs_30_800_density * 100.0
            )?;
            writeln!(f, "| VS(30,800) attention recall | {:.1}% | ~92% |", cal.vs_30_800_recall * 100.0)?;
        }
        Ok(())
    }
}
