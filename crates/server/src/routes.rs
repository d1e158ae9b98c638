//! The HTTP side: parsing and checking requests, handing them to the engine worker, and turning
//! its events into OpenAI responses (one JSON, or server-sent events).

use crate::api::*;
use crate::error::ApiError;
use crate::worker::{Event, Finished, Job};
use crate::AppState;
use axum::body::{to_bytes, Body};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use minference_engine::{GenerateOptions, Sampler};
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::TrySendError;
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc::UnboundedReceiver;

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

/// The body as `T`: too large → 413, not JSON → 400 `invalid_json`, wrong shape → 400.
async fn read_json<T: DeserializeOwned>(s: &AppState, body: Body) -> Result<T, ApiError> {
    let bytes = to_bytes(body, s.cfg.body_limit).await.map_err(|_| ApiError::body_too_large(s.cfg.body_limit))?;
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid_body(format!("invalid request: {e}")),
        _ => ApiError::malformed_json(format!("the body is not valid JSON: {e}")),
    })
}

/// A request checked and tokenized, ready for the worker.
struct Prepared {
    prompt: Vec<u32>,
    opts: GenerateOptions,
    stops: Vec<String>,
    stream: bool,
    include_usage: bool,
}

fn prepare(s: &AppState, model: &str, text: &str, p: &Sampling, seed_salt: u64) -> Result<Prepared, ApiError> {
    if model != s.cfg.model_id {
        return Err(ApiError::unknown_model(model, &s.cfg.model_id));
    }
    if p.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_param("n", "only n = 1 is supported"));
    }
    let temperature = p.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::bad_param("temperature", format!("temperature must be in [0, 2], got {temperature}")));
    }
    let top_p = p.top_p.unwrap_or(1.0);
    if !(top_p.is_finite() && top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_param("top_p", format!("top_p must be in (0, 1], got {top_p}")));
    }
    let cap = s.cfg.max_tokens_cap;
    let requested = p.max_completion_tokens.or(p.max_tokens);
    match requested {
        Some(0) => return Err(ApiError::bad_param("max_tokens", "max_tokens must be at least 1")),
        Some(n) if n > cap as u64 => {
            return Err(ApiError::bad_param(
                "max_tokens",
                format!("max_tokens must be at most {cap} (--max-tokens-cap)"),
            ))
        }
        _ => {}
    }
    let stops = match &p.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stops.len() > 4 || stops.iter().any(String::is_empty) {
        return Err(ApiError::bad_param("stop", "stop takes up to 4 non-empty strings"));
    }
    let tokenizer = s.model.tokenizer().map_err(|e| ApiError::engine(e.to_string()))?;
    let prompt = tokenizer.encode_prompt(text).map_err(|e| ApiError::bad_param("prompt", e.to_string()))?;
    if prompt.is_empty() {
        return Err(ApiError::bad_param("prompt", "the prompt is empty"));
    }
    let context = s.model.config().context_length;
    let room = if s.cfg.allow_context_extension {
        usize::MAX
    } else {
        if prompt.len() >= context {
            return Err(ApiError::context_length(prompt.len(), context));
        }
        context - prompt.len()
    };
    let max_new_tokens = requested.map_or(cap, |n| n as usize).min(room);
    let sampler = if temperature == 0.0 {
        Sampler::greedy()
    } else {
        let seed =
            p.seed.map_or_else(|| crate::unix_now().wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed_salt, |v| v as u64);
        Sampler::new(temperature as f32, top_p as f32, seed)
    };
    Ok(Prepared {
        prompt,
        opts: GenerateOptions { max_new_tokens, sampler, stop_tokens: tokenizer.stop_tokens.clone() },
        stops,
        stream: p.stream.unwrap_or(false),
        include_usage: p.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false),
    })
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
        Ok(t) => crate::chat::render(&t.chat, &body.messages),
        Err(e) => Err(ApiError::engine(e.to_string())),
    };
    match text {
        Ok(text) => respond(s, Kind::Chat, &body.model, &text, &body.sampling, received).await,
        Err(e) => e.into_response(),
    }
}

async fn completions(State(s): St, req: Request) -> Response {
    let received = Instant::now();
    let body: CompletionRequest = match read_json(&s, req.into_body()).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let text = match &body.prompt {
        Prompt::One(t) => t.clone(),
        Prompt::Many(v) if v.len() == 1 => v[0].clone(),
        Prompt::Many(_) => {
            return ApiError::bad_param("prompt", "only one prompt per request is supported").into_response()
        }
    };
    respond(s, Kind::Text, &body.model, &text, &body.sampling, received).await
}

/// Runs a checked request and answers with one JSON or an event stream.
async fn respond(s: Arc<AppState>, kind: Kind, model: &str, text: &str, p: &Sampling, received: Instant) -> Response {
    let n = s.next_id.fetch_add(1, Ordering::Relaxed);
    let prep = match prepare(&s, model, text, p, n) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (mut rx, guard) = match submit(&s, &prep, received) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let id = format!("{}-{:x}{n:06}", if kind == Kind::Chat { "chatcmpl" } else { "cmpl" }, s.started);
    let meta =
        Meta { id, created: crate::unix_now(), model: s.cfg.model_id.clone(), kind, prompt_tokens: prep.prompt.len() };
    // Wait for the prefill, so that a failed one still gets its HTTP status.
    let info = match rx.recv().await {
        Some(Event::Started(info)) => *info,
        Some(Event::Failed(e)) => return e.into_response(),
        _ => return ApiError::unavailable("the request was dropped by the engine worker").into_response(),
    };
    if prep.stream {
        stream_response(meta, info, rx, guard, prep.include_usage)
    } else {
        let mut content = String::new();
        loop {
            match rx.recv().await {
                Some(Event::Text(t)) => content.push_str(&t),
                Some(Event::Done(f)) => return meta.full(content, f, info),
                Some(Event::Failed(e)) => return e.into_response(),
                Some(Event::Started(_)) => {}
                None => return ApiError::unavailable("the request was dropped by the engine worker").into_response(),
            }
        }
    }
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    prompt_tokens: usize,
}

