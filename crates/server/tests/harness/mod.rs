//! The server test harness: a tiny random GGUF model, a scripted CPU engine with failure and
//! timing hooks, the server on an ephemeral loopback port, and small reqwest / SSE helpers.
// Each test file uses part of the harness.
#![allow(dead_code)]

#[path = "../../../model/tests/common/mod.rs"]
mod model_fixture;

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

pub const MODEL: &str = "tiny";

pub fn tiny_model() -> Arc<Model> {
    let f = GgufFile::from_bytes(model_fixture::tiny_llama(&model_fixture::TINY, "llama").build())
        .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Model::from_gguf(&f).unwrap_or_else(|e| panic!("{e}")))
}

/// Test hooks around the CPU engine: fail or panic for given prompt lengths, wait at a gate, slow
/// layers or decode steps.
#[derive(Default, Clone)]
pub struct Hooks {
    pub oom_len: Option<usize>,
    pub panic_len: Option<usize>,
    pub gate: Option<Arc<AtomicBool>>,
    pub layer_delay: Option<Duration>,
    pub decode_delay: Option<Duration>,
    pub prefills_done: Arc<AtomicUsize>,
}

pub struct Scripted {
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

pub fn factory(model: &Arc<Model>, slots: usize, hooks: Hooks) -> EngineFactory {
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

pub fn config() -> ServerConfig {
    let mut cfg = ServerConfig::new(MODEL);
    cfg.max_tokens_cap = 64;
    cfg
}

/// Starts `server` on 127.0.0.1:0 and returns its base URL.
pub async fn spawn(server: Server) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = server.serve(listener, std::future::pending()).await;
    });
    format!("http://{addr}")
}

pub async fn start(cfg: ServerConfig, slots: usize, hooks: Hooks) -> String {
    let model = tiny_model();
    let server =
        Server::start(Arc::clone(&model), cfg, factory(&model, slots, hooks)).unwrap_or_else(|e| panic!("{e}"));
    spawn(server).await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap_or_else(|e| panic!("{e}"))
}

pub async fn post(c: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let r = c.post(url).json(body).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}")))
}

pub async fn get(c: &reqwest::Client, url: &str) -> (u16, String) {
    let r = c.get(url).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

pub fn chat_body(prompt: &str, max_tokens: usize) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0})
}

/// The `data:` payloads of a server-sent event stream, read as it arrives; `stop_after` ends the
/// read (dropping the connection) after that many events.
pub async fn sse(resp: reqwest::Response, stop_after: Option<usize>) -> (Vec<String>, Option<Duration>) {
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

pub fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// The text of a stream's chunks (chat deltas or completion texts).
pub fn stream_text(events: &[String]) -> String {
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

/// Polls `/health` until `pred` holds (bounded; no timing is asserted).
pub async fn wait_health(c: &reqwest::Client, base: &str, pred: impl Fn(&Value) -> bool) -> Value {
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

pub async fn wait_metric(c: &reqwest::Client, base: &str, needle: &str) -> String {
    let t0 = Instant::now();
    loop {
        let (_, m) = get(c, &format!("{base}/metrics")).await;
        if m.contains(needle) || t0.elapsed() > Duration::from_secs(30) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
