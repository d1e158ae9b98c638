//! The `minference` command.

mod bench_cpu;
mod lengths;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "minference", version, about = "MInference dynamic sparse attention for long-prompt prefill")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// CPU dense vs CPU sparse attention (one KV group, synthetic workload).
    Cpu(bench_cpu::BenchCpuArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Bench(BenchCommand::Cpu(a)) => bench_cpu::run(a),
    }
}
