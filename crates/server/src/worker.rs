//! The engine worker: one std thread owns the engines (an engine is not `Send`; it never crosses
//! an await) and runs the scheduler. Requests arrive over a bounded channel (the queue); answers
//! go back over a per-request channel.
//!
//! Scheduling: each engine holds one request's KV cache, so the worker runs as many requests at
//! once as it has engines (on the CPU several engines share one `Arc<Model>`; on one GPU the
//! engines beyond the first are siblings sharing its device weights).
//! Every round admits at most one waiting request (prefills run one at a time) and then gives
//! every running request one decode step, so no request starves while others prefill or decode.
//! A request whose client went away is dropped within one layer of prefill (the progress callback
//! unwinds out of the prefill) or one decode step.

use crate::api::MinferenceInfo;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::ServedModel;
use minference_engine::{AttentionChoice, Decoding, GenerateOptions, PrefillEngine, StopReason, TextStream};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// Opens the engines on the worker thread (each holds one running request's KV cache).
pub type EngineFactory = Box<dyn FnOnce() -> Result<Vec<Box<dyn PrefillEngine>>, String> + Send>;

/// One request for the worker.
pub struct Job {
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    /// Generation ends before the first occurrence of any of these (not included).
    pub stop_strings: Vec<String>,
    /// Set when the client has gone away.
    pub cancel: Arc<AtomicBool>,
    pub events: UnboundedSender<Event>,
    pub received: Instant,
}

impl Job {
    fn abandoned(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.events.is_closed()
    }
}

/// What the worker tells a request's handler: `Started` once, then `Text` pieces (`Token`s for a
/// model without a tokenizer), then `Done` or `Failed` (`Failed` may also come instead of
/// `Started`).
#[derive(Debug)]
pub enum Event {
    Started(Box<MinferenceInfo>),
    Text(String),
    Token(u32),
    Done(Finished),
    Failed(ApiError),
}

#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// OpenAI's `stop` (a stop token or string) or `length`.
    pub finish_reason: &'static str,
    pub completion_tokens: usize,
    pub decode_tokens_per_second: Option<f64>,
}

/// The payload a cancelled prefill unwinds with (no panic message: `resume_unwind` skips the hook).
struct Cancelled;

/// Holds back text that may be the start of a stop string.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new() }
    }

    /// Adds generated text; returns the text that can be sent and whether a stop string was hit
    /// (the text before it is returned and the rest dropped).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.held.push_str(piece);
        if let Some(pos) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let out = self.held[..pos].to_string();
            self.held.clear();
            return (out, true);
        }
        let keep = self.stops.iter().map(|s| suffix_prefix(&self.held, s)).max().unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// The text held back at the end of a generation.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`.
fn suffix_prefix(text: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .find(|&k| {
            k <= text.len()
                && stop.is_char_boundary(k)
                && text.is_char_boundary(text.len() - k)
                && text.ends_with(&stop[..k])
        })
        .unwrap_or(0)
}

/// What the worker needs besides its engines.
pub struct WorkerSetup {
    pub model: ServedModel,
    pub attention: AttentionChoice,
    /// How the configured attention reads ("minference (configs/x.json)", "dense").
    pub attention_label: String,
    pub metrics: Arc<Metrics>,
}

struct Running {
    slot: usize,
    job: Job,
    run: Decoding,
    text: TextStream,
    stops: StopMatcher,
}

struct Worker {
    setup: WorkerSetup,
    engines: Vec<Box<dyn PrefillEngine>>,
    free: Vec<usize>,
    running: Vec<Running>,
    device: String,
}

