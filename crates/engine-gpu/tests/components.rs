//! The forward's parts in isolation: the GEMM wrapper (with group column offsets), both attention
//! backends against an f64 reference, and a one-layer model at one token (attention = V) and at many.

use half::bf16;
use minference_core::{AttnShape, DType, HeadPattern, HostRoundTrip, HostTensor};
use minference_cpu::CpuBackend;
use minference_cuda::{layer_attention, DeviceTensor};
use minference_engine::{random_tokens, AttentionChoice, CpuEngine};
use minference_engine_gpu::{DeviceView, GpuEngine};
use minference_model::{Model, ModelConfig};
use std::sync::Arc;

/// Causal attention in f64: q `[gs, n, d]`, k/v `[n, d]` → `[gs, n, d]`.
fn reference(q: &[f32], k: &[f32], v: &[f32], gs: usize, n: usize, d: usize) -> Vec<f32> {
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0f32; gs * n * d];
    for h in 0..gs {
        for i in 0..n {
            let qi = &q[(h * n + i) * d..(h * n + i + 1) * d];
            let s: Vec<f64> = (0..=i)
                .map(|j| qi.iter().zip(&k[j * d..(j + 1) * d]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale)
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..d {
                let acc: f64 = (0..=i).map(|j| e[j] * v[j * d + c] as f64).sum();
                out[(h * n + i) * d + c] = (acc / z) as f32;
            }
        }
    }
    out
}

fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // bf16-exact values so that every backend sees the same inputs.
            bf16::from_f32(((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0).to_f32()
        })
        .collect()
}

