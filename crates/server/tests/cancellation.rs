//! A client that disconnects mid-stream or during the prefill frees the worker.

mod harness;

use harness::*;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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
