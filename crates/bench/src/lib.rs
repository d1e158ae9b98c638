//! Benchmarks behind `minference bench` that belong to no library's API, so that the library
//! crates export only their real API:
//!
//! * [`cpu_attention`]: `minference bench cpu`, CPU dense vs VS / BS / A-shape.
//! * [`gpu_attention`] (inputs in `gpu_inputs`) and [`peer_export`]: `minference bench attention`,
//!   one layer on the GPU, our kernels timed per phase, and the export `bench/peers_attention.py` reads.
//! * [`e2e`]: `minference bench e2e`, time-to-first-token of a random-weight model, dense vs
//!   MInference, on any [`minference_engine::PrefillEngine`] (one GPU or a group).

pub mod cpu_attention;
pub mod e2e;
pub mod gpu_attention;
mod gpu_inputs;
pub mod peer_export;

pub use cpu_attention::{process_cpu_seconds, run_cpu_bench, sgemm_rate, CpuBenchConfig};
pub use e2e::{bench_e2e, E2eAttention, E2eOptions, E2eRow, E2eTable, E2eWorkload, E2E_SEED};
pub use gpu_attention::{run_attention_bench, BenchConfig, BenchReport, BenchRow, PatternSet, Regime};
