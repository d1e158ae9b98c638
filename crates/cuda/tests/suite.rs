//! The backend-independent property suite of minference-cpu, run on the CUDA backend.

mod common;

use minference_core::{AttentionBackend, AttnShape, DType};
use minference_cpu::backend_suite::{self, check_mixed_patterns_on, varlen_shape, GQA, LENGTHS};

macro_rules! suite_test {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let Some(backend) = common::gpu_backend() else { return };
            for seed in [1u64, 2] {
                if let Err(e) = backend_suite::$name(&backend, seed) {
                    panic!("{} seed {seed}: {e}", backend.name());
                }
            }
        }
    )*};
}

suite_test!(
    check_dense_matches_reference,
    check_dense_half_dtypes,
    check_varlen_offsets,
    check_ashape_matches_masked,
    check_vs_estimated_matches_masked,
    check_vs_random_selection_matches_masked,
    check_bs_matches_masked,
    check_random_index_matches_masked,
    check_full_budget_equals_dense,
    check_causality,
    check_column_permutation,
    check_no_nan_every_row_written,
    check_padding_independence,
    check_rejects_bad_input,
);

/// The tensor-core path (bf16, f16): every pattern, lengths around the 64-row edges, D = 64 and
/// 128, GQA ratios 1, 3, 4, 7, and a varlen batch with q/kv offsets.
#[test]
fn mixed_patterns_half_precision() {
    let Some(backend) = common::gpu_backend() else { return };
    let mut seed = 10u64;
    for dtype in [DType::Bf16, DType::F16] {
        for (i, &n) in LENGTHS.iter().enumerate() {
            for (j, d) in [64usize, 128].into_iter().enumerate() {
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
    let Some(backend) = common::gpu_backend() else { return };
    for (n, d) in [(1500usize, 128usize), (2113, 64)] {
        if let Err(e) = check_mixed_patterns_on(&backend, AttnShape::single(8, 2, d, n), DType::Bf16, n as u64) {
            panic!("{e}");
        }
    }
}
