//! Every endpoint and error of the server with a tiny random model, and the API key.

mod harness;

use harness::*;
use serde_json::{json, Value};

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
    // The CPU engine counts what its kernels computed: dense attention computes it all.
    assert_eq!(m["kernel_density"].as_f64(), Some(1.0), "{v}");
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
    // Over the body cap. The server answers before reading the whole body and then closes that
    // connection, so the request goes over its own client: a pooled connection shared with the
    // next request could be the one being closed.
    let (s, v) = post(&client(), &comp, &json!({"model": MODEL, "prompt": "x".repeat(9 << 20)})).await;
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
