//! Property checks that run against ANY backend ([`BackendTransfer`], through the [`HostRoundTrip`] adapter) and compare with the f64 reference
//! (spec §8 items 13–22). Each check is `(backend, seed) -> Result<(), String>`; the error names the
//! case that failed. `minference-cpu`'s tests run them on [`minference_cpu::CpuBackend`]; the CUDA crate runs
//! the same functions on its backend.
//!
//! Tolerances vs the f64 reference on unit-variance inputs: f32 inputs max-abs ≤ 1e-4; bf16/f16
//! inputs max-abs ≤ 2e-2 and mean-abs ≤ 2e-3 (the reference sees the same rounded inputs).
//!
//! Checks that take an input dtype exist as `check_x` (f32), `check_x_bf16` and `check_x_with`;
//! [`all_checks`] lists the f32 set plus the dtype-specific checks, [`all_checks_bf16`] the bf16 set.

use minference_core::{
    kernel_mask_keep, AttnShape, BackendTransfer, DType, HeadPattern, HostRoundTrip, OwnedTensor, SeqLen, SparseIndex,
    VsSelection, TILE,
};
use minference_cpu::reference::{dense_reference_f64, masked_attention_f64_flagged};
use minference_cpu::rng::TestRng;

mod adaptive;
mod dense;
mod fixtures;
mod sparse;

pub use adaptive::*;
pub use dense::*;
pub use fixtures::*;
pub use sparse::*;

/// A check as a plain function pointer, for running the whole list generically.
pub type Check<B> = fn(&B, u64) -> Result<(), String>;

/// Every `(backend, seed)` check of this module, by name.
pub fn all_checks<B: BackendTransfer>() -> Vec<(&'static str, Check<B>)> {
    vec![
        ("dense_matches_reference", check_dense_matches_reference::<B>),
        ("dense_half_dtypes", check_dense_half_dtypes::<B>),
        ("varlen_offsets", check_varlen_offsets::<B>),
        ("ashape_matches_masked", check_ashape_matches_masked::<B>),
        ("vs_estimated_matches_masked", check_vs_estimated_matches_masked::<B>),
        ("vs_random_selection_matches_masked", check_vs_random_selection_matches_masked::<B>),
        ("adaptive_vs_matches_masked", check_adaptive_vs_matches_masked::<B>),
        ("bs_matches_masked", check_bs_matches_masked::<B>),
        ("random_index_matches_masked", check_random_index_matches_masked::<B>),
        ("full_budget_equals_dense", check_full_budget_equals_dense::<B>),
        ("causality", check_causality::<B>),
        ("column_permutation", check_column_permutation::<B>),
        ("no_nan_every_row_written", check_no_nan_every_row_written::<B>),
        ("padding_independence", check_padding_independence::<B>),
        ("rejects_bad_input", check_rejects_bad_input::<B>),
        ("short_prompt_vs_equals_dense", check_short_prompt_vs_equals_dense::<B>),
        ("dense_pattern_equals_dense", check_dense_pattern_equals_dense::<B>),
    ]
}

/// The dtype-parameterised checks with bf16 inputs (for backends that compute in bf16).
pub fn all_checks_bf16<B: BackendTransfer>() -> Vec<(&'static str, Check<B>)> {
    vec![
        ("dense_matches_reference_bf16", check_dense_matches_reference_bf16::<B>),
        ("varlen_offsets_bf16", check_varlen_offsets_bf16::<B>),
        ("ashape_matches_masked_bf16", check_ashape_matches_masked_bf16::<B>),
        ("vs_estimated_matches_masked_bf16", check_vs_estimated_matches_masked_bf16::<B>),
        ("vs_random_selection_matches_masked_bf16", check_vs_random_selection_matches_masked_bf16::<B>),
        ("adaptive_vs_matches_masked_bf16", check_adaptive_vs_matches_masked_bf16::<B>),
        ("bs_matches_masked_bf16", check_bs_matches_masked_bf16::<B>),
        ("random_index_matches_masked_bf16", check_random_index_matches_masked_bf16::<B>),
        ("full_budget_equals_dense_bf16", check_full_budget_equals_dense_bf16::<B>),
        ("causality_bf16", check_causality_bf16::<B>),
        ("column_permutation_bf16", check_column_permutation_bf16::<B>),
        ("padding_independence_bf16", check_padding_independence_bf16::<B>),
        ("short_prompt_vs_equals_dense_bf16", check_short_prompt_vs_equals_dense_bf16::<B>),
    ]
}

/// Sequence lengths around the 64-row block boundaries (spec §8 item 20).
pub const LENGTHS: [usize; 7] = [1, 17, 63, 64, 65, 130, 257];
/// `(heads, kv_heads)`: GQA ratios 1, 3, 4, 7.
pub const GQA: [(usize, usize); 4] = [(2, 2), (6, 2), (4, 1), (7, 1)];
