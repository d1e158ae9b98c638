//! Evaluations of MInference prefill against dense attention on a real model (issue 7 §3, §5):
//!
//! * needle (passkey) retrieval over a grid of prompt lengths × needle depths, with a PNG heat map
//!   ([`needle`], [`haystack`], [`grid`], [`heatmap`]);
//! * perplexity, mean NLL and next-token KL of a long document's last positions under each
//!   prefill ([`ppl`]), with the kernel density of the indices actually used ([`coverage`]);
//! * the Pareto picture of Δ perplexity against kernel density ([`pareto`]).

pub mod coverage;
pub mod error;
pub mod grid;
pub mod haystack;
pub mod heatmap;
pub mod needle;
pub mod pareto;
pub mod ppl;

pub use coverage::{prefill_hidden_with_coverage, CoverageRecorder};
pub use error::{EvalError, Result};
pub use grid::{run_needle_cell, CellResult, NeedleGrid};
pub use haystack::Haystack;
pub use heatmap::{write_png, Panel};
pub use needle::{build_needle_prompt, needle_value, parse_depths, NeedlePrompt, PromptFrame};
pub use pareto::{write_pareto_png, ParetoPoint};
pub use ppl::{score_streams, PositionScores};
