//! The Hopper warp-specialised kernel (src/hopper/mod.rs) against the previous wgmma/mma kernels on the
//! same inputs and the same sparse index: dense, every sparse pattern in one launch, varlen
//! batches with and without q/kv offsets, bf16 and f16 inputs, outputs in the input dtype or f32, NaN-poisoned
//! outputs fully written.

use minference_backend_suite::mixed_patterns;
use minference_core::{AttnShape, DType, HeadPattern, OwnedTensor, SeqLen};
use minference_cpu::rng::TestRng;
use minference_cuda::{attention, hopper, layer_attention, CudaBackend, DeviceIndex, DeviceTensor, Gpu};
use std::sync::Arc;

/// The same GPU opened twice: with the Hopper kernel (must load when a GPU is required) and with
/// `MINFERENCE_HOPPER=0`. nextest runs each test in its own process, so the variable is private.
fn two_gpus() -> Option<(Arc<Gpu>, Gpu)> {
    let new = minference_test_support::hopper_gpu()?;
    std::env::set_var("MINFERENCE_HOPPER", "0");
    let old = Gpu::open(0).expect("open");
    std::env::remove_var("MINFERENCE_HOPPER");
    assert!(old.hopper_status().is_err());
    Some((new, old))
}

struct Inputs {
    q: DeviceTensor,
    k: DeviceTensor,
    v: DeviceTensor,
}

fn inputs(gpu: &Gpu, shape: &AttnShape, dtype: DType, seed: u64) -> Inputs {
    let mut rng = TestRng::new(seed);
    let mut up = |n: usize| {
        let t = OwnedTensor::from_f32(&rng.normals(n), dtype);
        DeviceTensor::upload(gpu, t.view()).unwrap()
    };
    Inputs { q: up(shape.q_elems()), k: up(shape.kv_elems()), v: up(shape.kv_elems()) }
}

fn compare(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len());
    if let Some(i) = a.iter().position(|x| !x.is_finite()) {
        panic!("{what}: element {i} not written or not finite ({})", a[i]);
    }
    let (mut max, mut sum) = (0f32, 0f64);
    for (x, y) in a.iter().zip(b) {
        let e = (x - y).abs();
        max = max.max(e);
        sum += e as f64;
    }
    let mean = sum / a.len() as f64;
    assert!(max < 4e-2 && mean < 4e-3, "{what}: max abs diff {max:.3e}, mean {mean:.3e}");
}

fn run_pair(shape: &AttnShape, patterns: &[HeadPattern], out_dtype: DType, seed: u64) {
    run_typed(shape, patterns, DType::Bf16, out_dtype, seed)
}

fn run_typed(shape: &AttnShape, patterns: &[HeadPattern], in_dtype: DType, out_dtype: DType, seed: u64) {
    let Some((new, old)) = two_gpus() else { return };
    let what = format!(
        "{:?} H={} Hkv={} D={} {:?} {in_dtype:?} -> {out_dtype:?}",
        shape.seqs, shape.heads, shape.kv_heads, shape.head_dim, patterns[0]
    );
    assert!(
        minference_cuda::hopper::applies(&new, shape, in_dtype, out_dtype).is_ok(),
        "{what}: not routed to the Hopper kernel"
    );
    let a = inputs(&new, shape, in_dtype, seed);
    let b = inputs(&old, shape, in_dtype, seed);
    let mut out_a = DeviceTensor::alloc(&new, out_dtype, shape.q_elems()).unwrap();
    out_a.fill_bytes(&new, 0xff).unwrap();
    let (_, index) = layer_attention(&CudaBackend::of(Arc::clone(&new)), shape, &a.q, &a.k, &a.v, patterns, &mut out_a)
        .expect("hopper layer");
    let got = out_a.download_f32(&new).unwrap();
    let index_b = index.map(|ix| {
        let host = ix.download(&new, shape).unwrap();
        DeviceIndex::upload(&old, shape, &host).unwrap()
    });
    let mut out_b = DeviceTensor::alloc(&old, out_dtype, shape.q_elems()).unwrap();
    attention(&old, shape, &b.q, &b.k, &b.v, patterns, index_b.as_ref(), &mut out_b).expect("previous kernel");
    let want = out_b.download_f32(&old).unwrap();
    compare(&got, &want, &what);
}

#[test]
fn dense_matches_previous_kernel() {
    let mut seed = 100;
    for &(h, hkv, d, n) in
        &[(8usize, 2usize, 128usize, 4097usize), (7, 1, 64, 3000), (4, 4, 128, 40), (6, 2, 64, 129), (3, 1, 128, 1000)]
    {
        for out in [DType::Bf16, DType::F32] {
            seed += 1;
            run_pair(&AttnShape::single(h, hkv, d, n), &vec![HeadPattern::Dense; h], out, seed);
        }
    }
}

#[test]
fn every_pattern_matches_previous_kernel() {
    let mut seed = 200;
    for &(h, hkv, d, n) in
        &[(8usize, 2usize, 128usize, 2113usize), (8, 8, 64, 1500), (7, 1, 64, 333), (4, 1, 128, 63), (12, 3, 128, 4096)]
    {
        for out in [DType::Bf16, DType::F32] {
            seed += 1;
            run_pair(&AttnShape::single(h, hkv, d, n), &mixed_patterns(h), out, seed);
        }
    }
    // Long A-shape windows and sinks, BS with many blocks, VS with large budgets.
    let pats = [
        HeadPattern::AShape { n_init: 300, n_local: 1000 },
        HeadPattern::AShape { n_init: 0, n_local: 1 },
        HeadPattern::BlockSparse { k_b: 9 },
        HeadPattern::VerticalSlash { k_v: 500, k_s: 700 },
    ];
    run_pair(&AttnShape::single(4, 2, 128, 5000), &pats, DType::Bf16, 300);
}

