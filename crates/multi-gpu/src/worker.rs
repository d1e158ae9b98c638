//! One GPU's thread of a tensor-parallel group: opens its GPU, joins the NCCL communicator when
//! told, builds its shard of the model, then serves the controller's commands in order.

use crate::error::TpError;
use crate::group::{TpModel, TpOptions};
use crate::nccl::{Communicator, Half, UniqueId};
use minference_cuda::Gpu;
use minference_engine::PrefillStats;
use minference_engine::{AttentionChoice, PrefillProgress};
use minference_engine_gpu::{Collective, EngineError, EngineSetup, GpuEngine, Precision, TensorShard};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Weak};

pub(crate) enum Command {
    Join(UniqueId),
    Build,
    Prefill {
        tokens: Arc<Vec<u32>>,
        attention: Arc<AttentionChoice>,
        /// Rank 0 returns the final residual stream instead of logits.
        residual: bool,
    },
    Decode(u32),
    Reset,
    MaxNewTokens(usize),
    ContextExtension(bool),
    MemoryLimit(Option<u64>),
    Memory,
}

pub(crate) type Reply<T> = std::result::Result<T, TpError>;

pub(crate) enum Event {
    Opened(Reply<String>),
    Joined(Reply<Weak<Communicator>>),
    Layer,
    Prefilled(Reply<(Vec<f32>, PrefillStats)>),
    Logits(Reply<Vec<f32>>),
    Done(Reply<()>),
    Memory(Reply<(u64, u64)>),
}

struct NcclCollective(Arc<Communicator>);

impl Collective for NcclCollective {
    fn all_reduce_sum(
        &self,
        gpu: &Gpu,
        ptr: u64,
        count: usize,
        precision: Precision,
    ) -> minference_engine_gpu::Result<()> {
        let stream = gpu.stream().cu_stream() as *mut std::ffi::c_void;
        let dtype = match precision {
            Precision::Bf16 => Half::Bf16,
            Precision::F16 => Half::F16,
        };
        // SAFETY: the engine hands over a buffer of `count` values on this GPU and its own stream.
        unsafe { self.0.all_reduce_sum(ptr, count, dtype, stream) }.map_err(|e| EngineError::Group(e.to_string()))
    }
}

/// The body of one GPU's thread: open, join the communicator, build the shard, then serve.
pub(crate) fn worker(
    rank: usize,
    ordinal: usize,
    world: usize,
    model: TpModel,
    opts: TpOptions,
    commands: Receiver<Command>,
    events: Sender<(usize, Event)>,
) {
    let send = |e: Event| {
        let _ = events.send((rank, e));
    };
    let wrap = |source: EngineError| TpError::Rank { rank, ordinal, source };
    let gpu = match Gpu::open(ordinal) {
        Ok(g) => Arc::new(g),
        Err(source) => {
            send(Event::Opened(Err(TpError::Open { ordinal, source })));
            return;
        }
    };
    send(Event::Opened(Ok(gpu.name().to_string())));
    let Ok(Command::Join(id)) = commands.recv() else { return };
    let comm = gpu
        .stream()
        .context()
        .bind_to_thread()
        .map_err(|e| TpError::Nccl(format!("binding GPU {ordinal}: {e:?}")))
        .and_then(|_| Communicator::init(id, rank, world));
    let comm = match comm {
        Ok(c) => Arc::new(c),
        Err(e) => {
            send(Event::Joined(Err(e)));
            return;
        }
    };
    send(Event::Joined(Ok(Arc::downgrade(&comm))));
    let Ok(Command::Build) = commands.recv() else { return };
    let cfg = model.config().clone();
    let collective: Box<dyn Collective> = Box::new(NcclCollective(comm));
    let built = TensorShard::new(&cfg, rank, world).and_then(|shard| {
        let structured = match &model {
            TpModel::Random { structured, .. } => structured.as_deref().cloned(),
            TpModel::Host(_) => None,
        };
        let setup =
            EngineSetup { shard: Some(shard), collective: Some(collective), precision: opts.precision, structured };
        match &model {
            TpModel::Host(m) => GpuEngine::new_with(Arc::clone(&gpu), Arc::clone(m), setup),
            TpModel::Random { seed, .. } => GpuEngine::random_with(Arc::clone(&gpu), cfg.clone(), *seed, setup),
        }
    });
    let mut engine = match built {
        Ok(e) => e,
        Err(e) => {
            send(Event::Done(Err(wrap(e))));
            return;
        }
    };
    drop(model);
    engine.set_max_new_tokens(opts.max_new_tokens);
    engine.set_allow_context_extension(opts.allow_context_extension);
    engine.set_memory_limit(opts.memory_limit);
    send(Event::Done(Ok(())));

    let fail_layer = opts.fail_at.filter(|f| f.0 == rank).map(|f| f.1);
    while let Ok(cmd) = commands.recv() {
        match cmd {
            Command::Prefill { tokens, attention, residual } => {
                let mut progress = |_: PrefillProgress| send(Event::Layer);
                let mut inject = |_: &Gpu, pass: &minference_engine_gpu::AttentionPass| {
                    if Some(pass.layer) == fail_layer {
                        return Err(EngineError::Input(format!("injected failure at layer {}", pass.layer)));
                    }
                    Ok(())
                };
                let observer: Option<&mut minference_engine_gpu::PassObserver<'_>> =
                    if fail_layer.is_some() { Some(&mut inject) } else { None };
                let r = if residual && rank == 0 {
                    engine.prefill_residual(&tokens, &attention, &mut progress)
                } else {
                    engine.prefill_observed(&tokens, &attention, &mut progress, observer)
                };
                send(Event::Prefilled(r.map_err(wrap)));
            }
            Command::Decode(t) => send(Event::Logits(engine.decode_step(t).map_err(wrap))),
            Command::Reset => send(Event::Done(engine.reset().map_err(wrap))),
            Command::MaxNewTokens(n) => {
                engine.set_max_new_tokens(n);
                send(Event::Done(Ok(())));
            }
            Command::ContextExtension(a) => {
                engine.set_allow_context_extension(a);
                send(Event::Done(Ok(())));
            }
            Command::MemoryLimit(m) => {
                engine.set_memory_limit(m);
                send(Event::Done(Ok(())));
            }
            Command::Memory => {
                send(Event::Memory(gpu.mem_info().map(|(f, t)| ((t - f) as u64, t as u64)).map_err(|e| wrap(e.into()))))
            }
            Command::Join(_) | Command::Build => {}
        }
    }
}
