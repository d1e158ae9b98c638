//! The server in-process on an ephemeral loopback port with a tiny random model (and SmolLM2 when
//! present), driven by a reqwest client: every endpoint and error, concurrency, cancellation, a
//! bounded load test, and the official `openai` Python client when it is installed.

#[path = "../../model/tests/common/mod.rs"]
mod common;

use minference_cpu::CpuBackend;
use minference_engine::{
    cpu_engine, AttentionChoice, CpuEngine, EngineError, PrefillEngine, PrefillProgress, PrefillStats,
};
use minference_model::gguf::GgufFile;
use minference_model::{Model, ModelConfig};
use minference_server::{EngineFactory, Server, ServerConfig};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MODEL: &str = "tiny";

fn tiny_model() -> Arc<Model> {
    let f = GgufFile::from_bytes(common::tiny_llama(&common::TINY, "llama").build()).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Model::from_gguf(&f).unwrap_or_else(|e| panic!("{e}")))
}

/// Test hooks around the CPU engine: fail or panic for given prompt lengths, wait at a gate, slow
/// layers or decode steps.
#[derive(Default, Clone)]
struct Hooks {
    oom_len: Option<usize>,
    panic_len: Option<usize>,
    gate: Option<Arc<AtomicBool>>,
    layer_delay: Option<Duration>,
    decode_delay: Option<Duration>,
    prefills_done: Arc<AtomicUsize>,
}

struct Scripted {
    inner: CpuEngine<CpuBackend>,
    hooks: Hooks,
}

impl PrefillEngine for Scripted {
    fn config(&self) -> &ModelConfig {
        self.inner.model().config()
    }
    fn has_random_weights(&self) -> bool {
        false
    }
    fn device_name(&self) -> String {
        "test CPU".into()
    }
    fn memory(&mut self) -> minference_engine::Result<(u64, u64)> {
        Ok((0, 0))
    }
    fn prefill(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> minference_engine::Result<(Vec<f32>, PrefillStats)> {
        if self.hooks.oom_len == Some(tokens.len()) {
            return Err(EngineError::OutOfMemory("test: no memory for this prompt".into()));
        }
        if self.hooks.panic_len == Some(tokens.len()) {
            panic!("test: engine bug");
        }
        if let Some(gate) = &self.hooks.gate {
            let t0 = Instant::now();
            while !gate.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let delay = self.hooks.layer_delay;
        let out = self.inner.prefill(tokens, attention, &mut |p| {
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
            progress(p)
        })?;
        self.hooks.prefills_done.fetch_add(1, Ordering::SeqCst);
        Ok(out)
    }
    fn prefill_residual(
        &mut self,
        tokens: &[u32],
        attention: &AttentionChoice,
        progress: &mut dyn FnMut(PrefillProgress),
    ) -> minference_engine::Result<(Vec<f32>, PrefillStats)> {
        Ok(self.inner.prefill_hidden(tokens, attention, progress)?)
    }
    fn decode_step(&mut self, token: u32) -> minference_engine::Result<Vec<f32>> {
        if let Some(d) = self.hooks.decode_delay {
            std::thread::sleep(d);
        }
        Ok(self.inner.decode_step(token)?)
    }
    fn reset(&mut self) -> minference_engine::Result<()> {
        self.inner.clear_cache();
        Ok(())
    }
    fn set_max_new_tokens(&mut self, n: usize) -> minference_engine::Result<()> {
        self.inner.set_decode_reserve(n);
        Ok(())
    }
    fn set_allow_context_extension(&mut self, allow: bool) -> minference_engine::Result<()> {
        self.inner.set_allow_context_extension(allow);
        Ok(())
    }
    fn set_memory_limit(&mut self, bytes: Option<u64>) -> minference_engine::Result<()> {
        self.inner.set_memory_limit(bytes);
        Ok(())
    }
}

fn factory(model: &Arc<Model>, slots: usize, hooks: Hooks) -> EngineFactory {
    let model = Arc::clone(model);
    Box::new(move || {
        Ok((0..slots)
            .map(|_| {
                Box::new(Scripted { inner: cpu_engine(Arc::clone(&model)), hooks: hooks.clone() })
                    as Box<dyn PrefillEngine>
            })
            .collect())
    })
}

fn config() -> ServerConfig {
    let mut cfg = ServerConfig::new(MODEL);
    cfg.max_tokens_cap = 64;
    cfg
}

/// Starts `server` on 127.0.0.1:0 and returns its base URL.
async fn spawn(server: Server) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = server.serve(listener, std::future::pending()).await;
    });
    format!("http://{addr}")
}

