//! The `minference` command.

mod bench_cpu;
mod bench_gpu;
mod bench_serve;
mod bench_serve_client;
mod bench_serve_report;
mod device;
mod engines;
mod eval_cmd;
mod eval_variants;
mod lengths;
mod loaded_model;
mod model_args;
mod progress;
mod random_weights;
mod run_cmd;
mod search_cmd;
mod serve_cmd;
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
    /// OpenAI-compatible HTTP server (chat/completions, streaming, metrics) on one engine.
    Serve(serve_cmd::ServeArgs),
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
    /// The CPU engine on a GGUF: prefill/decode tok/s at 512/4K/8K beside llama.cpp, per-op decode times.
    CpuE2e(bench_cpu::BenchCpuE2eArgs),
    /// One attention layer on the GPU: our dense / VS / BS / A-shape kernels and PyTorch SDPA.
    Attention(bench_gpu::BenchAttentionArgs),
    /// Time to first token of a random-weight model on the GPU, dense vs MInference.
    E2e(bench_gpu::BenchE2eArgs),
    /// The server in-process: long-prompt TTFT over HTTP vs `run`'s path, and short prompts from
    /// concurrent clients (requests/s, tokens/s, TTFT and latency percentiles).
    Serve(bench_serve::BenchServeArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Run(a) => run_cmd::run(a),
        Command::Serve(a) => serve_cmd::run(a),
        Command::Search(a) => search_cmd::run(a),
        Command::Viz(a) => viz_cmd::run(a),
        Command::Bench(BenchCommand::Cpu(a)) => bench_cpu::run(a),
        Command::Bench(BenchCommand::CpuE2e(a)) => bench_cpu::run_e2e(a),
        Command::Bench(BenchCommand::Attention(a)) => bench_gpu::attention(a),
        Command::Bench(BenchCommand::E2e(a)) => bench_gpu::e2e(a),
        Command::Bench(BenchCommand::Serve(a)) => bench_serve::run(a),
        Command::Eval(c) => eval_cmd::run(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every subcommand's definition is consistent, and its defaults parse into the argument
    /// structs (a value parser whose type differs from its field only fails when parsed).
    #[test]
    fn every_command_parses_with_its_defaults() {
        Cli::command().debug_assert();
        let lines: &[&[&str]] = &[
            &["run", "--prompt", "hi"],
            &["run", "--prompt", "hi", "--dense-below", "32k", "--gpus", "2", "--precision", "f16"],
            &["serve", "--port", "0", "--max-queue", "4", "--api-key", "k", "--dense-below", "4k"],
            &["search", "--synthetic-kv-retrieval", "-o", "c.json"],
            &["viz", "--prompt", "p.txt", "--layer", "0", "--head", "0", "-o", "a.png"],
            &["bench", "cpu"],
            &["bench", "attention"],
            &["bench", "e2e", "--random-weights", "--gpus", "1,2,4", "--memory-gib", "78"],
            &["bench", "serve"],
            &["bench", "serve", "--random-weights", "qwen2.5-7b", "--device", "cuda", "--csv", "s.csv"],
            &["run", "--random-weights", "qwen2.5-7b", "--layers", "2", "--prompt-tokens", "32k"],
            &["serve", "--random-weights", "smollm2-135m", "--device", "cpu"],
            &["eval", "needle", "--device", "cuda", "--gpus", "2"],
            &["eval", "ppl", "--file", "doc.txt", "--precision", "f16"],
        ];
        for line in lines {
            let argv = std::iter::once("minference").chain(line.iter().copied());
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("{line:?}: {e}");
            }
        }
        assert!(Cli::try_parse_from(["minference", "run", "--prompt", "hi", "--dense-below", "soon"]).is_err());
        assert!(Cli::try_parse_from(["minference", "run", "--prompt", "hi", "--precision", "fp8"]).is_err());
    }

    /// `--random-weights SHAPE` (run, serve, bench serve): it excludes --model, --layers needs it,
    /// and `run --prompt-tokens` excludes a text prompt.
    #[test]
    fn random_weights_flag_parses_and_excludes_model() {
        let parse = |line: &[&str]| Cli::try_parse_from(std::iter::once("minference").chain(line.iter().copied()));
        match parse(&["run", "--random-weights", "qwen2.5-7b", "--layers", "2", "--prompt-tokens", "32k"]) {
            Ok(Cli { command: Command::Run(a) }) => {
                assert_eq!(a.model.random_weights.as_deref(), Some("qwen2.5-7b"));
                assert_eq!((a.model.layers, a.prompt_tokens, a.prompt), (Some(2), Some(32 * 1024), None));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["bench", "serve", "--random-weights", "smollm2-135m", "--layers", "1", "--requests", "8"]) {
            Ok(Cli { command: Command::Bench(BenchCommand::Serve(a)) }) => {
                assert_eq!(a.serve.model.random_weights.as_deref(), Some("smollm2-135m"));
                assert_eq!((a.serve.model.layers, a.requests, a.prompt_tokens, a.reps), (Some(1), 8, 32 * 1024, 3));
                assert_eq!((a.clients, a.max_tokens), (8, 16));
            }
            other => panic!("{other:?}"),
        }
        let refused: &[&[&str]] = &[
            &["run", "--random-weights", "qwen2.5-7b", "--model", "m.gguf", "--prompt-tokens", "8"],
            &["serve", "--random-weights", "qwen2.5-7b", "--model", "m.gguf"],
            &["bench", "serve", "--model", "m.gguf", "--random-weights", "smollm2-135m"],
            &["run", "--layers", "2", "--prompt", "hi"],
            &["serve", "--layers", "2"],
            &["run", "--prompt-tokens", "8", "--prompt", "hi"],
            &["run", "--prompt-tokens", "8", "--raw"],
            &["run", "--random-weights"],
        ];
        for line in refused {
            assert!(parse(line).is_err(), "{line:?} should be refused");
        }
    }
}