fn with_decode(mut info: MinferenceInfo, f: &Finished) -> MinferenceInfo {
    info.decode_tokens_per_second = f.decode_tokens_per_second;
    info
}

impl Meta {
    fn usage(&self, f: &Finished) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: f.completion_tokens,
            total_tokens: self.prompt_tokens + f.completion_tokens,
        }
    }

    fn full(&self, content: String, f: Finished, info: MinferenceInfo) -> Response {
        let usage = self.usage(&f);
        let minference = with_decode(info, &f);
        match self.kind {
            Kind::Chat => json(ChatCompletion {
                id: self.id.clone(),
                object: "chat.completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChatChoice {
                    index: 0,
                    message: AssistantMessage { role: "assistant", content },
                    logprobs: None,
                    finish_reason: f.finish_reason,
                }],
                usage,
                minference,
            })
            .into_response(),
            Kind::Text => json(Completion {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![CompletionChoice {
                    index: 0,
                    text: content,
                    logprobs: None,
                    finish_reason: Some(f.finish_reason),
                }],
                usage: Some(usage),
                minference: Some(minference),
            })
            .into_response(),
        }
    }

    /// One streamed chunk: a text piece, or (with `finish`) the last one.
    fn chunk(
        &self,
        delta: Delta,
        finish: Option<&'static str>,
        usage: Option<Usage>,
        info: Option<MinferenceInfo>,
    ) -> String {
        let json = match self.kind {
            Kind::Chat => serde_json::to_string(&ChatCompletionChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk",
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChatChunkChoice { index: 0, delta, logprobs: None, finish_reason: finish }],
                usage,
                minference: info,
            }),
            Kind::Text => serde_json::to_string(&Completion {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![CompletionChoice {
                    index: 0,
                    text: delta.content.unwrap_or_default(),
                    logprobs: None,
                    finish_reason: finish,
                }],
                usage,
                minference: info,
            }),
        };
        json.unwrap_or_default()
    }
}

struct StreamState {
    meta: Meta,
    info: Option<MinferenceInfo>,
    rx: UnboundedReceiver<Event>,
    pending: VecDeque<SseEvent>,
    done: bool,
    include_usage: bool,
    _guard: CancelOnDrop,
}

fn text_delta(t: String) -> Delta {
    Delta { role: None, content: Some(t) }
}

/// `data: {chunk}` events then `data: [DONE]`. Dropping the stream (client gone) cancels the job.
fn stream_response(
    meta: Meta,
    info: MinferenceInfo,
    rx: UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    include_usage: bool,
) -> Response {
    let mut pending = VecDeque::new();
    if meta.kind == Kind::Chat {
        let first = Delta { role: Some("assistant"), content: Some(String::new()) };
        pending.push_back(SseEvent::default().data(meta.chunk(first, None, None, None)));
    }
    let state = StreamState { meta, info: Some(info), rx, pending, done: false, include_usage, _guard: guard };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(ev), st));
            }
            if st.done {
                return None;
            }
            match st.rx.recv().await {
                Some(Event::Text(t)) => {
                    let data = st.meta.chunk(text_delta(t), None, None, None);
                    st.pending.push_back(SseEvent::default().data(data));
                }
                Some(Event::Done(f)) => {
                    let usage = st.meta.usage(&f);
                    let info = st.info.take().map(|i| with_decode(i, &f));
                    let last = st.meta.chunk(Delta::default(), Some(f.finish_reason), Some(usage), info);
                    st.pending.push_back(SseEvent::default().data(last));
                    if st.include_usage && st.meta.kind == Kind::Chat {
                        let chunk = ChatCompletionChunk {
                            id: st.meta.id.clone(),
                            object: "chat.completion.chunk",
                            created: st.meta.created,
                            model: st.meta.model.clone(),
                            choices: Vec::new(),
                            usage: Some(usage),
                            minference: None,
                        };
                        st.pending
                            .push_back(SseEvent::default().data(serde_json::to_string(&chunk).unwrap_or_default()));
                    }
                    st.pending.push_back(SseEvent::default().data("[DONE]"));
                    st.done = true;
                }
                Some(Event::Failed(e)) => {
                    let body = serde_json::to_string(&e.body()).unwrap_or_default();
                    st.pending.push_back(SseEvent::default().data(body));
                    st.pending.push_back(SseEvent::default().data("[DONE]"));
                    st.done = true;
                }
                Some(Event::Started(_)) => {}
                None => {
                    let e = ApiError::unavailable("the request was dropped by the engine worker");
                    st.pending
                        .push_back(SseEvent::default().data(serde_json::to_string(&e.body()).unwrap_or_default()));
                    st.done = true;
                }
            }
        }
    });
    let mut resp = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    *resp.status_mut() = StatusCode::OK;
    resp
}
