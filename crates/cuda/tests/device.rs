//! Device-resident API: poisoned outputs are fully written, the layer pipeline times its phases,
//! and bad input is an error.

use minference_backend_suite::mixed_patterns;
use minference_core::{AttentionBackend, HostRoundTrip};
use minference_core::{AttnShape, DType, HeadPattern, OwnedTensor};
use minference_cpu::rng::TestRng;
use minference_cuda::{layer_attention, CudaBackend, CudaError, DeviceTensor};

#[test]
fn opening_without_gpu_is_an_error_not_a_panic() {
    // On a machine without a driver this is NoGpu; with one it succeeds. Never a panic.
    match CudaBackend::new() {
        Ok(b) => assert!(!b.name().is_empty()),
        Err(e) => minference_test_support::skip(format!("no usable GPU ({e})")),
    }
}

#[test]
fn poisoned_outputs_are_fully_written() {
    let Some(backend) = minference_test_support::cuda_backend() else {
        return;
    };
    let gpu = backend.gpu();
    for (n, d, out_dtype) in [(257usize, 64usize, DType::Bf16), (1000, 128, DType::F32), (65, 128, DType::Bf16)] {
        let shape = AttnShape::single(8, 2, d, n);
        let mut rng = TestRng::new(n as u64);
        let q = OwnedTensor::from_f32(&rng.normals(shape.q_elems()), DType::Bf16);
        let k = OwnedTensor::from_f32(&rng.normals(shape.kv_elems()), DType::Bf16);
        let v = OwnedTensor::from_f32(&rng.normals(shape.kv_elems()), DType::Bf16);
        let (q, k, v) = (
            DeviceTensor::upload(gpu, q.view()).unwrap(),
            DeviceTensor::upload(gpu, k.view()).unwrap(),
            DeviceTensor::upload(gpu, v.view()).unwrap(),
        );
        let mut out = DeviceTensor::alloc(gpu, out_dtype, shape.q_elems()).unwrap();
        out.fill_bytes(gpu, 0xff).unwrap();
        let patterns = mixed_patterns(8);
        let (t, index) = layer_attention(&backend, &shape, &q, &k, &v, &patterns, &mut out).expect("layer");
        assert!(index.is_some());
        assert!(t.estimate_ms >= 0.0 && t.index_ms >= 0.0 && t.attention_ms > 0.0, "{t:?}");
        let o = out.download_f32(gpu).unwrap();
        if let Some(i) = o.iter().position(|x| !x.is_finite()) {
            panic!("N={n} D={d}: element {i} not written or not finite");
        }
    }
}

#[test]
fn unsupported_inputs_are_errors() {
    let Some(backend) = minference_test_support::cuda_backend() else {
        return;
    };
    let shape = AttnShape::single(2, 1, 80, 10);
    let q = OwnedTensor::from_f32(&vec![0.5; shape.q_elems()], DType::Bf16);
    let k = OwnedTensor::from_f32(&vec![0.5; shape.kv_elems()], DType::Bf16);
    match backend.dense(&shape, q.view(), k.view(), k.view()) {
        Err(CudaError::UnsupportedHeadDim(80)) => {}
        other => panic!("expected UnsupportedHeadDim, got {other:?}"),
    }
    let shape = AttnShape::single(2, 1, 64, 10);
    let patterns = vec![HeadPattern::BlockSparse { k_b: 0 }; 2];
    let q = OwnedTensor::from_f32(&vec![0.5; shape.q_elems()], DType::Bf16);
    let k = OwnedTensor::from_f32(&vec![0.5; shape.kv_elems()], DType::Bf16);
    assert!(backend.estimate_vs(&shape, q.view(), k.view(), &patterns).is_err());
}

/// Asks for twice the free memory. Runs alone (`.config/nextest.toml`): while the driver refuses
/// it, a test opening its context beside it once failed with CUDA_ERROR_OUT_OF_MEMORY on an H200.
#[test]
fn allocating_more_than_is_free_is_out_of_memory() {
    let Some(backend) = minference_test_support::cuda_backend() else {
        return;
    };
    let gpu = backend.gpu();
    let (free, _) = gpu.mem_info().unwrap();
    match DeviceTensor::alloc(gpu, DType::Bf16, free) {
        Err(CudaError::OutOfMemory { asked, free: f, .. }) => assert!(asked > f),
        Err(e) => panic!("expected OutOfMemory, got {e}"),
        Ok(_) => panic!("allocating twice the free memory succeeded"),
    }
}

#[test]
fn fill_copy_and_read_bytes_round_trip() {
    let Some(backend) = minference_test_support::cuda_backend() else {
        return;
    };
    let gpu = backend.gpu();
    let mut a = DeviceTensor::alloc(gpu, DType::Bf16, 4096).unwrap();
    minference_cuda::fill_normal(gpu, &mut a, 7, 1.0).unwrap();
    let mut b = DeviceTensor::alloc(gpu, DType::Bf16, 4096).unwrap();
    minference_cuda::fill_normal(gpu, &mut b, 7, 1.0).unwrap();
    gpu.sync().unwrap();
    let (xa, xb) = (a.download_f32(gpu).unwrap(), b.download_f32(gpu).unwrap());
    assert_eq!(xa, xb, "the same seed gives the same tensor");
    let mean = xa.iter().sum::<f32>() / xa.len() as f32;
    assert!(mean.abs() < 0.1 && xa.iter().all(|x| x.is_finite()), "mean {mean}");

    let mut twice = DeviceTensor::alloc(gpu, DType::Bf16, 8192).unwrap();
    twice.copy_from(gpu, &a, 0).unwrap();
    twice.copy_from(gpu, &a, 4096).unwrap();
    assert!(twice.copy_from(gpu, &a, 4097).is_err());
    let mut bytes = vec![0u8; 2 * 10];
    twice.read_bytes(gpu, 4096 + 5, &mut bytes).unwrap();
    gpu.sync().unwrap();
    let got: Vec<f32> =
        bytes.chunks_exact(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect();
    assert_eq!(got, xa[5..15]);
    assert!(twice.read_bytes(gpu, 8190, &mut bytes).is_err());
}
