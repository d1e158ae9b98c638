//! Adaptive Vertical-Slash heads on the GPU (`kernels/adaptive.cu`) against core's adaptive.rs:
//! on the GPU's own scores the budgets and selections are exactly core's; where the estimated mass
//! is well separated the GPU picks exactly what the CPU oracle picks, and the layer's index and
//! attention agree with the CPU backend's.

use minference_core::{
    adaptive_vs_budget, clamp_vs_budget, generate_qkv, select_vs, AdaptiveBudget, AttnShape, DType, HeadPattern,
    HostRoundTrip, OwnedTensor, SeqLen, SynthConfig,
};
use minference_cpu::rng::TestRng;
use minference_cpu::CpuBackend;
use minference_cuda::{estimate_vs_scores, layer_attention, DeviceTensor};

fn rule(gamma: f64, min_v: usize, max_v: usize, min_s: usize, max_s: usize) -> HeadPattern {
    AdaptiveBudget { gamma, min_v, max_v, min_s, max_s }.to_pattern().expect("valid rule")
}

/// Adaptive rules (tight and open bounds, gamma from 0.3 to 1) and one fixed VS head.
fn mixed_rules() -> Vec<HeadPattern> {
    vec![
        rule(0.3, 30, 6096, 100, 6096),
        rule(0.9, 0, 100_000, 0, 100_000),
        rule(0.97, 40, 300, 50, 400),
        rule(1.0, 0, usize::MAX, 0, usize::MAX),
        HeadPattern::VerticalSlash { k_v: 100, k_s: 300 },
    ]
}

fn offsets_shape(heads: usize) -> AttnShape {
    AttnShape {
        heads,
        kv_heads: heads,
        head_dim: 64,
        seqs: vec![
            SeqLen { q_len: 300, kv_len: 1000 },
            SeqLen { q_len: 65, kv_len: 65 },
            SeqLen { q_len: 1, kv_len: 130 },
        ],
    }
}

#[test]
fn budgets_and_selections_are_cores_on_the_gpu_scores() {
    let Some(backend) = minference_test_support::cuda_backend() else {
        return;
    };
    let gpu = backend.gpu();
    let patterns = mixed_rules();
    let h = patterns.len();
    for shape in [AttnShape::single(h, 1, 128, 3000), AttnShape::single(h, h, 64, 700), offsets_shape(h)] {
        for (mode, cfg) in [("random", SynthConfig::random()), ("structured", SynthConfig::structured())] {
            for dtype in [DType::F32, DType::Bf16] {
                let what = format!("{mode} {dtype:?} {:?}", shape.seqs);
                let (qf, kf, _) = generate_qkv(&shape, &cfg, 17);
                let (q, k) = (OwnedTensor::from_f32(&qf, dtype), OwnedTensor::from_f32(&kf, dtype));
                let (q, k) =
                    (DeviceTensor::upload(gpu, q.view()).unwrap(), DeviceTensor::upload(gpu, k.view()).unwrap());
                let (sel, scores) = estimate_vs_scores(gpu, &shape, &q, &k, &patterns).expect("gpu estimate");
                let budgets = sel.budgets(gpu).expect("budgets");
                let host = sel.download(gpu, &shape).expect("download");
                assert_eq!(sel.items.len(), shape.seqs.len() * h, "{what}: every head is a VS item");
                for (it, &got) in sel.items.iter().zip(&budgets) {
                    let i = it.b * shape.heads + it.h;
                    let n = shape.seqs[it.b].kv_len;
                    let s = &scores[i];
                    assert_eq!((s.vertical.len(), s.slash.len()), (n, n), "{what}: item {i} score sizes");
                    assert!(
                        s.vertical.iter().chain(&s.slash).all(|x| x.is_finite() && *x >= 0.0),
                        "{what}: raw scores"
                    );
                    // Every estimation row has probability mass 1, counted once per vector.
                    let rows = shape.seqs[it.b].q_len.min(64) as f64;
                    let vsum: f64 = s.vertical.iter().map(|&x| x as f64).sum();
                    let ssum: f64 = s.slash.iter().map(|&x| x as f64).sum();
                    assert!((vsum - rows).abs() < 1e-3 * rows && (ssum - rows).abs() < 1e-3 * rows, "{what}: mass");
                    let (k_v, k_s) = match AdaptiveBudget::of_pattern(&patterns[it.h]) {
                        Some(r) => adaptive_vs_budget(s, &r),
                        None => match patterns[it.h] {
                            HeadPattern::VerticalSlash { k_v, k_s } => (k_v, k_s),
                            _ => unreachable!(),
                        },
                    };
                    assert_eq!(got, clamp_vs_budget(k_v, k_s, n), "{what}: item {i} ({:?}) budgets", patterns[it.h]);
                    assert_eq!(host[i], select_vs(s, k_v, k_s), "{what}: item {i} selection");
                }
                let again = estimate_vs_scores(gpu, &shape, &q, &k, &patterns).expect("gpu estimate").0;
                assert_eq!(again.download(gpu, &shape).unwrap(), host, "{what}: not deterministic");
            }
        }
    }
}

