//! The `minference` command.

mod bench_cpu;
mod bench_gpu;
mod device;
mod eval_cmd;
mod gpu;
mod lengths;
mod model_args;
mod progress;
mod run_cmd;
mod search_cmd;
mod viz_cmd;

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
    /// Offline kernel-aware per-head pattern search; writes an MInference JSON config.
    Search(search_cmd::SearchArgs),
    /// PNG of a head's attention with its pattern's computed mask overlaid.
    Viz(viz_cmd::VizArgs),
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
    /// One attention layer on the GPU: our dense / VS / BS / A-shape kernels and PyTorch SDPA.
    Attention(bench_gpu::BenchAttentionArgs),
    /// Time to first token of a random-weight model on the GPU, dense vs MInference.
    E2e(bench_gpu::BenchE2eArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Run(a) => run_cmd::run(a),
        Command::Search(a) => search_cmd::run(a),
        Command::Viz(a) => viz_cmd::run(a),
        Command::Bench(BenchCommand::Cpu(a)) => bench_cpu::run(a),
        Command::Bench(BenchCommand::Attention(a)) => bench_gpu::attention(a),
        Command::Bench(BenchCommand::E2e(a)) => bench_gpu::e2e(a),
        Command::Eval(c) => eval_cmd::run(c),
    }
}
