//! Engine failures (out of memory, a panic) and a full queue: answered, and the server keeps serving.

mod harness;

use harness::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
