//! `minference bench cpu`: CPU dense vs CPU VS / BS / A-shape (issue 2's benchmark).

use anyhow::{anyhow, Result};
use minference_core::DType;
use minference_cpu::bench::{run_cpu_bench, CpuBenchConfig};

#[derive(clap::Args, Debug)]
pub struct BenchCpuArgs {
    /// Prompt lengths, comma-separated (k = 1024).
    #[arg(long, default_value = "8k,32k,64k", value_parser = crate::lengths::parse_lengths)]
    pub lengths: std::vec::Vec<usize>,
    /// Query heads (one KV group by default).
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 1)]
    pub kv_heads: usize,
    #[arg(long, default_value_t = 128)]
    pub head_dim: usize,
    /// Timed repeats per measurement (best reported).
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Use the random (unstructured, worst case for VS) workload instead of the structured one.
    #[arg(long)]
    pub random: bool,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

pub fn run(args: &BenchCpuArgs) -> Result<()> {
    let mut cfg = CpuBenchConfig {
        lengths: args.lengths.clone(),
        heads: args.heads,
        kv_heads: args.kv_heads,
        head_dim: args.head_dim,
        dtype: DType::Bf16,
        seed: args.seed,
        repeats: args.repeats.max(1),
        ..CpuBenchConfig::default()
    };
    if args.random {
        cfg.synth = minference_core::synth::SynthConfig::random();
    }
    let report = run_cpu_bench(&cfg).map_err(|e| anyhow!(e))?;
    println!("{report}");
    Ok(())
}
