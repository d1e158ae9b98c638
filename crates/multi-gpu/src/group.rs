//! [`TpEngine`]: one worker thread per GPU, each owning a `GpuEngine` on its shard; the caller's
//! thread sends every rank the same command and gathers their replies with a deadline.

use crate::error::{Result, TpError};
use crate::nccl::{unique_id, Communicator, UniqueId};
use crate::worker::{worker, Command, Event, Reply};
use minference_engine_gpu::{Precision, TensorShard};
use minference_model::{Model, ModelConfig};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod prefill_engine;

/// Which weights the group runs.
#[derive(Clone)]
pub enum TpModel {
    /// A loaded model; each GPU uploads its shard.
    Host(Arc<Model>),
    /// Random weights of `config`'s shape, each GPU generating its shard on the device; with
    /// `structured`, attention gets that workload's structure (the same design on every rank).
    Random { config: ModelConfig, seed: u64, structured: Option<Box<minference_model::StructuredAttention>> },
}

impl TpModel {
    pub(crate) fn config(&self) -> &ModelConfig {
        match self {
            TpModel::Host(m) => m.config(),
            TpModel::Random { config, .. } => config,
        }
    }
}

/// Settings of a group, applied on every GPU.
#[derive(Debug, Clone)]
pub struct TpOptions {
    /// Decode tokens reserved in each GPU's KV cache.
    pub max_new_tokens: usize,
    pub allow_context_extension: bool,
    /// Device bytes each GPU may use (weights included); `None` = what is free.
    pub memory_limit: Option<u64>,
    /// Storage precision of weights and activations on every GPU.
    pub precision: Precision,
    /// How long the group may go without any GPU showing progress (a layer done, a reply)
    /// before it is stopped with an error naming the silent GPU.
    pub timeout: Duration,
    /// Test hook: rank `.0` fails at layer `.1` of every prefill, after its attention call and
    /// before the collectives of that layer, to prove that the other ranks do not hang.
    #[doc(hidden)]
    pub fail_at: Option<(usize, usize)>,
}

impl Default for TpOptions {
    fn default() -> Self {
        TpOptions {
            max_new_tokens: minference_engine_gpu::DEFAULT_MAX_NEW_TOKENS,
            allow_context_extension: false,
            memory_limit: None,
            precision: Precision::Bf16,
            timeout: Duration::from_secs(300),
            fail_at: None,
        }
    }
}

/// A tensor-parallel group of GPUs of one host running one model.
pub struct TpEngine {
    config: ModelConfig,
    random_weights: bool,
    ordinals: Vec<usize>,
    device: String,
    commands: Vec<Sender<Command>>,
    events: Receiver<(usize, Event)>,
    comms: Vec<Weak<Communicator>>,
    workers: Vec<JoinHandle<()>>,
    timeout: Duration,
    failed: bool,
}

impl TpEngine {
    /// Starts one worker per GPU in `ordinals` (2–8 GPUs of this host) and loads `model` sharded
    /// over them. Fails with the first GPU's error, never hangs.
    pub fn new(ordinals: &[usize], model: TpModel, opts: TpOptions) -> Result<TpEngine> {
        let world = ordinals.len();
        if world < 2 {
            return Err(TpError::Input(format!("a tensor-parallel group needs at least 2 GPUs, got {world}")));
        }
        let mut seen = ordinals.to_vec();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != world {
            return Err(TpError::Input(format!("GPU list {ordinals:?} repeats a device")));
        }
        // NVLink multicast (NVLS) can take a shared host's GPUs out of service; keep it off
        // unless the user chose otherwise (set before any NCCL thread starts).
        if std::env::var_os("NCCL_NVLS_ENABLE").is_none() {
            std::env::set_var("NCCL_NVLS_ENABLE", "0");
        }
        let config = model.config().clone();
        // Checks the split before any GPU is touched.
        TensorShard::new(&config, 0, world).map_err(|e| TpError::Input(e.to_string()))?;
        let id = unique_id()?;
        let random_weights = match &model {
            TpModel::Host(m) => m.has_random_weights(),
            TpModel::Random { .. } => true,
        };
        let spawn = |rank: usize, ordinal: usize, rx: Receiver<Command>, ev: Sender<(usize, Event)>| {
            let (m, o) = (model.clone(), opts.clone());
            std::thread::Builder::new()
                .name(format!("minference-gpu{ordinal}"))
                .spawn(move || worker(rank, ordinal, world, m, o, rx, ev))
        };
        Self::start(ordinals, config, random_weights, opts.timeout, id, spawn)
    }