async fn start(cfg: ServerConfig, slots: usize, hooks: Hooks) -> String {
    let model = tiny_model();
    let server =
        Server::start(Arc::clone(&model), cfg, factory(&model, slots, hooks)).unwrap_or_else(|e| panic!("{e}"));
    spawn(server).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap_or_else(|e| panic!("{e}"))
}

async fn post(c: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let r = c.post(url).json(body).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}")))
}

async fn get(c: &reqwest::Client, url: &str) -> (u16, String) {
    let r = c.get(url).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

fn chat_body(prompt: &str, max_tokens: usize) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0})
}

/// The `data:` payloads of a server-sent event stream, read as it arrives; `stop_after` ends the
/// read (dropping the connection) after that many events.
async fn sse(resp: reqwest::Response, stop_after: Option<usize>) -> (Vec<String>, Option<Duration>) {
    let t0 = Instant::now();
    let mut resp = resp;
    let mut buf = String::new();
    let mut events = Vec::new();
    let mut first = None;
    while let Ok(Some(chunk)) = resp.chunk().await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    first.get_or_insert(t0.elapsed());
                    events.push(data.to_string());
                }
            }
            if stop_after.is_some_and(|n| events.len() >= n) {
                return (events, first);
            }
        }
    }
    (events, first)
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// The text of a stream's chunks (chat deltas or completion texts).
fn stream_text(events: &[String]) -> String {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            let c = &v["choices"][0];
            c["delta"]["content"].as_str().or(c["text"].as_str()).map(str::to_string)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_and_error() {
    let base = start(config(), 2, Hooks::default()).await;
    let c = client();
    let chat = format!("{base}/v1/chat/completions");
    let comp = format!("{base}/v1/completions");

    let (s, body) = get(&c, &format!("{base}/health")).await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = get(&c, &format!("{base}/v1/models")).await;
    assert_eq!(s, 200);
    let models: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(models["data"][0]["id"], MODEL, "{body}");
    assert_eq!(get(&c, &format!("{base}/v1/models/{MODEL}")).await.0, 200);
    assert_eq!(get(&c, &format!("{base}/v1/models/other")).await.0, 404);

    // A chat completion: one JSON with usage and the minference object.
    let (s, v) = post(&c, &chat, &chat_body("hello there", 16)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string();
    let usage = &v["usage"];
    let (p, n) = (usage["prompt_tokens"].as_u64().unwrap_or(0), usage["completion_tokens"].as_u64().unwrap_or(99));
    assert!(p > 0 && n <= 16, "{v}");
    assert_eq!(usage["total_tokens"].as_u64(), Some(p + n));
    let m = &v["minference"];
    assert!(m["ttft_seconds"].as_f64().unwrap_or(-1.0) >= 0.0, "{v}");
    assert!(m["prefill_tokens_per_second"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
    assert_eq!(m["attention"], "dense");
    assert!(m["attention_reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(["stop", "length"].contains(&v["choices"][0]["finish_reason"].as_str().unwrap_or("")));

    // The same request streamed: the same text, role first, finish and [DONE] last.
    let mut streamed = chat_body("hello there", 16);
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let r = c.post(&chat).json(&streamed).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200);
    assert!(r
        .headers()
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.starts_with("text/event-stream")));
    let (events, _) = sse(r, None).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let first: Value = serde_json::from_str(&events[0]).unwrap_or_default();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(stream_text(&events), answer);
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap_or_default();
    assert_eq!(usage_chunk["usage"]["completion_tokens"].as_u64(), Some(n), "{events:?}");

    // Completions, plain and streamed.
    let body = json!({"model": MODEL, "prompt": "hello", "max_tokens": 8, "temperature": 0});
    let (s, v) = post(&c, &comp, &body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    let text = v["choices"][0]["text"].as_str().unwrap_or_default().to_string();
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let r = c.post(&comp).json(&sbody).send().await.unwrap_or_else(|e| panic!("{e}"));
    let (events, _) = sse(r, None).await;
    assert_eq!(stream_text(&events), text);

    // A stop string cuts the answer before it.
    if let Some(stop) = answer.get(answer.len() / 2..).and_then(|s| s.chars().next()).map(String::from) {
        let mut b = chat_body("hello there", 16);
        b["stop"] = json!([stop.clone()]);
        let (s, v) = post(&c, &chat, &b).await;
        assert_eq!(s, 200, "{v}");
        let cut = v["choices"][0]["message"]["content"].as_str().unwrap_or_default();
        assert!(answer.starts_with(cut) && !cut.contains(&stop), "{cut:?} of {answer:?} at {stop:?}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }
    // Sampling with a seed is repeatable.
    let mut b = chat_body("hello there", 12);
    b["temperature"] = json!(0.8);
    b["top_p"] = json!(0.9);
    b["seed"] = json!(7);
    let a1 = post(&c, &chat, &b).await.1["choices"][0]["message"]["content"].clone();
    let a2 = post(&c, &chat, &b).await.1["choices"][0]["message"]["content"].clone();
    assert_eq!(a1, a2);

    // Errors: the status and OpenAI's error object.
    let send_raw = |body: &'static str| {
        let c = c.clone();
        let url = chat.clone();
        async move {
            let r = c
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let s = r.status().as_u16();
            (s, serde_json::from_str::<Value>(&r.text().await.unwrap_or_default()).unwrap_or_default())
        }
    };
    let (s, v) = send_raw("{\"model\": ").await;
    assert_eq!((s, error_code(&v)), (400, "invalid_json"), "{v}");
    assert!(v["error"]["message"].is_string() && v["error"]["type"] == "invalid_request_error");
    let (s, v) = send_raw("{\"model\": \"tiny\", \"messages\": \"hi\"}").await;
    assert_eq!((s, error_code(&v)), (400, "invalid_request_body"), "{v}");
    let (s, v) = send_raw(
        "{\"model\": \"tiny\", \"messages\": [{\"role\":\"user\",\"content\":\"x\"}], \"max_tokens\": \"ten\"}",
    )
    .await;
    assert_eq!((s, error_code(&v)), (400, "invalid_request_body"), "{v}");
    let (s, v) = send_raw("{\"messages\": []}").await;
    assert_eq!(s, 400, "{v}");
    let mut b = chat_body("x", 4);
    b["model"] = json!("gpt-4");
    let (s, v) = post(&c, &chat, &b).await;
    assert_eq!((s, error_code(&v)), (404, "model_not_found"), "{v}");
    for (field, value) in [
        ("temperature", json!(3.0)),
        ("temperature", json!(-1)),
        ("top_p", json!(0)),
        ("max_tokens", json!(0)),
        ("max_tokens", json!(65)),
        ("n", json!(2)),
        ("stop", json!(["a", "b", "c", "d", "e"])),
    ] {
        let mut b = chat_body("x", 4);
        b[field] = value.clone();
        let (s, v) = post(&c, &chat, &b).await;
        assert_eq!((s, v["error"]["param"].as_str()), (400, Some(field)), "{field} = {value}: {v}");
    }
    let (s, v) = post(&c, &chat, &json!({"model": MODEL, "messages": []})).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = post(&c, &chat, &json!({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]})).await;
    assert_eq!(s, 400, "{v}");
    // Longer than the 512-token context: refused before any work.
    let (s, v) = post(&c, &comp, &json!({"model": MODEL, "prompt": "ab ".repeat(400)})).await;
    assert_eq!((s, error_code(&v)), (400, "context_length_exceeded"), "{v}");
    // Over the body cap.
    let (s, v) = post(&c, &comp, &json!({"model": MODEL, "prompt": "x".repeat(9 << 20)})).await;
    assert_eq!((s, error_code(&v)), (413, "request_too_large"), "{v}");
    let (s, body) = get(&c, &format!("{base}/v2/nothing")).await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(get(&c, &chat).await.0, 405);

    // Still serving after every bad request.
    let (s, v) = post(&c, &chat, &chat_body("hello there", 16)).await;
    assert_eq!(s, 200);
    assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some(answer.as_str()));

    let (s, text) = get(&c, &format!("{base}/metrics")).await;
    assert_eq!(s, 200);
    for needle in [
        "minference_requests_total{endpoint=\"chat_completions\",status=\"200\"}",
        "minference_requests_total{endpoint=\"chat_completions\",status=\"400\"}",
        "minference_queue_depth 0",
        "minference_ttft_seconds_bucket",
        "minference_request_duration_seconds_count",
        "minference_prompt_tokens_total",
        "minference_prefill_tokens_per_second",
        "minference_decode_tokens_per_second",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_required() {
    let mut cfg = config();
    cfg.api_key = Some("s3cret".into());
    let base = start(cfg, 1, Hooks::default()).await;
    let c = client();
    let url = format!("{base}/v1/chat/completions");
    let r = c.post(&url).json(&chat_body("hi", 2)).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 401);
    let v: Value = r.json().await.unwrap_or_default();
    assert_eq!(v["error"]["type"], "authentication_error");
    for auth in ["Bearer wrong", "Bearer s3cre", "Bearer s3crett", "Basic s3cret"] {
        let r = c.post(&url).header("authorization", auth).json(&chat_body("hi", 2)).send().await;
        assert_eq!(r.map(|r| r.status().as_u16()).ok(), Some(401), "{auth}");
    }
    let r = c.post(&url).bearer_auth("s3cret").json(&chat_body("hi", 2)).send().await;
    assert_eq!(r.map(|r| r.status().as_u16()).ok(), Some(200));
    assert_eq!(get(&c, &format!("{base}/v1/models")).await.0, 401);
    assert_eq!(get(&c, &format!("{base}/health")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_errors_leave_the_server_serving() {
    let tokenizer_len = |text: &str| {
        let m = tiny_model();
        let t = m.tokenizer().unwrap_or_else(|e| panic!("{e}"));
        t.encode_prompt(text).map(|v| v.len()).unwrap_or(0)
    };
    let hooks = Hooks {
        oom_len: Some(tokenizer_len("oom oom oom")),
        panic_len: Some(tokenizer_len("bug bug bug bug bug")),
        ..Hooks::default()
    };
    let base = start(config(), 1, hooks).await;
    let c = client();
    let url = format!("{base}/v1/completions");
    let body = |p: &str| json!({"model": MODEL, "prompt": p, "max_tokens": 4, "temperature": 0});
    let (s, v) = post(&c, &url, &body("oom oom oom")).await;
    assert_eq!((s, error_code(&v)), (503, "out_of_memory"), "{v}");
    let (s, v) = post(&c, &url, &body("bug bug bug bug bug")).await;
    assert_eq!((s, error_code(&v)), (500, "engine_error"), "{v}");
    let (s, v) = post(&c, &url, &body("fine")).await;
    assert_eq!(s, 200, "{v}");
    let (_, m) = get(&c, &format!("{base}/metrics")).await;
    assert!(m.contains("minference_engine_errors_total 2"), "{m}");
}

/// Polls `/health` until `pred` holds (bounded; no timing is asserted).
async fn wait_health(c: &reqwest::Client, base: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let (_, body) = get(c, &format!("{base}/health")).await;
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if pred(&v) || t0.elapsed() > Duration::from_secs(30) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_metric(c: &reqwest::Client, base: &str, needle: &str) -> String {
    let t0 = Instant::now();
    loop {
        let (_, m) = get(c, &format!("{base}/metrics")).await;
        if m.contains(needle) || t0.elapsed() > Duration::from_secs(30) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_gets_503_with_retry_after() {
    let gate = Arc::new(AtomicBool::new(false));
    let mut cfg = config();
    cfg.max_queue = 1;
    let base = start(cfg, 1, Hooks { gate: Some(Arc::clone(&gate)), ..Hooks::default() }).await;
    let c = client();
    let url = format!("{base}/v1/chat/completions");
    let a = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { post(&c, &url, &chat_body("first", 4)).await.0 }
    });
    let h = wait_health(&c, &base, |v| v["running"] == 1).await;
    assert_eq!(h["running"], 1, "{h}");
    let b = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { post(&c, &url, &chat_body("second", 4)).await.0 }
    });
    let h = wait_health(&c, &base, |v| v["queue_depth"] == 1).await;
    assert_eq!(h["queue_depth"], 1, "{h}");
    let r = c.post(&url).json(&chat_body("third", 4)).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let v: Value = r.json().await.unwrap_or_default();
    assert_eq!(error_code(&v), "queue_full");
    gate.store(true, Ordering::SeqCst);
    assert_eq!(a.await.ok(), Some(200));
    assert_eq!(b.await.ok(), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_greedy_answers_equal_each_prompt_alone() {
    let base = start(config(), 4, Hooks::default()).await;
    let c = client();
    let url = format!("{base}/v1/chat/completions");
    let prompts: Vec<String> = (0..8).map(|i| format!("question {i}: {}", "hello ".repeat(i + 1))).collect();
    let mut alone = Vec::new();
    for p in &prompts {
        let (s, v) = post(&c, &url, &chat_body(p, 24)).await;
        assert_eq!(s, 200, "{v}");
        alone.push(v["choices"][0]["message"]["content"].clone());
    }
    let tasks: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (url, body) = (url.clone(), chat_body(p, 24));
            tokio::spawn(async move { post(&client(), &url, &body).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let (s, v) = t.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["choices"][0]["message"]["content"], alone[i], "prompt {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_mid_stream_frees_the_worker() {
    let hooks = Hooks { decode_delay: Some(Duration::from_millis(20)), ..Hooks::default() };
    let mut cfg = config();
    cfg.max_tokens_cap = 400;
    let base = start(cfg, 1, hooks).await;
    let c = client();
    let url = format!("{base}/v1/completions");
    // Temperature 1 on the random model: no early stop token is likely within 400 tokens... but a
    // stop token only ends the stream sooner, which the test tolerates.
    let body = json!({"model": MODEL, "prompt": "hello", "max_tokens": 400, "temperature": 0, "stream": true});
    let r = reqwest::Client::new().post(&url).json(&body).send().await.unwrap_or_else(|e| panic!("{e}"));
    let (events, _) = sse(r, Some(3)).await;
    assert!(events.len() == 3 || events.last().map(String::as_str) == Some("[DONE]"));
    // The connection is gone (the client and its response were dropped).
    let m = wait_metric(&c, &base, "minference_cancelled_total 1").await;
    let h = wait_health(&c, &base, |v| v["running"] == 0).await;
    assert_eq!(h["running"], 0, "{h}");
    if events.len() == 3 {
        assert!(m.contains("minference_cancelled_total 1"), "{m}");
    }
    let (s, v) = post(&c, &url, &json!({"model": MODEL, "prompt": "next", "max_tokens": 2})).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_during_prefill_cancels_it() {
    let hooks = Hooks { layer_delay: Some(Duration::from_millis(1000)), ..Hooks::default() };
    let done = Arc::clone(&hooks.prefills_done);
    let base = start(config(), 1, hooks).await;
    let c = client();
    let url = format!("{base}/v1/chat/completions");
    let quick =
        reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap_or_else(|e| panic!("{e}"));
    let r = quick.post(&url).json(&chat_body("slow", 4)).send().await;
    assert!(r.is_err(), "the client gave up before the answer");
    let m = wait_metric(&c, &base, "minference_cancelled_total 1").await;
    assert!(m.contains("minference_cancelled_total 1"), "{m}");
    assert_eq!(done.load(Ordering::SeqCst), 0, "the prefill stopped after its first layer");
    let (s, v) = post(&c, &url, &chat_body("next", 2)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(done.load(Ordering::SeqCst), 1);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_test_200_short_requests_over_8_connections() {
    let base = start(config(), 4, Hooks::default()).await;
    let url = format!("{base}/v1/chat/completions");
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let url = url.clone();
            tokio::spawn(async move {
                let c = client();
                let mut out = Vec::new();
                for i in 0..25 {
                    let mut body = chat_body(&format!("load {w} {i}"), 8);
                    body["stream"] = json!(true);
                    let t = Instant::now();
                    let r = c.post(&url).json(&body).send().await.unwrap_or_else(|e| panic!("{e}"));
                    let status = r.status().as_u16();
                    let (events, _) = sse(r, Some(2)).await;
                    let ttft = t.elapsed();
                    let rest = events.len();
                    out.push((status, ttft, rest));
                }
                out
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap_or_else(|e| panic!("{e}")));
    }
    let wall = t0.elapsed();
    let five_xx = results.iter().filter(|r| r.0 >= 500).count();
    let mut ttft: Vec<Duration> = results.iter().map(|r| r.1).collect();
    ttft.sort();
    eprintln!(
        "load test: {} requests over 8 connections in {:.2} s ({:.1} req/s); TTFT p50 {:.1} ms, p99 {:.1} ms; {five_xx} 5xx",
        results.len(),
        wall.as_secs_f64(),
        results.len() as f64 / wall.as_secs_f64(),
        percentile(&ttft, 0.5).as_secs_f64() * 1e3,
        percentile(&ttft, 0.99).as_secs_f64() * 1e3,
    );
    assert_eq!(results.len(), 200);
    assert_eq!(five_xx, 0);
    assert!(results.iter().all(|r| r.0 == 200 && r.2 == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_answers_when_present() {
    let Some(path) = minference_test_support::default_model() else {
        return;
    };
    let model = Arc::new(Model::load(&path).unwrap_or_else(|e| panic!("{e}")));
    let mut cfg = ServerConfig::new("smollm2");
    cfg.max_tokens_cap = 32;
    let m = Arc::clone(&model);
    let factory: EngineFactory = Box::new(move || Ok(vec![Box::new(cpu_engine(m)) as Box<dyn PrefillEngine>]));
    let base = spawn(Server::start(model, cfg, factory).unwrap_or_else(|e| panic!("{e}"))).await;
    let body = json!({"model": "smollm2", "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16, "temperature": 0});
    let (s, v) = post(&client(), &format!("{base}/v1/chat/completions"), &body).await;
    assert_eq!(s, 200, "{v}");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    assert!(text.contains("Paris"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_client() {
    let has_openai =
        std::process::Command::new("python3").args(["-c", "import openai"]).output().is_ok_and(|o| o.status.success());
    if !has_openai {
        eprintln!("skipped: the `openai` Python package is not installed (python3 -m pip install openai)");
        return;
    }
    let mut cfg = config();
    cfg.api_key = Some("test-key".into());
    let base = start(cfg, 2, Hooks::default()).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(format!("{base}/v1"))
        .arg(MODEL)
        .arg("test-key")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openai client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
}