fn max_err(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const GS: usize = 3;
const N: usize = 130;
const D: usize = 64;

#[test]
fn cpu_backend_dense_matches_f64_reference() {
    let (q, k, v) = (data(GS * N * D, 1), data(N * D, 2), data(N * D, 3));
    let want = reference(&q, &k, &v, GS, N, D);
    let shape = AttnShape::single(GS, 1, D, N);
    let got = CpuBackend::new()
        .dense(&shape, HostTensor::F32(&q), HostTensor::F32(&k), HostTensor::F32(&v))
        .unwrap_or_else(|e| panic!("{e}"));
    let err = max_err(&want, &got);
    eprintln!("CPU backend dense vs f64 reference: max abs error {err}");
    assert!(err < 1e-3, "{err}");
}

#[test]
fn gpu_layer_attention_dense_matches_f64_reference() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    let (q, k, v) = (data(GS * N * D, 1), data(N * D, 2), data(N * D, 3));
    let want = reference(&q, &k, &v, GS, N, D);
    let shape = AttnShape::single(GS, 1, D, N);
    let up = |x: &[f32]| {
        let b: Vec<bf16> = x.iter().map(|v| bf16::from_f32(*v)).collect();
        DeviceTensor::upload(&gpu, HostTensor::Bf16(&b)).unwrap_or_else(|e| panic!("{e}"))
    };
    let (qd, kd, vd) = (up(&q), up(&k), up(&v));
    let mut out = DeviceTensor::alloc(&gpu, DType::Bf16, GS * N * D).unwrap_or_else(|e| panic!("{e}"));
    let backend = minference_cuda::CudaBackend::of(std::sync::Arc::clone(&gpu));
    layer_attention(&backend, &shape, &qd, &kd, &vd, &[HeadPattern::Dense; GS], &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    let got = out.download_f32(&gpu).unwrap_or_else(|e| panic!("{e}"));
    let err = max_err(&want, &got);
    eprintln!("GPU layer_attention dense vs f64 reference: max abs error {err}");
    assert!(err < 2e-2, "{err}");
}

#[test]
fn one_layer_model_gpu_vs_cpu_at_one_and_many_tokens() {
    let Some(gpu) = minference_test_support::gpu() else { return };
    let mut cfg = ModelConfig::named_shape("smollm2-135m").unwrap_or_else(|e| panic!("{e}"));
    cfg.layers = 1;
    let model = Arc::new(Model::random_with_config(cfg, 11).unwrap_or_else(|e| panic!("{e}")));
    let mut eng = GpuEngine::new(gpu, Arc::clone(&model)).unwrap_or_else(|e| panic!("{e}"));
    let mut cpu = CpuEngine::new(Arc::clone(&model), CpuBackend::new());
    let mut report = Vec::new();
    for n in [1usize, 2, 64, 130] {
        let tokens = random_tokens(n, model.config().vocab, 4);
        let (c, _) = cpu.prefill(&tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
        let (g, _) = eng.prefill(&tokens, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
        let c_ = minference_test_support::agreement(&c, &g).cosine;
        eprintln!("one layer, {n} tokens: cosine GPU vs CPU {c_:.6}");
        report.push((n, c_));
    }
    assert!(report.iter().all(|(_, c)| *c > 0.999), "{report:?}");
}

#[test]
fn gemm_matches_host_with_group_column_offsets() {
    use minference_engine_gpu::gemm::Gemm;
    let Some(gpu) = minference_test_support::gpu() else { return };
    // W [out=576, q_dim=576]; use columns 192..384 (a 384-byte offset) like W_o of KV group 1.
    let (rows, out_dim, q_dim, k) = (5usize, 576usize, 576usize, 192usize);
    let w = data(out_dim * q_dim, 7);
    let x = data(rows * k, 8);
    let y0 = data(rows * out_dim, 9);
    let bits = |v: &[f32]| v.iter().map(|f| bf16::from_f32(*f).to_bits()).collect::<Vec<u16>>();
    let (wd, xd) = (
        gpu.upload(&bits(&w)).unwrap_or_else(|e| panic!("{e}")),
        gpu.upload(&bits(&x)).unwrap_or_else(|e| panic!("{e}")),
    );
    let yd = gpu.upload(&bits(&y0)).unwrap_or_else(|e| panic!("{e}"));
    let w_rows = DeviceView::of_slice(&gpu, &wd, DType::Bf16, q_dim);
    // Largest |want(r, o) - y[r, o]| over the bf16 output `y`.
    let max_error = |y: &cudarc::driver::CudaSlice<u16>, want: &dyn Fn(usize, usize) -> f32| {
        let got = gpu.download(y, rows * out_dim).unwrap_or_else(|e| panic!("{e}"));
        let mut err = 0f32;
        for r in 0..rows {
            for o in 0..out_dim {
                err = err.max((want(r, o) - bf16::from_bits(got[r * out_dim + o]).to_f32()).abs());
            }
        }
        err
    };
    let mut gemm = Gemm::new(&gpu, minference_engine_gpu::Precision::Bf16).unwrap_or_else(|e| panic!("{e}"));
    let (xv, yv) =
        (DeviceView::of_slice(&gpu, &xd, DType::Bf16, k), DeviceView::of_slice(&gpu, &yd, DType::Bf16, out_dim));
    gemm.linear(&gpu, xv, w_rows.cols_from(192), yv, true).unwrap_or_else(|e| panic!("{e}"));
    let err = max_error(&yd, &|r, o| {
        y0[r * out_dim + o] + (0..k).map(|i| x[r * k + i] * w[o * q_dim + 192 + i]).sum::<f32>()
    });
    eprintln!("GEMM with a 384-byte column offset, accumulate: max abs error {err}");
    assert!(err < 0.1, "{err}");
    // Plain y = x · Wᵀ, aligned.
    let yd2 = gpu.alloc::<u16>(rows * out_dim).unwrap_or_else(|e| panic!("{e}"));
    // W's first k columns of each row.
    let yv2 = DeviceView::of_slice(&gpu, &yd2, DType::Bf16, out_dim);
    gemm.linear(&gpu, xv, w_rows, yv2, false).unwrap_or_else(|e| panic!("{e}"));
    // A y of another row count than x is refused before cuBLASLt runs.
    let short = gemm.linear(&gpu, xv, w_rows, yv2.rows(0, rows - 1), false);
    assert!(matches!(short, Err(minference_engine_gpu::EngineError::Shape { .. })), "{short:?}");
    let err = max_error(&yd2, &|r, o| (0..k).map(|i| x[r * k + i] * w[o * q_dim + i]).sum::<f32>());
    eprintln!("GEMM aligned: max abs error {err}");
    assert!(err < 0.1, "{err}");
}
