//! [`CudaBackend`]: the shared [`AttentionBackend`] on host tensors (upload, run, download).

use crate::attention::attention;
use crate::build_index::build_index;
use crate::context::Gpu;
use crate::error::{CudaError, Result};
use crate::estimate::{estimate_vs, DeviceVsSelection};
use crate::index::DeviceIndex;
use crate::layout::{check_patterns, check_problem};
use crate::tensor::DeviceTensor;
use minference_core::{AttentionBackend, AttnShape, DType, HeadPattern, HostTensor, SparseIndex, VsSelection};

pub struct CudaBackend {
    gpu: Gpu,
}

impl CudaBackend {
    /// GPU 0; [`CudaError::NoGpu`] when there is none (callers fall back to the CPU).
    pub fn new() -> Result<CudaBackend> {
        Self::on_device(0)
    }

    pub fn on_device(ordinal: usize) -> Result<CudaBackend> {
        Ok(CudaBackend { gpu: Gpu::open(ordinal)? })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn inputs(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        v: Option<HostTensor>,
    ) -> Result<Vec<DeviceTensor>> {
        check_problem(shape, (q.dtype(), q.len()), (k.dtype(), k.len()), v.map(|v| (v.dtype(), v.len())))?;
        let mut out = Vec::new();
        for (name, t) in [("Q", Some(q)), ("K", Some(k)), ("V", v)] {
            let Some(t) = t else { continue };
            if let Some(i) = (0..t.len()).find(|&i| !t.get(i).is_finite()) {
                return Err(CudaError::Invalid(format!("{name} has a non-finite value at element {i}")));
            }
            out.push(DeviceTensor::upload(&self.gpu, t)?);
        }
        Ok(out)
    }

    fn run_attention(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        v: HostTensor,
        patterns: &[HeadPattern],
        index: Option<&SparseIndex>,
    ) -> Result<Vec<f32>> {
        check_patterns(shape, patterns)?;
        let t = self.inputs(shape, q, k, Some(v))?;
        let index = index.map(|ix| DeviceIndex::upload(&self.gpu, shape, ix)).transpose()?;
        let mut out = DeviceTensor::alloc(&self.gpu, DType::F32, shape.q_elems())?;
        attention(&self.gpu, shape, &t[0], &t[1], &t[2], patterns, index.as_ref(), &mut out)?;
        out.download_f32(&self.gpu)
    }
}

impl AttentionBackend for CudaBackend {
    type Error = CudaError;

    fn name(&self) -> String {
        self.gpu.name().to_string()
    }

    fn dense(&self, shape: &AttnShape, q: HostTensor, k: HostTensor, v: HostTensor) -> Result<Vec<f32>> {
        self.run_attention(shape, q, k, v, &vec![HeadPattern::Dense; shape.heads], None)
    }

    fn estimate_vs(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        patterns: &[HeadPattern],
    ) -> Result<Vec<VsSelection>> {
        check_patterns(shape, patterns)?;
        let t = self.inputs(shape, q, k, None)?;
        estimate_vs(&self.gpu, shape, &t[0], &t[1], patterns)?.download(&self.gpu, shape)
    }

    fn build_index(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        patterns: &[HeadPattern],
        vs: &[VsSelection],
    ) -> Result<SparseIndex> {
        check_patterns(shape, patterns)?;
        let t = self.inputs(shape, q, k, None)?;
        let sel = DeviceVsSelection::upload(&self.gpu, shape, patterns, vs)?;
        build_index(&self.gpu, shape, &t[0], &t[1], patterns, &sel)?.download(&self.gpu, shape)
    }

    fn sparse(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        v: HostTensor,
        patterns: &[HeadPattern],
        index: &SparseIndex,
    ) -> Result<Vec<f32>> {
        self.run_attention(shape, q, k, v, patterns, Some(index))
    }
}
