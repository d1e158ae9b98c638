//! The backend-independent property suite of minference-cpu, run on the CUDA backend.

use minference_core::{AttentionBackend, AttnShape, DType};

use minference_backend_suite::{self as backend_suite, check_mixed_patterns_on, varlen_shape, GQA, LENGTHS};

/// Runs every check of a list with two seeds; reports all failures at once.
fn run_all(checks: Vec<(&'static str, backend_suite::Check<minference_cuda::CudaBackend>)>) {
    let Some(backend) = minference_test_support::cuda_backend() else {
        return;
    };
    let mut failures = Vec::new();
    for (name, check) in &checks {
        for seed in [1u64, 2] {
            if let Err(e) = check(&backend, seed) {
                failures.push(format!("{name} seed {seed}: {e}"));
            }
        }
    }
    println!("{} checks run on {}", checks.len(), backend.name());
    assert!(failures.is_empty(), "{} failures on {}:\n{}", failures.len(), backend.name(), failures.join("\n"));
}

/// f32 inputs (exact SIMT path, tolerance 1e-4) and the half-precision dense checks.
#[test]
fn backend_suite_all_checks() {
    run_all(backend_suite::all_checks());
}

/// The same properties with bf16 inputs (tensor-core path, tolerance 2e-2 / 2e-3).
#[test]
fn backend_suite_bf16_checks() {
    run_all(backend_suite::all_checks_bf16());
}

/// The tensor-core path (bf16, f16): every pattern, lengths around the 64-row edges, D = 64 and
/// 128, GQA ratios 1, 3, 4, 7, and a varlen batch with q/kv offsets.
#[test]
fn mixed_patterns_half_precision() {
    let Some(backend) = minference_test_support::cuda_backend() else {
        return;
    };
    let mut seed = 10u64;
    for dtype in [DType::Bf16, DType::F16] {
        for (i, &n) in LENGTHS.iter().enumerate() {
            for (j, d) in [64usize, 96, 128].into_iter().enumerate() {
                let (heads, kv_heads) = GQA[(i + j) % GQA.len()];
                seed += 1;
                let shape = AttnShape::single(heads, kv_heads, d, n);
                if let Err(e) = check_mixed_patterns_on(&backend, shape, dtype, seed) {
                    panic!("{e}");
                }
            }
        }
        for d in [64usize, 128] {
            if let Err(e) = check_mixed_patterns_on(&backend, varlen_shape(7, 1, d), dtype, seed) {
                panic!("{e}");
            }
        }
    }
}

/// A longer bf16 case where many tiles are interior (unmasked fast path) and N is not a multiple of 64.
#[test]
fn mixed_patterns_bf16_long() {
    let Some(backend) = minference_test_support::cuda_backend() else {
        return;
    };
    for (n, d) in [(1500usize, 128usize), (2113, 64)] {
        if let Err(e) = check_mixed_patterns_on(&backend, AttnShape::single(8, 2, d, n), DType::Bf16, n as u64) {
            panic!("{e}");
        }
    }
}