    /// Starts the workers `spawn` makes and walks them through the start-up handshake: all GPUs
    /// open, then all join the communicator `id`, then all build their shard.
    fn start(
        ordinals: &[usize],
        config: ModelConfig,
        random_weights: bool,
        timeout: Duration,
        id: UniqueId,
        spawn: impl Fn(usize, usize, Receiver<Command>, Sender<(usize, Event)>) -> std::io::Result<JoinHandle<()>>,
    ) -> Result<TpEngine> {
        let world = ordinals.len();
        let (event_tx, events) = channel();
        let mut commands = Vec::with_capacity(world);
        let mut workers = Vec::with_capacity(world);
        for (rank, &ordinal) in ordinals.iter().enumerate() {
            let (tx, rx) = channel();
            commands.push(tx);
            let handle = spawn(rank, ordinal, rx, event_tx.clone()).map_err(|e| TpError::Worker(e.to_string()))?;
            workers.push(handle);
        }
        drop(event_tx);
        let mut group = TpEngine {
            config,
            random_weights,
            ordinals: ordinals.to_vec(),
            device: String::new(),
            commands,
            events,
            comms: Vec::new(),
            workers,
            timeout,
            failed: false,
        };
        let names = group.gather(
            |e| match e {
                Event::Opened(r) => Some(r),
                _ => None,
            },
            &mut |_| {},
        )?;
        group.device =
            if names.iter().all(|n| *n == names[0]) { format!("{world} × {}", names[0]) } else { names.join(" + ") };
        group.broadcast(|| Command::Join(id))?;
        group.comms = group.gather(
            |e| match e {
                Event::Joined(r) => Some(r),
                _ => None,
            },
            &mut |_| {},
        )?;
        group.command_all(|| Command::Build)?;
        Ok(group)
    }

    fn broadcast(&mut self, cmd: impl Fn() -> Command) -> Result<()> {
        if self.failed {
            return Err(TpError::Aborted);
        }
        for (rank, tx) in self.commands.iter().enumerate() {
            if tx.send(cmd()).is_err() {
                self.abort();
                return Err(TpError::Worker(format!("GPU {} stopped", self.ordinals[rank])));
            }
        }
        Ok(())
    }

    /// Stops every communicator: collectives in flight return, later ones fail.
    fn abort(&mut self) {
        self.failed = true;
        for c in self.comms.iter().filter_map(Weak::upgrade) {
            c.abort();
        }
    }

