//! Concurrent clients: greedy answers equal each prompt alone, and a bounded load test.

mod harness;

use harness::*;
use serde_json::json;
use std::time::{Duration, Instant};

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
