//! Runs every backend-suite check on the CPU backend, plus property tests over random shapes.

use minference_backend_suite::*;
use minference_core::{AttentionBackend, AttnShape, DType, SeqLen};
use minference_cpu::CpuBackend;
use proptest::prelude::*;

macro_rules! suite_test {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            // Both micro-kernel sets (they coincide on CPUs without AVX-512).
            for backend in [CpuBackend::new(), CpuBackend::portable()] {
                for seed in [1u64, 2] {
                    if let Err(e) = backend_suite::$name(&backend, seed) {
                        panic!("{} seed {seed}: {e}", backend.name());
                    }
                }
            }
        }
    )*};
}

mod backend_suite {
    pub use minference_backend_suite::*;
}

suite_test!(
    check_dense_matches_reference,
    check_dense_half_dtypes,
    check_varlen_offsets,
    check_ashape_matches_masked,
    check_vs_estimated_matches_masked,
    check_vs_random_selection_matches_masked,
    check_adaptive_vs_matches_masked,
    check_bs_matches_masked,
    check_random_index_matches_masked,
    check_full_budget_equals_dense,
    check_causality,
    check_column_permutation,
    check_no_nan_every_row_written,
    check_padding_independence,
    check_rejects_bad_input,
    check_dense_matches_reference_bf16,
    check_varlen_offsets_bf16,
    check_ashape_matches_masked_bf16,
    check_vs_estimated_matches_masked_bf16,
    check_vs_random_selection_matches_masked_bf16,
    check_adaptive_vs_matches_masked_bf16,
    check_bs_matches_masked_bf16,
    check_random_index_matches_masked_bf16,
    check_full_budget_equals_dense_bf16,
    check_causality_bf16,
    check_column_permutation_bf16,
    check_padding_independence_bf16,
    check_short_prompt_vs_equals_dense,
    check_short_prompt_vs_equals_dense_bf16,
    check_dense_pattern_equals_dense,
);

#[test]
fn all_checks_lists_every_check() {
    assert_eq!(all_checks::<CpuBackend>().len(), 17);
    assert_eq!(all_checks_bf16::<CpuBackend>().len(), 13);
}

fn arb_shape() -> impl Strategy<Value = AttnShape> {
    (
        1usize..=3,
        1usize..=4,
        prop::sample::select(vec![16usize, 40, 64, 96, 128]),
        prop::collection::vec((1usize..200, 0usize..70), 1..4),
    )
        .prop_map(|(kv_heads, group, head_dim, seqs)| AttnShape {
            heads: kv_heads * group,
            kv_heads,
            head_dim,
            seqs: seqs.into_iter().map(|(q_len, extra)| SeqLen { q_len, kv_len: q_len + extra }).collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn mixed_patterns_match_reference_on_random_shapes(
        shape in arb_shape(),
        dtype in prop::sample::select(vec![DType::F32, DType::Bf16, DType::F16]),
        seed in any::<u64>(),
    ) {
        for backend in [CpuBackend::new(), CpuBackend::portable()] {
            let result = check_mixed_patterns_on(&backend, shape.clone(), dtype, seed);
            prop_assert!(result.is_ok(), "{}: {}", backend.name(), result.unwrap_err());
        }
    }
}
