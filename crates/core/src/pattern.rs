//! Per-head attention patterns (spec §1).

use serde::{Deserialize, Serialize};

/// Width of a key tile / height of a query row block. Every MInference 1.0 kernel uses 64.
pub const TILE: usize = 64;

/// Query rows used by the Vertical-Slash online estimate (spec §1.3.2, `last_q`).
pub const VS_LAST_Q: usize = 64;
/// Leading key columns always kept by the VS estimate (attention sinks).
pub const VS_FORCED_VERTICALS: usize = 30;
/// Nearest diagonals (d = 0..99) always kept by the VS estimate (local window).
pub const VS_FORCED_SLASHES: usize = 100;
/// Budget floors applied before estimation (spec §1.3.2 step 1).
pub const VS_MIN_VERTICALS: usize = 30;
pub const VS_MIN_SLASHES: usize = 50;
/// Block-sparse top-k used by MInference whatever the config says (spec §1.4).
pub const BS_DEFAULT_TOP_K: usize = 100;

/// The attention pattern of one head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeadPattern {
    /// Plain causal attention.
    Dense,
    /// A-shape: first `n_init` keys plus a window of the `n_local` most recent keys.
    AShape { n_init: usize, n_local: usize },
    /// Vertical-Slash: `k_v` key columns plus `k_s` diagonals, estimated online.
    VerticalSlash { k_v: usize, k_s: usize },
    /// Block-Sparse: per 64-row block, the top `k_b` 64-column key blocks.
    BlockSparse { k_b: usize },
    /// Adaptive Vertical-Slash (see [`crate::adaptive`]): the VS estimate of the prompt, then the
    /// smallest `(k_v, k_s)` whose estimated mass reaches `gamma` (kept in millionths,
    /// `gamma_ppm` in `1..=1_000_000`), bounded by `[min_v, max_v]` and `[min_s, max_s]`; then the
    /// VS index of those budgets.
    AdaptiveVs { gamma_ppm: u32, min_v: usize, max_v: usize, min_s: usize, max_s: usize },
}

impl HeadPattern {
    /// MInference's default for a head missing from a config (spec §3.3).
    pub const DEFAULT: HeadPattern = HeadPattern::VerticalSlash { k_v: 1000, k_s: 6096 };

    pub fn name(&self) -> &'static str {
        match self {
            HeadPattern::Dense => "dense",
            HeadPattern::AShape { .. } => "stream_llm",
            HeadPattern::VerticalSlash { .. } => "vertical_and_slash",
            HeadPattern::BlockSparse { .. } => "block_sparse",
            HeadPattern::AdaptiveVs { .. } => "adaptive_vertical_and_slash",
        }
    }

    /// The pattern with its numbers, for summaries and captions: `vertical_and_slash (100, 800)`,
    /// `adaptive_vertical_and_slash (gamma 0.9, v 30..6096, s 100..6096)`, `dense`.
    pub fn describe(&self) -> String {
        match *self {
            HeadPattern::Dense => "dense".into(),
            HeadPattern::AShape { n_init, n_local } => format!("stream_llm ({n_init}, {n_local})"),
            HeadPattern::VerticalSlash { k_v, k_s } => format!("vertical_and_slash ({k_v}, {k_s})"),
            HeadPattern::BlockSparse { k_b } => format!("block_sparse ({k_b})"),
            HeadPattern::AdaptiveVs { gamma_ppm, min_v, max_v, min_s, max_s } => format!(
                "adaptive_vertical_and_slash (gamma {}, v {min_v}..{max_v}, s {min_s}..{max_s})",
                crate::adaptive::gamma_of_ppm(gamma_ppm)
            ),
        }
    }

    /// Vertical-Slash with fixed or adaptive budgets: the head is estimated online from its last
    /// query rows and converted to a VS index.
    pub fn is_vertical_slash(&self) -> bool {
        matches!(self, HeadPattern::VerticalSlash { .. } | HeadPattern::AdaptiveVs { .. })
    }

    /// The head's kernel reads the sparse index (VS, adaptive VS, BS) rather than an analytic mask.
    pub fn reads_index(&self) -> bool {
        self.is_vertical_slash() || matches!(self, HeadPattern::BlockSparse { .. })
    }
}