/// Starts the worker thread; returns once the engines are open (with the device's name).
pub fn spawn(
    setup: WorkerSetup,
    factory: EngineFactory,
    jobs: Receiver<Job>,
) -> Result<(std::thread::JoinHandle<()>, String), crate::ServerError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("minference-engine".into())
        .spawn(move || {
            let engines = match catch_unwind(AssertUnwindSafe(factory)) {
                Ok(Ok(e)) if !e.is_empty() => e,
                Ok(Ok(_)) => {
                    let _ = ready_tx.send(Err("no engine was opened".to_string()));
                    return;
                }
                Ok(Err(e)) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                Err(_) => {
                    let _ = ready_tx.send(Err("opening the engine panicked".to_string()));
                    return;
                }
            };
            let device = engines[0].device_name();
            let device = if engines.len() > 1 { format!("{device}, {} request slots", engines.len()) } else { device };
            let _ = ready_tx.send(Ok(device.clone()));
            let free = (0..engines.len()).rev().collect();
            Worker { setup, engines, free, running: Vec::new(), device }.run(jobs);
        })
        .map_err(crate::ServerError::Worker)?;
    match ready_rx.recv() {
        Ok(Ok(device)) => Ok((handle, device)),
        Ok(Err(e)) => Err(crate::ServerError::Engine(e)),
        Err(_) => Err(crate::ServerError::Engine("the engine worker stopped while opening the engine".into())),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

impl Worker {
    fn run(mut self, jobs: Receiver<Job>) {
        loop {
            if let Some(slot) = self.free.pop() {
                let job = if self.running.is_empty() {
                    match jobs.recv() {
                        Ok(j) => Some(j),
                        Err(_) => return,
                    }
                } else {
                    jobs.try_recv().ok()
                };
                match job {
                    Some(job) => {
                        self.setup.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                        self.admit(slot, job);
                    }
                    None => self.free.push(slot),
                }
            }
            let mut i = 0;
            while i < self.running.len() {
                if self.step(i) {
                    i += 1;
                } else {
                    let r = self.running.remove(i);
                    self.release(r.slot);
                }
            }
        }
    }

    fn release(&mut self, slot: usize) {
        let _ = self.engines[slot].reset();
        self.free.push(slot);
        self.setup.metrics.running.fetch_sub(1, Ordering::Relaxed);
    }

    /// Prefills `job` on engine `slot`.
    fn admit(&mut self, slot: usize, job: Job) {
        let metrics = Arc::clone(&self.setup.metrics);
        if job.abandoned() {
            metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            self.free.push(slot);
            return;
        }
        metrics.running.fetch_add(1, Ordering::Relaxed);
        let queue_seconds = job.received.elapsed().as_secs_f64();
        let engine = &mut self.engines[slot];
        let attention = &self.setup.attention;
        let (cancel, events) = (&job.cancel, &job.events);
        let result = catch_unwind(AssertUnwindSafe(|| {
            Decoding::start(engine.as_mut(), &job.prompt, attention, &job.opts, &mut |_| {
                if cancel.load(Ordering::Relaxed) || events.is_closed() {
                    resume_unwind(Box::new(Cancelled));
                }
            })
        }));
        let run = match result {
            Ok(Ok(run)) => run,
            Ok(Err(e)) => {
                metrics.engine_errors.fetch_add(1, Ordering::Relaxed);
                let _ = job.events.send(Event::Failed(ApiError::from_engine(&e)));
                self.release(slot);
                return;
            }
            Err(p) if p.is::<Cancelled>() => {
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                self.release(slot);
                return;
            }
            Err(p) => {
                metrics.engine_errors.fetch_add(1, Ordering::Relaxed);
                let msg = format!("the engine failed during prefill: {}", panic_message(p.as_ref()));
                let _ = job.events.send(Event::Failed(ApiError::engine(msg)));
                self.release(slot);
                return;
            }
        };
        let ttft = job.received.elapsed().as_secs_f64();
        let stats = run.prefill_stats();
        metrics.prefill_done(ttft, stats.tokens, stats.seconds);
        let (attention, attention_reason) = self.describe_attention(job.prompt.len(), stats.sparse_heads);
        let info = MinferenceInfo {
            ttft_seconds: ttft,
            queue_seconds,
            prefill_seconds: stats.seconds,
            prefill_tokens_per_second: stats.tokens as f64 / stats.seconds.max(1e-9),
            decode_tokens_per_second: None,
            attention,
            attention_reason,
            sparse_heads: stats.sparse_heads,
            dense_heads: stats.dense_heads,
            kernel_density: stats.kernel_density(),
            device: self.device.clone(),
        };
        let _ = job.events.send(Event::Started(Box::new(info)));
        let stops = StopMatcher::new(job.stop_strings.clone());
        self.running.push(Running { slot, job, run, text: TextStream::new(), stops });
    }

    fn describe_attention(&self, prompt_len: usize, sparse_heads: usize) -> (String, String) {
        match &self.setup.attention {
            AttentionChoice::Dense => ("dense".into(), "the server runs dense attention (--attention dense)".into()),
            AttentionChoice::MInference(p) if prompt_len < p.dense_below.max(2) => (
                "dense".into(),
                format!(
                    "prompt of {prompt_len} tokens < --dense-below {} (the sparse path pays off on long prompts)",
                    p.dense_below
                ),
            ),
            AttentionChoice::MInference(_) if sparse_heads == 0 => {
                ("dense".into(), format!("{}: no head ran a sparse pattern", self.setup.attention_label))
            }
            AttentionChoice::MInference(_) => ("minference".into(), self.setup.attention_label.clone()),
        }
    }

    /// One token of running request `i`; false when it has ended (and was told so).
    fn step(&mut self, i: usize) -> bool {
        let metrics = Arc::clone(&self.setup.metrics);
        let tokenizer = self.setup.model.tokenizer();
        let r = &mut self.running[i];
        if r.job.abandoned() {
            metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let Some(token) = r.run.next_token() else {
            let tail = r.stops.flush();
            if !tail.is_empty() {
                let _ = r.job.events.send(Event::Text(tail));
            }
            let reason = match r.run.stop_reason() {
                Some(StopReason::MaxTokens) => "length",
                _ => "stop",
            };
            Self::finish(&metrics, r, reason);
            return false;
        };
        let hit = match tokenizer {
            Some(tokenizer) => {
                let piece = r.text.push(tokenizer, token).unwrap_or_default();
                let (text, hit) = r.stops.push(&piece);
                if !text.is_empty() {
                    let _ = r.job.events.send(Event::Text(text));
                }
                hit
            }
            // No tokenizer, no stop strings (the request was refused with any): the id is the answer.
            None => {
                let _ = r.job.events.send(Event::Token(token));
                false
            }
        };
        if hit {
            r.run.cancel();
            Self::finish(&metrics, r, "stop");
            return false;
        }
        let engine = &mut self.engines[r.slot];
        let run = &mut r.run;
        match catch_unwind(AssertUnwindSafe(|| run.advance(engine.as_mut()))) {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                metrics.engine_errors.fetch_add(1, Ordering::Relaxed);
                let _ = r.job.events.send(Event::Failed(ApiError::from_engine(&e)));
                false
            }
            Err(p) => {
                metrics.engine_errors.fetch_add(1, Ordering::Relaxed);
                let msg = format!("the engine failed during decode: {}", panic_message(p.as_ref()));
                let _ = r.job.events.send(Event::Failed(ApiError::engine(msg)));
                false
            }
        }
    }

    fn finish(metrics: &Metrics, r: &Running, reason: &'static str) {
        let n = r.run.tokens().len();
        let decode_seconds = r.run.decode_seconds();
        metrics.request_done(r.job.received.elapsed().as_secs_f64(), n, decode_seconds);
        let decode_tokens_per_second = (n > 1).then(|| (n - 1) as f64 / decode_seconds.max(1e-9));
        let _ = r.job.events.send(Event::Done(Finished {
            finish_reason: reason,
            completion_tokens: n,
            decode_tokens_per_second,
        }));
    }
}
