//! Prometheus text metrics: requests by endpoint and status, queue depth, TTFT and end-to-end
//! latency histograms, prefill and decode throughput, token totals.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

const BUCKETS: [f64; 16] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (c, b) in self.counts.iter_mut().zip(BUCKETS) {
            if v <= b {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (c, b) in self.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters the handlers and the engine worker update; [`Metrics::render`] writes them out.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    ttft: Mutex<Histogram>,
    latency: Mutex<Histogram>,
    pub queue_depth: AtomicUsize,
    pub running: AtomicUsize,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    /// Microseconds, so that the totals stay integers.
    prefill_us: AtomicU64,
    decode_us: AtomicU64,
    decode_tokens: AtomicU64,
    last_prefill_tps: Mutex<f64>,
    last_decode_tps: Mutex<f64>,
    pub cancelled: AtomicU64,
    pub engine_errors: AtomicU64,
    pub queue_full: AtomicU64,
}

impl Metrics {
    pub fn request(&self, endpoint: &str, status: u16) {
        *lock(&self.requests).entry((endpoint.to_string(), status)).or_default() += 1;
    }

    /// The answers of one request: TTFT (from the request's arrival) and its prefill.
    pub fn prefill_done(&self, ttft: f64, tokens: usize, prefill_seconds: f64) {
        lock(&self.ttft).observe(ttft);
        self.prompt_tokens.fetch_add(tokens as u64, Ordering::Relaxed);
        self.prefill_us.fetch_add((prefill_seconds * 1e6) as u64, Ordering::Relaxed);
        *lock(&self.last_prefill_tps) = tokens as f64 / prefill_seconds.max(1e-9);
    }

    pub fn request_done(&self, latency: f64, completion_tokens: usize, decode_seconds: f64) {
        lock(&self.latency).observe(latency);
        self.completion_tokens.fetch_add(completion_tokens as u64, Ordering::Relaxed);
        let steps = completion_tokens.saturating_sub(1);
        if steps > 0 && decode_seconds > 0.0 {
            self.decode_tokens.fetch_add(steps as u64, Ordering::Relaxed);
            self.decode_us.fetch_add((decode_seconds * 1e6) as u64, Ordering::Relaxed);
            *lock(&self.last_decode_tps) = steps as f64 / decode_seconds;
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP minference_requests_total HTTP requests by endpoint and status.\n# TYPE minference_requests_total counter"
        );
        for ((endpoint, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(out, "minference_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}");
        }
        let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        gauge(
            &mut out,
            "minference_queue_depth",
            "Requests waiting for the engine.",
            self.queue_depth.load(Ordering::Relaxed) as f64,
        );
        gauge(
            &mut out,
            "minference_running_requests",
            "Requests being prefilled or decoded.",
            self.running.load(Ordering::Relaxed) as f64,
        );
        lock(&self.ttft).render(
            &mut out,
            "minference_ttft_seconds",
            "Request arrival to first token (queue + prefill).",
        );
        lock(&self.latency).render(&mut out, "minference_request_duration_seconds", "Request arrival to last token.");
        counter(&mut out, "minference_prompt_tokens_total", "Prompt tokens prefilled.", load(&self.prompt_tokens));
        counter(&mut out, "minference_completion_tokens_total", "Tokens generated.", load(&self.completion_tokens));
        counter(&mut out, "minference_prefill_seconds_total", "Time spent in prefill.", load(&self.prefill_us) / 1e6);
        counter(
            &mut out,
            "minference_decode_seconds_total",
            "Time spent decoding (requests interleave).",
            load(&self.decode_us) / 1e6,
        );
        counter(&mut out, "minference_decode_tokens_total", "Decode steps.", load(&self.decode_tokens));
        gauge(
            &mut out,
            "minference_prefill_tokens_per_second",
            "Prefill throughput of the last request.",
            *lock(&self.last_prefill_tps),
        );
        gauge(
            &mut out,
            "minference_decode_tokens_per_second",
            "Decode throughput of the last request.",
            *lock(&self.last_decode_tps),
        );
        counter(
            &mut out,
            "minference_cancelled_total",
            "Requests cancelled by a client disconnect.",
            load(&self.cancelled),
        );
        counter(&mut out, "minference_engine_errors_total", "Requests the engine failed.", load(&self.engine_errors));
        counter(
            &mut out,
            "minference_queue_full_total",
            "Requests refused with 503 (queue full).",
            load(&self.queue_full),
        );
        out
    }
}
