//! The GPU search against the CPU search: per-candidate tallies on random and structured heads
//! (the same bf16-rounded inputs on both sides), and the model-level search on a tiny random model.
//! Without a usable GPU every test skips (`minference_test_support`).

use half::bf16;
use minference_core::rng::SplitMix64;
use minference_core::{DType, HostTensor};
use minference_cuda::{DeviceHead, DeviceTensor, Gpu, HeadSlice};
use minference_engine_gpu::GpuEngine;
use minference_model::{Model, ModelConfig};
use minference_search::{
    search_head, search_head_gpu, search_model, search_model_gpu, CandidateSpace, HeadInputs, Objective, Preset,
    SearchOptions, TargetCost,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn round_bf16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
}

/// Q, K, V `[n, d]`, bf16-exact. `structured` adds attention sinks, a few heavy columns and a
/// local (slash) band through shared positional features; otherwise i.i.d. normal.
fn head(n: usize, d: usize, seed: u64, structured: bool) -> [Vec<f32>; 3] {
    let mut r = SplitMix64::new(seed);
    let mut q: Vec<f32> = (0..n * d).map(|_| r.normal() as f32).collect();
    let mut k: Vec<f32> = (0..n * d).map(|_| r.normal() as f32).collect();
    let v: Vec<f32> = (0..n * d).map(|_| r.normal() as f32).collect();
    if structured {
        let heavy = [0usize, 1, 17, n / 3, n / 2 + 5];
        for i in 0..n {
            // Dimension 0: every query looks for the heavy keys.
            q[i * d] = 3.0;
            k[i * d] = if heavy.contains(&i) { 4.0 } else { -1.0 };
            // Dimensions 2..18: rotating features, so nearby positions match (a slash band).
            for f in 0..8 {
                let w = 0.02 * (f as f32 + 1.0);
                let (s, c) = (i as f32 * w).sin_cos();
                q[i * d + 2 + 2 * f] = 2.0 * c;
                q[i * d + 3 + 2 * f] = 2.0 * s;
                k[i * d + 2 + 2 * f] = 2.0 * c;
                k[i * d + 3 + 2 * f] = 2.0 * s;
            }
        }
    }
    [round_bf16(&q), round_bf16(&k), round_bf16(&v)]
}

fn upload(gpu: &Gpu, x: &[f32]) -> DeviceTensor {
    let b: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let t = DeviceTensor::upload(gpu, HostTensor::Bf16(&b)).unwrap();
    assert_eq!(t.dtype, DType::Bf16);
    t
}

fn options(objective: Objective) -> SearchOptions {
    SearchOptions {
        objective,
        space: CandidateSpace {
            presets: vec![Preset::Paper, Preset::Code, Preset::KernelAware],
            target: TargetCost::Work(0.4),
            ..CandidateSpace::default()
        },
        floor: None,
    }
}

