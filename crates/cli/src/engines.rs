//! Where a command runs, resolved once: `--device` and `--gpus` become one engine (the CPU, one
//! GPU or a tensor-parallel group) behind `minference_engine::PrefillEngine`.

use crate::device::DeviceChoice;
use anyhow::{bail, Context, Result};
use minference_cuda::{CudaError, Gpu};
use minference_engine::PrefillEngine;
use minference_engine_gpu::{EngineSetup, GpuEngine, Precision};
use minference_model::{Model, ModelConfig, StructuredAttention};
use minference_multi_gpu::{TpEngine, TpModel, TpOptions};
use std::sync::Arc;

/// `--device`, `--gpus` and `--precision` of the commands that run a model where a GPU is usable
/// (`run`, `serve`).
#[derive(clap::Args, Debug, Clone)]
pub struct PlacementArgs {
    /// cpu, cuda, cuda:N or auto (GPU when one is usable, else CPU).
    #[arg(long, default_value = "auto", value_parser = crate::device::parse_device)]
    pub device: DeviceChoice,
    /// GPUs of this host to spread the model over (tensor parallel by heads, NCCL), starting at
    /// the --device ordinal.
    #[arg(long, default_value_t = 1)]
    pub gpus: usize,
    /// GPU storage precision of weights and activations: bf16 (any model) or f16 (closer to f32,
    /// but overflows on activations above 65504).
    #[arg(long, default_value = "bf16", value_parser = parse_precision)]
    pub precision: Precision,
}

impl PlacementArgs {
    pub fn resolve(&self) -> Result<Placement> {
        Placement::resolve(self.device, self.gpus)
    }
}

/// The device a command runs on after `auto` was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Cpu,
    /// GPUs `first..first + count` of this host.
    Gpus {
        first: usize,
        count: usize,
    },
}

impl Placement {
    /// `auto` takes GPU 0 when it opens (saying why not otherwise); `--gpus N > 1` needs a GPU.
    pub fn resolve(device: DeviceChoice, gpus: usize) -> Result<Placement> {
        if gpus == 0 {
            bail!("--gpus must be at least 1");
        }
        Ok(match device {
            DeviceChoice::Cpu if gpus > 1 => bail!("--gpus {gpus} needs --device cuda (or auto)"),
            DeviceChoice::Cpu => Placement::Cpu,
            DeviceChoice::Cuda(first) => Placement::Gpus { first, count: gpus },
            DeviceChoice::Auto if gpus > 1 || gpu_usable() => Placement::Gpus { first: 0, count: gpus },
            DeviceChoice::Auto => Placement::Cpu,
        })
    }

    pub fn is_gpu(self) -> bool {
        matches!(self, Placement::Gpus { .. })
    }
}

/// Whether a CUDA device can be used by this binary (driver present, device 0 opens).
fn gpu_usable() -> bool {
    match Gpu::open(0) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("no usable GPU ({e}); running on the CPU");
            false
        }
    }
}

/// Opens GPU `ordinal` with an error that says what to do instead.
pub fn open_gpu(ordinal: usize) -> Result<Arc<Gpu>> {
    match Gpu::open(ordinal) {
        Ok(g) => Ok(Arc::new(g)),
        Err(CudaError::NoGpu(m)) => bail!("--device cuda:{ordinal}: no usable GPU ({m}); use --device cpu"),
        Err(e) => Err(e).with_context(|| format!("opening GPU {ordinal}")),
    }
}

/// The weights an engine runs.
pub enum EngineWeights {
    Model(Arc<Model>),
    /// A named shape with random weights generated on the device(s) (GPU only); `structured`
    /// gives attention that workload's structure (`bench e2e --workload structured`).
    Random {
        config: ModelConfig,
        seed: u64,
        structured: Option<Box<StructuredAttention>>,
    },
}

/// Parses `--precision`.
pub fn parse_precision(s: &str) -> Result<Precision, String> {
    Precision::parse(s).map_err(|e| e.to_string())
}

/// The one engine of a command on `placement`. `precision` applies to GPUs (the CPU runs f32).
/// `n` engines for a server's `n` request slots: on the CPU `n` engines over one `Arc<Model>`; on
/// one GPU one engine and `n - 1` siblings sharing its device weights (`GpuEngine::sibling`), each
/// with its own KV cache; a tensor-parallel group serves one request at a time, so `n` must be 1.
pub fn open_engines(
    weights: EngineWeights,
    placement: Placement,
    precision: Precision,
    n: usize,
) -> Result<Vec<Box<dyn PrefillEngine>>> {
    if n == 0 {
        bail!("at least one engine is needed");
    }
    match placement {
        Placement::Gpus { first, count: 1 } if n > 1 => {
            let first = open_one_gpu(weights, first, precision)?;
            let mut engines = Vec::with_capacity(n);
            for _ in 1..n {
                engines.push(Box::new(first.sibling()?) as Box<dyn PrefillEngine>);
            }
            engines.insert(0, Box::new(first));
            Ok(engines)
        }
        Placement::Gpus { count, .. } if count > 1 && n > 1 => {
            bail!("a tensor-parallel group of {count} GPUs serves one request at a time (--parallel 1)")
        }
        _ if n == 1 => Ok(vec![open_engine(weights, placement, precision)?]),
        _ => match weights {
            // The CPU: n engines over one model (its weights are shared, each has its own cache).
            EngineWeights::Model(m) => {
                (0..n).map(|_| open_engine(EngineWeights::Model(Arc::clone(&m)), placement, precision)).collect()
            }
            random => Ok(vec![open_engine(random, placement, precision)?]),
        },
    }
}

/// The engine of one GPU (`ordinal`) over `weights`.
fn open_one_gpu(weights: EngineWeights, ordinal: usize, precision: Precision) -> Result<GpuEngine> {
    let gpu = open_gpu(ordinal)?;
    Ok(match weights {
        EngineWeights::Model(m) => GpuEngine::new_with(gpu, m, EngineSetup { precision, ..EngineSetup::default() })?,
        EngineWeights::Random { config, seed, structured } => {
            let setup = EngineSetup { precision, structured: structured.map(|w| *w), ..EngineSetup::default() };
            GpuEngine::random_with(gpu, config, seed, setup)?
        }
    })
}

pub fn open_engine(
    weights: EngineWeights,
    placement: Placement,
    precision: Precision,
) -> Result<Box<dyn PrefillEngine>> {
    match placement {
        Placement::Cpu => match weights {
            EngineWeights::Model(m) => Ok(Box::new(minference_engine::cpu_engine(m))),
            EngineWeights::Random { config, .. } => {
                bail!("random weights of the {} shape are generated on a GPU; use --device cuda", config.name)
            }
        },
        Placement::Gpus { count: 0, .. } => bail!("--gpus must be at least 1"),
        Placement::Gpus { first, count: 1 } => Ok(Box::new(open_one_gpu(weights, first, precision)?)),
        Placement::Gpus { first, count } => {
            let model = match weights {
                EngineWeights::Model(m) => TpModel::Host(m),
                EngineWeights::Random { config, seed, structured } => TpModel::Random { config, seed, structured },
            };
            let ordinals: Vec<usize> = (first..first + count).collect();
            let opts = TpOptions { precision, ..TpOptions::default() };
            let group = TpEngine::new(&ordinals, model, opts)
                .with_context(|| format!("starting a tensor-parallel group on GPUs {ordinals:?}"))?;
            Ok(Box::new(group))
        }
    }
}
