//! `minference bench serve`: in one process, the server `serve` runs (same flags, same engines) on
//! an ephemeral loopback port, and
//! (a) the TTFT of one long token-id prompt through HTTP against the same prefill through the
//!     engine the way `minference run` runs it, alternating, `--reps` times;
//! (b) short streamed prompts from `--clients` concurrent clients: requests/s, generated tokens/s,
//!     TTFT and latency percentiles, failures.

use crate::bench_gpu::{commit_id, utc_date};
use crate::bench_serve_client::CompletionClient;
use crate::bench_serve_report::{Report, TtftRep};
use crate::engines::open_engine;
use crate::progress::{count_bar, spinner};
use crate::random_weights;
use crate::run_cmd::generate_streamed;
use crate::serve_cmd::{start, ServeOptions, Started};
use anyhow::{bail, Context, Result};
use minference_engine::{random_tokens, AttentionChoice, GenerateOptions, PrefillEngine, Sampler};
use minference_model::Tokenizer;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct BenchServeArgs {
    #[command(flatten)]
    pub serve: ServeOptions,
    /// Length of the long prompt (seeded token ids, as `run --prompt-tokens`); cut to the model's
    /// context unless --allow-context-extension.
    #[arg(long, default_value = "32k", value_parser = crate::lengths::parse_length)]
    pub prompt_tokens: usize,
    /// Repetitions of the long prompt on each path (they alternate which goes first).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Concurrent clients of the short prompts.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Short requests in all.
    #[arg(long, default_value_t = 64)]
    pub requests: usize,
    /// max_tokens of each short request.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: usize,
    /// Token ids of each short prompt.
    #[arg(long, default_value_t = 32)]
    pub short_prompt_tokens: usize,
    /// Also write the call as one CSV row (with a header).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Commit recorded in the CSV (default: $MINFERENCE_COMMIT, else "unknown").
    #[arg(long)]
    pub commit: Option<String>,
}

/// The engine and options `run` would use for a prompt, minus its output.
struct RunPath<'a> {
    engine: Box<dyn PrefillEngine>,
    attention: &'a AttentionChoice,
    opts: GenerateOptions,
    tokenizer: Option<&'a Tokenizer>,
}

impl RunPath<'_> {
    /// `run`'s time to first token of `prompt` (the prefill it prints); the cache is freed after.
    fn ttft(&mut self, prompt: &[u32]) -> Result<f64> {
        let mut sink = std::io::sink();
        let gen =
            generate_streamed(self.engine.as_mut(), prompt, self.attention, &self.opts, self.tokenizer, &mut sink)?;
        self.engine.reset()?;
        Ok(gen.prefill.seconds)
    }
}