    /// Waits for one final reply per rank (`pick` recognises it). Any other event counts as a
    /// sign of life; rank 0's layer events go to `on_layer`. The first error stops the group.
    fn gather<T>(
        &mut self,
        pick: impl Fn(Event) -> Option<Reply<T>>,
        on_layer: &mut dyn FnMut(usize),
    ) -> Result<Vec<T>> {
        let world = self.commands.len();
        let mut out: Vec<Option<T>> = (0..world).map(|_| None).collect();
        let mut layers = 0usize;
        let mut last_sign = Instant::now();
        while out.iter().any(Option::is_none) {
            let wait = self.timeout.saturating_sub(last_sign.elapsed());
            match self.events.recv_timeout(wait) {
                Ok((rank, Event::Layer)) => {
                    last_sign = Instant::now();
                    if rank == 0 {
                        on_layer(layers);
                        layers += 1;
                    }
                }
                Ok((rank, e)) => {
                    last_sign = Instant::now();
                    match pick(e) {
                        Some(Ok(v)) => out[rank] = Some(v),
                        Some(Err(err)) => {
                            self.abort();
                            self.drain(out.iter().filter(|o| o.is_none()).count() - 1);
                            return Err(err);
                        }
                        None => {}
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let rank = out.iter().position(Option::is_none).unwrap_or(0);
                    self.abort();
                    return Err(TpError::Timeout {
                        rank,
                        ordinal: self.ordinals[rank],
                        seconds: self.timeout.as_secs(),
                    });
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.abort();
                    return Err(TpError::Worker("every GPU worker has stopped".into()));
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// After a failure: lets the other ranks report their (aborted) replies for a moment, so
    /// their threads are not left blocked on a full pipeline.
    fn drain(&mut self, pending: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = 0;
        while seen < pending {
            match self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((_, Event::Layer)) => {}
                Ok(_) => seen += 1,
                Err(_) => break,
            }
        }
    }

    /// Sends `cmd` to every rank and waits until each has done it.
    fn command_all(&mut self, cmd: impl Fn() -> Command) -> Result<()> {
        self.broadcast(cmd)?;
        self.gather(
            |e| match e {
                Event::Done(r) => Some(r),
                _ => None,
            },
            &mut |_| {},
        )
        .map(|_| ())
    }
}

impl Drop for TpEngine {
    fn drop(&mut self) {
        self.commands.clear();
        if self.failed {
            // A worker may sit in a driver call that never returns after a lost GPU; the
            // process exit reclaims it.
            return;
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The controller's start-up, gathering, failure and deadline logic with stand-in workers that
    //! speak the worker protocol without a GPU.
    use super::*;
    use minference_engine::{AttentionChoice, MemoryPlan, PrefillEngine, PrefillStats};
    use minference_engine_gpu::EngineError;

    #[derive(Clone, Copy, PartialEq)]
    enum Stand {
        Healthy,
        FailsPrefill,
        SilentInPrefill,
        CannotOpen,
    }

    const LAYERS: usize = 3;

    type Spawned = std::io::Result<JoinHandle<()>>;

    fn stand_in(plan: Vec<Stand>) -> impl Fn(usize, usize, Receiver<Command>, Sender<(usize, Event)>) -> Spawned {
        move |rank, ordinal, rx, tx| {
            let role = plan[rank];
            std::thread::Builder::new().spawn(move || {
                let send = |e| {
                    let _ = tx.send((rank, e));
                };
                if role == Stand::CannotOpen {
                    send(Event::Opened(Err(TpError::Worker(format!("GPU {ordinal} is gone")))));
                    return;
                }
                send(Event::Opened(Ok("Stand-in GPU".into())));
                while let Ok(cmd) = rx.recv() {
                    match cmd {
                        Command::Join(_) => send(Event::Joined(Ok(Weak::new()))),
                        Command::Prefill { tokens, .. } => {
                            if role == Stand::SilentInPrefill {
                                continue;
                            }
                            for _ in 0..LAYERS {
                                send(Event::Layer);
                            }
                            let reply = if role == Stand::FailsPrefill {
                                Err(TpError::Rank { rank, ordinal, source: EngineError::Input("out of luck".into()) })
                            } else {
                                let mut stats = PrefillStats::zero(tokens.len(), MemoryPlan::default());
                                stats.sparse_heads = 2;
                                stats.dense_heads = 1;
                                Ok((vec![rank as f32], stats))
                            };
                            send(Event::Prefilled(reply));
                        }
                        Command::Decode(t) => send(Event::Logits(Ok(vec![t as f32 + rank as f32]))),
                        Command::Memory => send(Event::Memory(Ok((1, 10)))),
                        _ => send(Event::Done(Ok(()))),
                    }
                }
            })
        }
    }

    fn group(plan: Vec<Stand>, timeout: Duration) -> Result<TpEngine> {
        let mut cfg = ModelConfig::tiny_llama(true);
        cfg.layers = LAYERS;
        let ordinals: Vec<usize> = (0..plan.len()).collect();
        TpEngine::start(&ordinals, cfg, true, timeout, UniqueId::zeroed(), stand_in(plan))
    }

    #[test]
    fn a_healthy_group_answers_with_rank_zero_and_sums_the_heads() {
        let mut g = group(vec![Stand::Healthy; 3], Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.device_name(), "3 × Stand-in GPU");
        let mut layers = Vec::new();
        let (logits, stats) = g
            .prefill(&[1, 2, 3], &AttentionChoice::Dense, &mut |p| layers.push(p.layer))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(logits, vec![0.0]);
        assert_eq!(layers, vec![0, 1, 2]);
        assert_eq!((stats.sparse_heads, stats.dense_heads), (6, 3));
        assert_eq!(g.decode_step(7).unwrap_or_else(|e| panic!("{e}")), vec![7.0]);
        assert_eq!(g.memory().unwrap_or_else(|e| panic!("{e}")), (3, 30));
        g.reset().unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_failing_rank_ends_the_group_with_its_error() {
        let mut g =
            group(vec![Stand::Healthy, Stand::FailsPrefill], Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
        let err = g.prefill(&[1], &AttentionChoice::Dense, &mut |_| {}).err().map(|e| e.to_string());
        let err = err.unwrap_or_else(|| panic!("the failure was not reported"));
        assert!(err.contains("GPU 1") && err.contains("out of luck"), "{err}");
        let again = g.decode_step(1).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(again.contains("stopped"), "{again}");
    }

    #[test]
    fn a_silent_rank_hits_the_deadline_instead_of_hanging() {
        let mut g = group(vec![Stand::Healthy, Stand::SilentInPrefill], Duration::from_millis(300))
            .unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        let err = g.prefill(&[1], &AttentionChoice::Dense, &mut |_| {}).err().map(|e| e.to_string());
        let err = err.unwrap_or_else(|| panic!("no deadline"));
        assert!(err.contains("GPU 1") && err.contains("no sign of progress"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_gpu_that_cannot_open_fails_the_start() {
        let err = group(vec![Stand::Healthy, Stand::CannotOpen], Duration::from_secs(5)).err();
        let err = err.map(|e| e.to_string()).unwrap_or_else(|| panic!("started without GPU 1"));
        assert!(err.contains("GPU 1 is gone"), "{err}");
    }
}
