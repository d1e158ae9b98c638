//! `minference serve`: the OpenAI-compatible HTTP server (crates/server) on the engine that
//! `--device/--gpus` resolve to. See docs/server.md.

use crate::engines::{open_engines, EngineWeights, Placement, PlacementArgs};
use crate::model_args::{attention_choice, load_model, AttentionKind, ModelArgs};
use anyhow::{bail, Context, Result};
use minference_engine::PrefillEngine;
use minference_server::{Server, ServerConfig};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to bind. The default is loopback only; another address exposes the server to the
    /// network (use --api-key).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    #[command(flatten)]
    pub placement: PlacementArgs,
    #[arg(long, value_enum, default_value_t = AttentionKind::Minference)]
    pub attention: AttentionKind,
    /// Requests that may wait for the engine; beyond that the server answers 503 + Retry-After.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Largest max_tokens a request may ask for (and the default when it asks for none).
    #[arg(long, default_value_t = 1024)]
    pub max_tokens_cap: usize,
    /// Requests that decode at the same time, each with its own KV cache. Default: 4 on the CPU, 1
    /// on a GPU (more on one GPU share its weights; a tensor-parallel group runs one at a time).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Require `Authorization: Bearer KEY` (default: the MINFERENCE_API_KEY environment variable).
    #[arg(long)]
    pub api_key: Option<String>,
    /// The model id clients pass (default: the model file's name without extension).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Allow prompts longer than the model's context (RoPE extrapolation; quality not guaranteed).
    #[arg(long)]
    pub allow_context_extension: bool,
}

fn model_id(args: &ServeArgs, name: &str) -> String {
    if let Some(n) = &args.served_model_name {
        return n.clone();
    }
    let from_path = args.model.model.as_ref().and_then(|p| p.file_stem()).map(|s| s.to_string_lossy().into_owned());
    from_path.unwrap_or_else(|| {
        minference_model::ensure_default_model()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| name.replace(' ', "-"))
    })
}

pub fn run(args: &ServeArgs) -> Result<()> {
    if args.max_tokens_cap == 0 {
        bail!("--max-tokens-cap must be at least 1");
    }
    let placement = args.placement.resolve()?;
    let model = Arc::new(load_model(&args.model)?);
    model.tokenizer().context("the server needs a model with a tokenizer")?;
    let dense_below = args.model.dense_below_for(placement.is_gpu());
    let (attention, label) = attention_choice(&args.model, &model, args.attention, dense_below)?;
    let api_key = args.api_key.clone().or_else(|| std::env::var("MINFERENCE_API_KEY").ok()).filter(|k| !k.is_empty());
    let slots = match (placement, args.parallel) {
        (_, Some(0)) => bail!("--parallel must be at least 1"),
        (Placement::Cpu, p) => p.unwrap_or(4),
        // One GPU: engines beyond the first share its weights, each with its own KV cache.
        (Placement::Gpus { count: 1, .. }, p) => p.unwrap_or(1),
        (Placement::Gpus { count, .. }, Some(p)) if p > 1 => {
            eprintln!("--parallel {p}: a tensor-parallel group of {count} GPUs runs one request at a time; using 1");
            1
        }
        (Placement::Gpus { .. }, _) => 1,
    };
    let cfg = ServerConfig {
        model_id: model_id(args, &model.config().name),
        max_queue: args.max_queue,
        max_tokens_cap: args.max_tokens_cap,
        api_key: api_key.clone(),
        body_limit: args.max_body_bytes,
        attention,
        attention_label: label.clone(),
        allow_context_extension: args.allow_context_extension,
    };
    let (weights_model, precision, extend) =
        (Arc::clone(&model), args.placement.precision, args.allow_context_extension);
    let factory: minference_server::EngineFactory = Box::new(move || {
        let open = || -> Result<Vec<Box<dyn PrefillEngine>>> {
            let mut engines =
                open_engines(EngineWeights::Model(Arc::clone(&weights_model)), placement, precision, slots)?;
            for e in &mut engines {
                e.set_allow_context_extension(extend)?;
            }
            Ok(engines)
        };
        open().map_err(|e| format!("{e:#}"))
    });
    let model_name = cfg.model_id.clone();
    let server = Server::start(Arc::clone(&model), cfg, factory)?;
    let addr = format!("{}:{}", args.host, args.port);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        let loopback = local.ip().is_loopback();
        eprintln!(
            "serving {model_name} on http://{local} | device {} | attention {label} | queue {} | auth {}",
            server.device(),
            args.max_queue,
            if api_key.is_some() { "API key" } else { "none" }
        );
        if !loopback && api_key.is_none() {
            eprintln!("warning: listening on {local} without an API key; anyone who can reach it can use it");
        }
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        server.serve(listener, shutdown).await.context("serving")
    })
}