fn check(args: &BenchServeArgs) -> Result<()> {
    for (flag, v) in [("--reps", args.reps), ("--clients", args.clients), ("--requests", args.requests)] {
        if v == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    if args.max_tokens == 0 || args.max_tokens > args.serve.max_tokens_cap {
        bail!("--max-tokens must be in 1..={} (--max-tokens-cap)", args.serve.max_tokens_cap);
    }
    if args.short_prompt_tokens == 0 {
        bail!("--short-prompt-tokens must be at least 1");
    }
    Ok(())
}

/// The long prompt's length: `want`, or what the context leaves for one token.
fn long_prompt_len(want: usize, context: usize, extend: bool) -> usize {
    if extend || want < context {
        return want;
    }
    eprintln!(
        "--prompt-tokens {want} is not below the model's context of {context}; using {} \
         (--allow-context-extension keeps it)",
        context - 1
    );
    context - 1
}

pub fn run(args: &BenchServeArgs) -> Result<()> {
    check(args)?;
    let Started { server, model, placement, attention, label, model_id } = start(&args.serve, None)?;
    let cfg = model.config().clone();
    let device = server.device().to_string();
    let n = long_prompt_len(args.prompt_tokens, cfg.context_length, args.serve.allow_context_extension);
    let prompt = random_weights::prompt(&cfg, n)?;
    let shorts: Vec<Vec<u32>> = (0..args.requests)
        .map(|i| random_tokens(args.short_prompt_tokens, cfg.vocab, random_weights::SEED ^ ((i as u64 + 1) << 32)))
        .collect();
    // `run`'s engine beside the server's (host weights are shared; a GPU generates its own copy).
    eprintln!("opening the engine `minference run` would use, beside the server's");
    let mut engine = open_engine(model.engine_weights(), placement, args.serve.placement.precision)?;
    engine.set_allow_context_extension(args.serve.allow_context_extension)?;
    let tokenizer = model.tokenizer();
    let stop_tokens = tokenizer.map(|t| t.stop_tokens.clone()).unwrap_or_default();
    let opts = GenerateOptions { max_new_tokens: 1, sampler: Sampler::greedy(), stop_tokens };
    let mut direct = RunPath { engine, attention: &attention, opts, tokenizer };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).context("binding a loopback port")?;
    let base = format!("http://{}", listener.local_addr()?);
    let serving = runtime.spawn(async move {
        let shutdown = async {
            let _ = stop_rx.await;
        };
        server.serve(listener, shutdown).await
    });
    let client = CompletionClient::new(&base, &model_id)?;
    eprintln!("bench serve: {} on {device} at {base} | attention {label}", cfg.name);

    // Warm-up, not reported (module loads, GEMM heuristics, thread pools), as bench e2e does.
    let warm = random_weights::prompt(&cfg, n.min(4096))?;
    let bar = spinner(format!("warm-up: {} tokens through both paths", warm.len()));
    direct.ttft(&warm)?;
    runtime.block_on(client.first_token(&warm))?;
    bar.finish_and_clear();

    let mut reps = Vec::with_capacity(args.reps);
    for rep in 0..args.reps {
        let server_first = rep % 2 == 1;
        let server = |client: &CompletionClient| {
            let bar = spinner(format!("rep {}/{}: {n} tokens through the server", rep + 1, args.reps));
            let t = runtime.block_on(client.first_token(&prompt));
            bar.finish_and_clear();
            t
        };
        let (timed, run) = if server_first {
            let t = server(&client)?;
            (t, direct.ttft(&prompt)?)
        } else {
            let r = direct.ttft(&prompt)?;
            (server(&client)?, r)
        };
        eprintln!(
            "rep {}: run {run:.3} s | server {:.3} s (its ttft_seconds {:.3}, prefill_seconds {:.3}) | {:.3}×",
            rep + 1,
            timed.wall,
            timed.server_ttft,
            timed.server_prefill,
            timed.wall / run
        );
        let first = if server_first { "server" } else { "run" };
        let (server_wall, server_ttft, server_prefill) = (timed.wall, timed.server_ttft, timed.server_prefill);
        reps.push(TtftRep { first, run, server_wall, server_ttft, server_prefill });
    }
    drop(direct);

    let bar = count_bar(args.requests, &format!("{} clients", args.clients));
    let load = runtime.block_on(client.load(shorts, args.clients, args.max_tokens, &bar));
    bar.finish_and_clear();
    let _ = stop_tx.send(());
    let _ = runtime.block_on(serving);

    let report = Report {
        model: cfg.name.clone(),
        device,
        attention: crate::model_args::describe_attention(&label, &attention, n),
        prompt_tokens: n,
        reps,
        short_prompt_tokens: args.short_prompt_tokens,
        max_tokens: args.max_tokens,
        load,
    };
    println!("{}", report.to_markdown());
    if let Some(path) = &args.csv {
        let (date, commit) = (utc_date(), commit_id(&args.commit));
        let text = format!("{},date,commit\n{},{date},{commit}\n", Report::CSV_HEADER, report.csv_row());
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
