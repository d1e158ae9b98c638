//! The client side of `minference bench serve`: token-id completions over HTTP, one long prompt
//! timed whole, and many short streamed ones from concurrent clients.

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A client of one server's `/v1/completions`.
#[derive(Clone)]
pub struct CompletionClient {
    http: reqwest::Client,
    url: String,
    model: String,
}

/// One long-prompt completion as the client saw it.
pub struct Timed {
    /// Request sent → the whole JSON read, seconds.
    pub wall: f64,
    /// The server's `minference.ttft_seconds` (queue + prefill).
    pub server_ttft: f64,
    /// The server's `minference.prefill_seconds` (its engine's prefill alone).
    pub server_prefill: f64,
}

/// One short streamed completion.
struct Streamed {
    status: u16,
    /// Request sent → the first `data:` event (the first token), seconds.
    ttft: Option<f64>,
    /// Request sent → the end of the stream, seconds.
    latency: f64,
    completion_tokens: usize,
    /// A 200 whose stream carried an error event or ended without a finish.
    stream_error: bool,
}

/// What the concurrent short requests measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub clients: usize,
    pub requests: usize,
    /// First request sent → last one done, seconds.
    pub wall: f64,
    pub completion_tokens: usize,
    /// TTFT and latency of the requests answered 200 without a stream error, sorted.
    pub ttft: Vec<f64>,
    pub latency: Vec<f64>,
    pub non_200: usize,
    pub stream_errors: usize,
}

impl LoadReport {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.wall.max(1e-9)
    }
    /// TTFT p50, p99 and latency p50, p99 (s), in the order the table and the CSV print them.
    pub fn percentiles(&self) -> [f64; 4] {
        [
            percentile(&self.ttft, 0.5),
            percentile(&self.ttft, 0.99),
            percentile(&self.latency, 0.5),
            percentile(&self.latency, 0.99),
        ]
    }

    pub fn tokens_per_second(&self) -> f64 {
        self.completion_tokens as f64 / self.wall.max(1e-9)
    }
}

/// The `p` quantile (0..=1) of sorted `v` by nearest rank; NaN for none.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = (p * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The median of `v` (the mean of the middle two for an even count); NaN for none.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

impl CompletionClient {
    pub fn new(base: &str, model: &str) -> Result<Self> {
        // No overall timeout: a long prefill on the CPU takes minutes.
        let http = reqwest::Client::builder().build().context("building the HTTP client")?;
        Ok(CompletionClient { http, url: format!("{base}/v1/completions"), model: model.to_string() })
    }

    fn body(&self, prompt: &[u32], max_tokens: usize, stream: bool) -> Value {
        json!({"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": stream})
    }

    /// `prompt` with `max_tokens` 1, not streamed: the client's wall time is its TTFT.
    pub async fn first_token(&self, prompt: &[u32]) -> Result<Timed> {
        let body = self.body(prompt, 1, false);
        let t0 = Instant::now();
        let resp = self.http.post(&self.url).json(&body).send().await.context("POST /v1/completions")?;
        let status = resp.status();
        let text = resp.text().await.context("reading the completion")?;
        let wall = t0.elapsed().as_secs_f64();
        if !status.is_success() {
            anyhow::bail!("the server answered {status}: {text}");
        }
        let v: Value = serde_json::from_str(&text).context("the completion is not JSON")?;
        let seconds = |key: &str| v["minference"][key].as_f64().unwrap_or(f64::NAN);
        Ok(Timed { wall, server_ttft: seconds("ttft_seconds"), server_prefill: seconds("prefill_seconds") })
    }

    /// One streamed completion; transport failures count as a status of 0.
    async fn streamed(&self, prompt: &[u32], max_tokens: usize) -> Streamed {
        let t0 = Instant::now();
        let failed = |status| Streamed {
            status,
            ttft: None,
            latency: t0.elapsed().as_secs_f64(),
            completion_tokens: 0,
            stream_error: false,
        };
        let Ok(mut resp) = self.http.post(&self.url).json(&self.body(prompt, max_tokens, true)).send().await else {
            return failed(0);
        };
        let status = resp.status().as_u16();
        if status != 200 {
            return failed(status);
        }
        let (mut buf, mut ttft, mut tokens, mut finished, mut error) = (String::new(), None, 0, false, false);
        while let Ok(Some(chunk)) = resp.chunk().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                    ttft.get_or_insert_with(|| t0.elapsed().as_secs_f64());
                    if data == "[DONE]" {
                        continue;
                    }
                    let v: Value = serde_json::from_str(data).unwrap_or_default();
                    error |= v.get("error").is_some();
                    if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                        tokens = n as usize;
                        finished = true;
                    }
                }
            }
        }
        Streamed {
            status,
            ttft,
            latency: t0.elapsed().as_secs_f64(),
            completion_tokens: tokens,
            stream_error: error || !finished,
        }
    }

    /// `prompts` sent by `clients` concurrent clients (each takes the next prompt when its last
    /// answer is done), streamed, `max_tokens` each.
    pub async fn load(
        &self,
        prompts: Vec<Vec<u32>>,
        clients: usize,
        max_tokens: usize,
        bar: &ProgressBar,
    ) -> LoadReport {
        let prompts = Arc::new(prompts);
        let next = Arc::new(AtomicUsize::new(0));
        let results = Arc::new(Mutex::new(Vec::with_capacity(prompts.len())));
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(clients);
        for _ in 0..clients.max(1) {
            let (client, prompts, next, results, bar) =
                (self.clone(), Arc::clone(&prompts), Arc::clone(&next), Arc::clone(&results), bar.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(prompt) = prompts.get(i) else { break };
                    let r = client.streamed(prompt, max_tokens).await;
                    bar.inc(1);
                    results.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let wall = t0.elapsed().as_secs_f64();
        let results = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
        let mut report = LoadReport { clients, requests: prompts.len(), wall, ..LoadReport::default() };
        for r in &results {
            if r.status != 200 {
                report.non_200 += 1;
            } else if r.stream_error {
                report.stream_errors += 1;
            } else {
                report.completion_tokens += r.completion_tokens;
                report.ttft.extend(r.ttft);
                report.latency.push(r.latency);
            }
        }
        report.ttft.sort_by(f64::total_cmp);
        report.latency.sort_by(f64::total_cmp);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank_and_medians() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!((percentile(&v, 0.5), percentile(&v, 0.99), percentile(&v, 1.0)), (50.0, 99.0, 100.0));
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
