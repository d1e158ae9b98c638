//! The `minference` command.

mod bench_cpu;
mod device;
mod eval_cmd;
mod gpu;
mod lengths;
mod model_args;
mod progress;
mod run_cmd;

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
    /// Run a prompt through a model with MInference prefill and stream the answer.
    Run(run_cmd::RunArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Accuracy evaluations: needle retrieval grid, perplexity / KL / kernel density.
    #[command(subcommand)]
    Eval(eval_cmd::EvalCommand),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// CPU dense vs CPU sparse attention (one KV group, synthetic workload).
    Cpu(bench_cpu::BenchCpuArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Run(a) => run_cmd::run(a),
        Command::Bench(BenchCommand::Cpu(a)) => bench_cpu::run(a),
        Command::Eval(c) => eval_cmd::run(c),
    }
}
