//! The HTTP side: the router and its handlers; parsing and checking requests (`request`), handing
//! them to the engine worker, and turning its events into OpenAI responses (`response`: one JSON,
//! or server-sent events).

use crate::api::*;
use crate::error::ApiError;
use crate::worker::{Event, Job};
use crate::AppState;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use request::{prepare, read_json, Prepared, PromptInput};
use response::{stream_response, Meta};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::TrySendError;
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc::UnboundedReceiver;

mod request;
mod response;

type St = State<Arc<AppState>>;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), guard))
        .with_state(state)
}

/// `v` as an `application/json` 200 response.
fn json<T: serde::Serialize>(v: T) -> Json<T> {
    Json(v)
}

pub(crate) struct Json<T>(T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => ApiError::engine(format!("serializing the response: {e}")).into_response(),
        }
    }
}

/// The metrics label of a path (a fixed set, so that clients cannot grow the label space).
fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "chat_completions",
        "/v1/completions" => "completions",
        "/health" => "health",
        "/metrics" => "metrics",
        p if p == "/v1/models" || p.starts_with("/v1/models/") => "models",
        _ => "other",
    }
}

/// `Authorization: Bearer <key>` against the configured key, in constant time.
fn authorized(headers: &HeaderMap, key: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) else {
        return false;
    };
    bool::from(token.trim().as_bytes().ct_eq(key.as_bytes()))
}

/// API key check (all routes but /health) and the request counter.
async fn guard(State(s): St, req: Request, next: Next) -> Response {
    let endpoint = endpoint_label(req.uri().path());
    let resp = match &s.cfg.api_key {
        Some(key) if endpoint != "health" && !authorized(req.headers(), key) => {
            ApiError::unauthorized().into_response()
        }
        _ => next.run(req).await,
    };
    s.metrics.request(endpoint, resp.status().as_u16());
    resp
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(req.uri().path())
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

async fn health(State(s): St) -> Response {
    json(serde_json::json!({
        "status": "ok",
        "model": s.cfg.model_id,
        "device": s.device,
        "queue_depth": s.metrics.queue_depth.load(Ordering::Relaxed),
        "running": s.metrics.running.load(Ordering::Relaxed),
    }))
    .into_response()
}

async fn metrics(State(s): St) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

fn card(s: &AppState) -> ModelCard {
    ModelCard {
        id: s.cfg.model_id.clone(),
        object: "model",
        created: s.started,
        owned_by: "minference",
        context_length: s.model.config().context_length,
    }
}

async fn models(State(s): St) -> Response {
    json(ModelList { object: "list", data: vec![card(&s)] }).into_response()
}

async fn model(State(s): St, Path(id): Path<String>) -> Response {
    if id == s.cfg.model_id {
        json(card(&s)).into_response()
    } else {
        ApiError::unknown_model(&id, &s.cfg.model_id).into_response()
    }
}

/// Sets the request's cancel flag when the handler (or its event stream) is dropped: the client
/// went away, or the response is complete.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Hands `prep` to the worker: queue full → 503 with Retry-After.
fn submit(
    s: &AppState,
    prep: &Prepared,
    received: Instant,
) -> Result<(UnboundedReceiver<Event>, CancelOnDrop), ApiError> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let job = Job {
        prompt: prep.prompt.clone(),
        opts: prep.opts.clone(),
        stop_strings: prep.stops.clone(),
        cancel: Arc::clone(&cancel),
        events: tx,
        received,
    };
    let depth = s.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
    match s.jobs.try_send(job) {
        Ok(()) => Ok((rx, CancelOnDrop(cancel))),
        Err(e) => {
            s.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            match e {
                TrySendError::Full(_) => {
                    s.metrics.queue_full.fetch_add(1, Ordering::Relaxed);
                    Err(ApiError::queue_full(depth))
                }
                TrySendError::Disconnected(_) => Err(ApiError::unavailable("the engine worker has stopped")),
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

async fn chat_completions(State(s): St, req: Request) -> Response {
    let received = Instant::now();
    let body: ChatCompletionRequest = match read_json(&s, req.into_body()).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let text = match s.model.tokenizer() {
        Some(t) => crate::chat::render(&t.chat, &body.messages),
        None => Err(ApiError::no_tokenizer("messages", &s.cfg.model_id)),
    };
    match text {
        Ok(text) => respond(s, Kind::Chat, &body.model, PromptInput::Text(&text), &body.sampling, received).await,
        Err(e) => e.into_response(),
    }
}

async fn completions(State(s): St, req: Request) -> Response {
    let received = Instant::now();
    let body: CompletionRequest = match read_json(&s, req.into_body()).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let input = match &body.prompt {
        Prompt::One(t) => PromptInput::Text(t),
        Prompt::Tokens(ids) => PromptInput::Ids(ids),
        Prompt::Many(v) if v.len() == 1 => PromptInput::Text(&v[0]),
        Prompt::ManyTokens(v) if v.len() == 1 => PromptInput::Ids(&v[0]),
        Prompt::Many(_) | Prompt::ManyTokens(_) => {
            return ApiError::bad_param("prompt", "only one prompt per request is supported").into_response()
        }
    };
    respond(s, Kind::Text, &body.model, input, &body.sampling, received).await
}

/// Runs a checked request and answers with one JSON or an event stream.
async fn respond(
    s: Arc<AppState>,
    kind: Kind,
    model: &str,
    input: PromptInput<'_>,
    p: &Sampling,
    received: Instant,
) -> Response {
    let n = s.next_id.fetch_add(1, Ordering::Relaxed);
    let prep = match prepare(&s, model, input, p, n) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (mut rx, guard) = match submit(&s, &prep, received) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let id = format!("{}-{:x}{n:06}", if kind == Kind::Chat { "chatcmpl" } else { "cmpl" }, s.started);
    let meta = Meta {
        id,
        created: crate::unix_now(),
        model: s.cfg.model_id.clone(),
        kind,
        prompt_tokens: prep.prompt.len(),
        token_ids: s.model.tokenizer().is_none(),
    };
    // Wait for the prefill, so that a failed one still gets its HTTP status.
    let info = match rx.recv().await {
        Some(Event::Started(info)) => *info,
        Some(Event::Failed(e)) => return e.into_response(),
        _ => return ApiError::unavailable("the request was dropped by the engine worker").into_response(),
    };
    if prep.stream {
        stream_response(meta, info, rx, guard, prep.include_usage)
    } else {
        let (mut content, mut ids) = (String::new(), Vec::new());
        loop {
            match rx.recv().await {
                Some(Event::Text(t)) => content.push_str(&t),
                Some(Event::Token(id)) => ids.push(id),
                Some(Event::Done(f)) => return meta.full(content, ids, f, info),
                Some(Event::Failed(e)) => return e.into_response(),
                Some(Event::Started(_)) => {}
                None => return ApiError::unavailable("the request was dropped by the engine worker").into_response(),
            }
        }
    }
}