#[test]
fn gpu_candidate_scores_equal_the_cpu_ones() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    let objectives = [Objective::Recall, Objective::OutputRelL2, Objective::OutputCount { threshold: 5e-3 }];
    let mut checked = 0;
    for (n, d) in [(40, 64), (200, 64), (1000, 64), (777, 128), (64, 128)] {
        for structured in [false, true] {
            let [q, k, v] = head(n, d, (n * d) as u64 + structured as u64, structured);
            let (qd, kd, vd) = (upload(&gpu, &q), upload(&gpu, &k), upload(&gpu, &v));
            let dev = DeviceHead {
                q: HeadSlice { tensor: &qd, offset: 0 },
                k: HeadSlice { tensor: &kd, offset: 0 },
                v: HeadSlice { tensor: &vd, offset: 0 },
                n,
                head_dim: d,
            };
            let host = HeadInputs::new(&q, &k, Some(&v), d).unwrap();
            for objective in objectives {
                let opts = options(objective);
                let cpu = search_head(&host, &opts, false).unwrap();
                let gpu_s = search_head_gpu(&gpu, &dev, &host, &opts).unwrap();
                let case = format!("n {n} d {d} structured {structured} {}", objective.name());
                assert_eq!(cpu.candidates.len(), gpu_s.candidates.len(), "{case}");
                for (c, g) in cpu.candidates.iter().zip(&gpu_s.candidates) {
                    assert_eq!(c.pattern, g.pattern, "{case}: same candidates on both paths");
                    assert!(
                        (c.recall - g.recall).abs() < 1e-3,
                        "{case} {:?}: recall cpu {} gpu {}",
                        c.pattern,
                        c.recall,
                        g.recall
                    );
                    match objective {
                        Objective::Recall => {}
                        Objective::OutputRelL2 => {
                            assert!(
                                (c.score - g.score).abs() <= 1e-3 + 1e-2 * c.score,
                                "{case} {:?}: rel-L2 cpu {} gpu {}",
                                c.pattern,
                                c.score,
                                g.score
                            )
                        }
                        Objective::OutputResidual => panic!("the GPU search refuses output-residual"),
                        Objective::OutputCount { .. } => {
                            // Elements right at the threshold may fall either way.
                            let slack = 2.0 + 0.01 * c.score;
                            assert!(
                                (c.score - g.score).abs() <= slack,
                                "{case} {:?}: count cpu {} gpu {}",
                                c.pattern,
                                c.score,
                                g.score
                            )
                        }
                    }
                }
                // The winner is the same or within the tolerance of the CPU winner's score.
                let (cw, gw) = (cpu.chosen(), &cpu.candidates[gpu_s.best]);
                let near = (cw.score - gw.score).abs()
                    <= 2e-3 * cw.score.abs().max(1.0) + if objective.higher_is_better() { 0.0 } else { 2.0 };
                assert!(cpu.best == gpu_s.best || near, "{case}: cpu chose {:?}, gpu {:?}", cw.pattern, gw.pattern);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 30);
}

#[test]
fn gpu_rejects_bad_heads() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    let [q, k, v] = head(100, 64, 1, false);
    let (qd, kd, vd) = (upload(&gpu, &q), upload(&gpu, &k), upload(&gpu, &v));
    let host = HeadInputs::new(&q, &k, Some(&v), 64).unwrap();
    let opts = options(Objective::Recall);
    // A slice past the tensor's end.
    let dev = DeviceHead {
        q: HeadSlice { tensor: &qd, offset: 64 },
        k: HeadSlice { tensor: &kd, offset: 0 },
        v: HeadSlice { tensor: &vd, offset: 0 },
        n: 100,
        head_dim: 64,
    };
    assert!(search_head_gpu(&gpu, &dev, &host, &opts).is_err());
    // Host and device shapes that disagree.
    let dev = DeviceHead { q: HeadSlice { tensor: &qd, offset: 0 }, n: 50, ..dev };
    assert!(search_head_gpu(&gpu, &dev, &host, &opts).is_err());
}

/// `ModelConfig::tiny_llama` with head_dim 64 (the GPU engine takes 64 or 128).
fn tiny_gpu_model() -> Model {
    let mut cfg = ModelConfig::tiny_llama(true);
    cfg.hidden = 256;
    cfg.head_dim = 64;
    Model::random_with_config(cfg, 7).unwrap()
}

