//! Per-phase device timing with CUDA events, read after the stream has been synchronised.

use crate::error::{driver, Result};
use cudarc::driver::CudaEvent;
use minference_cuda::Gpu;

pub use minference_engine::Phase;

const PHASES: usize = Phase::COUNT;

#[derive(Default)]
pub struct PhaseTimer {
    pending: Vec<(Phase, CudaEvent, CudaEvent)>,
    ms: [f64; PHASES],
}

impl PhaseTimer {
    pub fn start(&self, gpu: &Gpu) -> Result<CudaEvent> {
        let e = gpu.event()?;
        gpu.record(&e)?;
        Ok(e)
    }

    pub fn stop(&mut self, gpu: &Gpu, phase: Phase, start: CudaEvent) -> Result<()> {
        let e = gpu.event()?;
        gpu.record(&e)?;
        self.pending.push((phase, start, e));
        Ok(())
    }

    /// Accumulates every recorded interval; call after a stream synchronisation.
    pub fn flush(&mut self) -> Result<()> {
        for (phase, a, b) in self.pending.drain(..) {
            self.ms[phase as usize] += a.elapsed_ms(&b).map_err(driver("reading a timing event"))? as f64;
        }
        Ok(())
    }

    pub fn ms(&self, phase: Phase) -> f64 {
        self.ms[phase as usize]
    }
}
