//! `minference serve`: the OpenAI-compatible HTTP server (crates/server) on the engine that
//! `--device/--gpus` resolve to. See docs/server.md.

use crate::engines::{open_engines, Placement, PlacementArgs};
use crate::loaded_model::LoadedModel;
use crate::model_args::{attention_choice, AttentionKind, ModelArgs};
use anyhow::{bail, Context, Result};
use minference_engine::{AttentionChoice, PrefillEngine};
use minference_server::{Server, ServerConfig};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub engine: ServeOptions,
    /// Address to bind. The default is loopback only; another address exposes the server to the
    /// network (use --api-key).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` (default: the MINFERENCE_API_KEY environment variable).
    #[arg(long)]
    pub api_key: Option<String>,
}

/// How the server's engines and limits are set up: `serve` and `bench serve` share them, so the
/// bench measures the server `serve` runs.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeOptions {
    #[command(flatten)]
    pub model: ModelArgs,
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
    /// The model id clients pass (default: the model file's name without extension;
    /// `SHAPE-random-weights` for --random-weights).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Allow prompts longer than the model's context (RoPE extrapolation; quality not guaranteed).
    #[arg(long)]
    pub allow_context_extension: bool,
}

fn model_id(opts: &ServeOptions, name: &str) -> String {
    if let Some(n) = &opts.served_model_name {
        return n.clone();
    }
    if let Some(shape) = &opts.model.random_weights {
        return format!("{shape}-random-weights");
    }
    let from_path = opts.model.model.as_ref().and_then(|p| p.file_stem()).map(|s| s.to_string_lossy().into_owned());
    from_path.unwrap_or_else(|| {
        minference_model::ensure_default_model()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| name.replace(' ', "-"))
    })
}

/// A started server (engines open, not yet listening) and what it was started with.
pub struct Started {
    pub server: Server,
    pub model: LoadedModel,
    pub placement: Placement,
    pub attention: AttentionChoice,
    /// How the attention reads ("minference (configs/x.json)").
    pub label: String,
    pub model_id: String,
}

/// Loads the model and opens the server's engines on the placement `opts` resolve to.
pub fn start(opts: &ServeOptions, api_key: Option<String>) -> Result<Started> {
    if opts.max_tokens_cap == 0 {
        bail!("--max-tokens-cap must be at least 1");
    }
    let placement = opts.placement.resolve()?;
    let model = LoadedModel::load(&opts.model, placement)?;
    let dense_below = opts.model.dense_below_for(placement.is_gpu());
    let (attention, label) = attention_choice(&opts.model, model.config(), opts.attention, dense_below)?;
    let slots = match (placement, opts.parallel) {
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
        model_id: model_id(opts, &model.config().name),
        max_queue: opts.max_queue,
        max_tokens_cap: opts.max_tokens_cap,
        api_key,
        body_limit: opts.max_body_bytes,
        attention: attention.clone(),
        attention_label: label.clone(),
        allow_context_extension: opts.allow_context_extension,
    };
    let (weights, precision, extend) = (model.engine_weights(), opts.placement.precision, opts.allow_context_extension);
    let factory: minference_server::EngineFactory = Box::new(move || {
        let open = || -> Result<Vec<Box<dyn PrefillEngine>>> {
            let mut engines = open_engines(weights, placement, precision, slots)?;
            for e in &mut engines {
                e.set_allow_context_extension(extend)?;
            }
            Ok(engines)
        };
        open().map_err(|e| format!("{e:#}"))
    });
    let model_id = cfg.model_id.clone();
    let server = Server::start(model.served(), cfg, factory)?;
    Ok(Started { server, model, placement, attention, label, model_id })
}

pub fn run(args: &ServeArgs) -> Result<()> {
    let api_key = args.api_key.clone().or_else(|| std::env::var("MINFERENCE_API_KEY").ok()).filter(|k| !k.is_empty());
    let Started { server, model, label, model_id, .. } = start(&args.engine, api_key.clone())?;
    let random = if model.has_random_weights() { " (random weights: prompts are token ids)" } else { "" };
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
            "serving {model_id}{random} on http://{local} | device {} | attention {label} | queue {} | auth {}",
            server.device(),
            args.engine.max_queue,
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