/// Every query is `16·e0`; planted keys are `(16 + r/8)·e0` (exact in bf16), the others 0. Each
/// row's mass sits on the planted columns in ratios `e^{r/4}` (the rest weighs below 2^-32), so
/// every gamma below crosses the cumulative mass well away from a boundary.
fn planted(shape: &AttnShape, planted: &[usize], seed: u64) -> (OwnedTensor, OwnedTensor, OwnedTensor) {
    let (d, n) = (shape.head_dim, shape.seqs[0].kv_len);
    let mut q = vec![0f32; shape.q_elems()];
    for row in q.chunks_exact_mut(d) {
        row[0] = 16.0;
    }
    let mut k = vec![0f32; shape.kv_elems()];
    for g in 0..shape.kv_heads {
        for (r, &j) in planted.iter().enumerate() {
            k[(g * n + j) * d] = 16.0 + r as f32 / 8.0;
        }
    }
    let v = TestRng::new(seed).normals(shape.kv_elems());
    (
        OwnedTensor::from_f32(&q, DType::Bf16),
        OwnedTensor::from_f32(&k, DType::Bf16),
        OwnedTensor::from_f32(&v, DType::Bf16),
    )
}

#[test]
fn the_gpu_picks_what_the_cpu_oracle_picks_and_the_layer_agrees() {
    let Some(backend) = minference_test_support::cuda_backend() else {
        return;
    };
    let gpu = backend.gpu();
    let cpu = CpuBackend::new();
    // Slash budgets pinned to the forced 100 diagonals: the planted columns' diagonals tie.
    let patterns: Vec<HeadPattern> = [0.5, 0.7, 0.9, 0.99].iter().map(|&g| rule(g, 0, 4096, 100, 100)).collect();
    let shape = AttnShape::single(patterns.len(), 1, 64, 2048);
    let columns: Vec<usize> = (0..40).map(|r| 200 + 20 * r).collect();
    let (q, k, v) = planted(&shape, &columns, 3);
    let want = cpu.estimate_vs(&shape, q.view(), k.view(), &patterns).expect("cpu estimate");
    let got = backend.estimate_vs(&shape, q.view(), k.view(), &patterns).expect("gpu estimate");
    assert_eq!(got, want, "GPU and CPU adaptive selections differ");
    // The rules did pick different budgets: 30 forced columns plus a growing share of the 40.
    let sizes: Vec<usize> = want.iter().map(|s| s.verticals.len()).collect();
    assert!(sizes.windows(2).all(|w| w[0] < w[1]) && sizes[0] > 30 && sizes[3] <= 70, "{sizes:?}");
    // The layer pipeline on the device: same index as the CPU's, attention within bf16 tolerance.
    let index = cpu.build_index(&shape, q.view(), k.view(), &patterns, &want).expect("cpu index");
    let reference = cpu.sparse(&shape, q.view(), k.view(), v.view(), &patterns, &index).expect("cpu sparse");
    let up = |t: &OwnedTensor| DeviceTensor::upload(gpu, t.view()).unwrap();
    let mut out = DeviceTensor::alloc(gpu, DType::F32, shape.q_elems()).unwrap();
    let (_, dev_index) =
        layer_attention(&backend, &shape, &up(&q), &up(&k), &up(&v), &patterns, &mut out).expect("layer");
    let dev_index = dev_index.expect("adaptive heads read the index").download(gpu, &shape).unwrap();
    assert_eq!(dev_index, index, "GPU layer index differs from the CPU's");
    let o = out.download_f32(gpu).unwrap();
    let max = o.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(max < 2e-2, "layer output differs from the CPU backend by {max}");
}
