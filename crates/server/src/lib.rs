//! `minference serve`: an OpenAI-compatible HTTP server (axum + tokio) over one minference
//! engine. The router ([`Server::router`]) parses and checks requests, the engine worker
//! ([`worker`]) owns the engines on a std thread and schedules prefills and decode steps, and
//! [`metrics`] renders Prometheus text. See docs/server.md.

pub mod api;
pub mod chat;
pub mod error;
pub mod metrics;
mod routes;
pub mod served;
pub mod worker;

pub use error::{ApiError, ServerError};
pub use metrics::Metrics;
pub use served::ServedModel;
pub use worker::{EngineFactory, Event, Finished, Job};

use minference_engine::AttentionChoice;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The id clients pass as `model` (and `/v1/models` lists).
    pub model_id: String,
    /// Requests that may wait for the engine; one more gets 503 with `Retry-After`.
    pub max_queue: usize,
    /// Largest `max_tokens` a request may ask for (also the default).
    pub max_tokens_cap: usize,
    /// Requests must send `Authorization: Bearer <key>` (all routes but `/health`).
    pub api_key: Option<String>,
    /// Largest request body, bytes.
    pub body_limit: usize,
    pub attention: AttentionChoice,
    /// How `attention` reads in responses ("minference (configs/x.json)").
    pub attention_label: String,
    /// Prompts longer than the model's context are allowed (RoPE extension).
    pub allow_context_extension: bool,
}

impl ServerConfig {
    pub fn new(model_id: impl Into<String>) -> Self {
        ServerConfig {
            model_id: model_id.into(),
            max_queue: 64,
            max_tokens_cap: 2048,
            api_key: None,
            body_limit: 8 << 20,
            attention: AttentionChoice::Dense,
            attention_label: "dense".into(),
            allow_context_extension: false,
        }
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    pub cfg: ServerConfig,
    pub model: ServedModel,
    pub jobs: SyncSender<Job>,
    pub metrics: Arc<Metrics>,
    pub device: String,
    pub started: u64,
    pub next_id: AtomicU64,
}

/// A started engine worker and the router in front of it.
pub struct Server {
    state: Arc<AppState>,
    _worker: std::thread::JoinHandle<()>,
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Server {
    /// Opens the engines (through `engines`, on the worker thread) and readies the router. A model
    /// without a tokenizer is served on token ids (docs/server.md).
    pub fn start(
        model: impl Into<ServedModel>,
        cfg: ServerConfig,
        engines: EngineFactory,
    ) -> Result<Server, ServerError> {
        let model = model.into();
        let metrics = Arc::new(Metrics::default());
        let (jobs, rx) = std::sync::mpsc::sync_channel(cfg.max_queue);
        let setup = worker::WorkerSetup {
            model: model.clone(),
            attention: cfg.attention.clone(),
            attention_label: cfg.attention_label.clone(),
            metrics: Arc::clone(&metrics),
        };
        let (handle, device) = worker::spawn(setup, engines, rx)?;
        let state = AppState { cfg, model, jobs, metrics, device, started: unix_now(), next_id: AtomicU64::new(1) };
        Ok(Server { state: Arc::new(state), _worker: handle })
    }

    /// The engine's device as responses name it.
    pub fn device(&self) -> &str {
        &self.state.device
    }

    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Every endpoint, behind the API key check and the request counter.
    pub fn router(&self) -> axum::Router {
        routes::router(Arc::clone(&self.state))
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router()).with_graceful_shutdown(shutdown).await
    }
}