#[test]
fn gpu_model_search_chooses_as_the_cpu_search() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    let model = Arc::new(tiny_gpu_model());
    let tokens: Vec<u32> = (0..700).map(|i| ((i * 37 + 11) % 300) as u32).collect();
    let opts = SearchOptions {
        space: CandidateSpace { target: TargetCost::Work(0.5), ..CandidateSpace::default() },
        ..SearchOptions::default()
    };
    let cpu = search_model(Arc::clone(&model), &tokens, &opts, &|_, _| {}).unwrap();
    let mut engine = GpuEngine::new(Arc::clone(&gpu), Arc::clone(&model)).unwrap();
    let calls = AtomicUsize::new(0);
    let g = search_model_gpu(&mut engine, &tokens, &opts, &|_, _| {
        calls.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 8);
    assert_eq!(g.heads.len(), 8);
    g.config.validate_model(2, 4).unwrap();
    // The GPU forward is bf16, the CPU one f32: fitted settings may move by a step and near-ties
    // may flip, so the family must (nearly) always agree and the chosen recall must be close.
    let (mut same_pattern, mut same_family) = (0, 0);
    for (c, x) in cpu.heads.iter().zip(&g.heads) {
        assert_eq!((c.layer, c.head), (x.layer, x.head));
        let (cc, gc) = (c.search.chosen(), x.search.chosen());
        println!(
            "layer {} head {}: cpu {:?} recall {:.4}, gpu {:?} recall {:.4}",
            c.layer, c.head, cc.pattern, cc.recall, gc.pattern, gc.recall
        );
        same_pattern += (cc.pattern == gc.pattern) as usize;
        same_family += (cc.pattern.name() == gc.pattern.name()) as usize;
        assert!((cc.recall - gc.recall).abs() < 0.02, "recall of the chosen candidates");
    }
    println!("same pattern {same_pattern} of 8, same family {same_family} of 8");
    assert!(same_family >= 6, "only {same_family} of 8 heads chose the same family");
    // Bad input: an empty prompt and one longer than the context.
    assert!(search_model_gpu(&mut engine, &[], &opts, &|_, _| {}).is_err());
    assert!(search_model_gpu(&mut engine, &vec![1; 2000], &opts, &|_, _| {}).is_err());
}

/// GPU vs CPU search time on the SmolLM2-135M shape with random weights at 8K tokens (same
/// weights on both paths), for the recall and the output objective, and the plain dense GPU
/// forward for scale. Run with `--ignored`; prints the times, asserts no timing.
#[test]
#[ignore]
fn smollm2_shape_8k_gpu_and_cpu_search_times() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    let cfg = ModelConfig::named_shape("smollm2-135m").unwrap();
    let model = Arc::new(Model::random_with_config(cfg.clone(), 3).unwrap());
    let tokens = minference_engine::random_tokens(8192, cfg.vocab, 5);
    let mut engine = GpuEngine::new(Arc::clone(&gpu), Arc::clone(&model)).unwrap();
    // Warm-up (kernel loading, allocations), then the timed runs.
    search_model_gpu(&mut engine, &tokens[..1024], &SearchOptions::default(), &|_, _| {}).unwrap();
    let start = std::time::Instant::now();
    engine.prefill(&tokens, &minference_engine::AttentionChoice::Dense, &mut |_| {}).unwrap();
    println!("dense GPU forward alone: {:.3} s", start.elapsed().as_secs_f64());
    for objective in [Objective::Recall, Objective::OutputRelL2] {
        let opts = SearchOptions { objective, ..SearchOptions::default() };
        let g = search_model_gpu(&mut engine, &tokens, &opts, &|_, _| {}).unwrap();
        println!("[{}] GPU search ({}): {:.2} s\n{}", objective.name(), gpu.name(), g.seconds, g.summary());
        let c = search_model(Arc::clone(&model), &tokens, &opts, &|_, _| {}).unwrap();
        println!(
            "[{}] CPU search ({} threads): {:.2} s\n{}",
            objective.name(),
            rayon::current_num_threads(),
            c.seconds,
            c.summary()
        );
        let same = c
            .heads
            .iter()
            .zip(&g.heads)
            .filter(|(a, b)| a.search.chosen().pattern == b.search.chosen().pattern)
            .count();
        let score_gap = c
            .heads
            .iter()
            .zip(&g.heads)
            .map(|(a, b)| (a.search.chosen().score - b.search.chosen().score).abs())
            .fold(0.0, f64::max);
        println!(
            "[{}] same chosen pattern: {same} of {} heads; largest |score difference| of the chosen: {score_gap:.5}",
            objective.name(),
            c.heads.len()
        );
    }
}