#[test]
fn varlen_without_offsets_matches_previous_kernel() {
    for d in [64usize, 128] {
        let shape = AttnShape {
            heads: 6,
            kv_heads: 2,
            head_dim: d,
            seqs: [17usize, 130, 300, 1].iter().map(|&n| SeqLen { q_len: n, kv_len: n }).collect(),
        };
        run_pair(&shape, &[HeadPattern::Dense; 6], DType::Bf16, 400 + d as u64);
        run_pair(&shape, &mixed_patterns(6), DType::F32, 500 + d as u64);
    }
}

/// Chunked prefill: query row r of a sequence sits at position r + kv_len - q_len. Offsets that
/// are and are not multiples of 64 and 128, one-row and one-tile queries, a sequence without one.
#[test]
fn varlen_with_offsets_matches_previous_kernel() {
    let seqs = [(300usize, 1000usize), (65, 65), (1, 130), (129, 4000), (200, 457), (64, 192)];
    for (d, h, hkv) in [(64usize, 6usize, 2usize), (128, 7, 1), (128, 4, 4)] {
        let shape = AttnShape {
            heads: h,
            kv_heads: hkv,
            head_dim: d,
            seqs: seqs.iter().map(|&(q_len, kv_len)| SeqLen { q_len, kv_len }).collect(),
        };
        run_pair(&shape, &vec![HeadPattern::Dense; h], DType::Bf16, 700 + d as u64 + h as u64);
        run_pair(&shape, &mixed_patterns(h), DType::F32, 800 + d as u64 + h as u64);
        run_typed(&shape, &mixed_patterns(h), DType::F16, DType::F16, 900 + d as u64 + h as u64);
    }
}

#[test]
fn f16_inputs_match_previous_kernel() {
    let mut seed = 600;
    for &(h, hkv, d, n) in &[(8usize, 2usize, 128usize, 2113usize), (7, 1, 64, 333), (4, 4, 128, 40), (6, 2, 64, 1000)]
    {
        for out in [DType::F16, DType::F32] {
            seed += 1;
            run_typed(&AttnShape::single(h, hkv, d, n), &vec![HeadPattern::Dense; h], DType::F16, out, seed);
            run_typed(&AttnShape::single(h, hkv, d, n), &mixed_patterns(h), DType::F16, out, seed + 50);
        }
    }
}

#[test]
fn unsupported_output_dtypes_are_not_routed_to_hopper() {
    let Some(gpu) = minference_test_support::hopper_gpu() else { return };
    let shape = AttnShape::single(4, 2, 128, 256);
    for (i, o) in [(DType::Bf16, DType::F16), (DType::F16, DType::Bf16), (DType::F32, DType::F32)] {
        let why = minference_cuda::hopper::applies(&gpu, &shape, i, o).expect_err("must not apply");
        assert!(why.contains("supported"), "{i:?} -> {o:?}: {why}");
    }
}

/// A layer whose planned chunks exceed the planner budget runs as several launches over groups of
/// heads (whole KV heads, then query heads of one KV head): the output is bit-for-bit that of one
/// launch for every budget that fits one head, and a budget below one head is an out-of-memory
/// error, not a wrong answer.
#[test]
fn layers_split_over_head_groups_match_one_launch() {
    let Some(gpu) = minference_test_support::hopper_gpu() else { return };
    let seqs = [(1500usize, 1500usize), (300, 1000), (1, 130)];
    for (d, h, hkv) in [(128usize, 12usize, 3usize), (64, 7, 1)] {
        let shape = AttnShape {
            heads: h,
            kv_heads: hkv,
            head_dim: d,
            seqs: seqs.iter().map(|&(q_len, kv_len)| SeqLen { q_len, kv_len }).collect(),
        };
        let patterns = mixed_patterns(h);
        let x = inputs(&gpu, &shape, DType::Bf16, 1000 + h as u64);
        let mut out = DeviceTensor::alloc(&gpu, DType::F32, shape.q_elems()).unwrap();
        let (_, index) =
            layer_attention(&CudaBackend::of(Arc::clone(&gpu)), &shape, &x.q, &x.k, &x.v, &patterns, &mut out)
                .expect("one launch");
        let index = index.expect("mixed patterns read an index");
        let want = out.download_f32(&gpu).unwrap();
        let whole = hopper::one_launch_plan_bytes(&index);
        let mut budget = whole - 1;
        let mut splits = 0;
        let err = loop {
            gpu.set_plan_budget(Some(budget));
            out.fill_bytes(&gpu, 0xff).unwrap();
            match attention(&gpu, &shape, &x.q, &x.k, &x.v, &patterns, Some(&index), &mut out) {
                Ok(()) => {
                    let got = out.download_f32(&gpu).unwrap();
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "H={h} Hkv={hkv} D={d}: budget {budget} of {whole} bytes changed the output");
                    splits += 1;
                }
                Err(e) => break e,
            }
            budget /= 2;
        };
        gpu.set_plan_budget(None);
        assert!(splits >= 2, "H={h}: only {splits} split budgets ran before {err}");
        assert!(
            matches!(err, minference_cuda::CudaError::OutOfMemory { .. }),
            "H={h}: a budget below one head must be out of memory, got {err}"
        );
    }
}
