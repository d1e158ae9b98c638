//! [`CudaBackend`]: the shared [`AttentionBackend`] over device tensors (what the GPU engine runs
//! its layers through, see [`crate::layer_attention`]), with the host transfers that tests and
//! the round-trip adapter use.

use crate::attention::attention;
use crate::build_index::build_index;
use crate::context::Gpu;
use crate::error::{CudaError, Result};
use crate::estimate::{estimate_vs, DeviceVsSelection};
use crate::index::DeviceIndex;
use crate::layout::{check_patterns, check_problem};
use crate::tensor::DeviceTensor;
use minference_core::{
    AttentionBackend, AttnShape, BackendTransfer, DType, HeadPattern, HostTensor, SparseIndex, VsSelection,
};
use std::sync::Arc;

#[derive(Clone)]
pub struct CudaBackend {
    gpu: Arc<Gpu>,
}

impl CudaBackend {
    /// GPU 0; [`CudaError::NoGpu`] when there is none (callers fall back to the CPU).
    pub fn new() -> Result<CudaBackend> {
        Self::on_device(0)
    }

    pub fn on_device(ordinal: usize) -> Result<CudaBackend> {
        Ok(CudaBackend { gpu: Arc::new(Gpu::open(ordinal)?) })
    }

    /// The backend of an open GPU (the engine's: its kernels, stream and allocations).
    pub fn of(gpu: Arc<Gpu>) -> CudaBackend {
        CudaBackend { gpu }
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
}

impl AttentionBackend for CudaBackend {
    type Error = CudaError;
    type Input<'t> = &'t DeviceTensor;
    type Output = DeviceTensor;
    type Selection = DeviceVsSelection;
    type Index = DeviceIndex;

    fn name(&self) -> String {
        self.gpu.name().to_string()
    }

    fn output(&self, shape: &AttnShape) -> Result<DeviceTensor> {
        DeviceTensor::alloc(&self.gpu, DType::F32, shape.q_elems())
    }

    fn estimate(
        &self,
        shape: &AttnShape,
        q: &DeviceTensor,
        k: &DeviceTensor,
        patterns: &[HeadPattern],
    ) -> Result<DeviceVsSelection> {
        check_patterns(shape, patterns)?;
        check_problem(shape, (q.dtype, q.len), (k.dtype, k.len), None)?;
        estimate_vs(&self.gpu, shape, q, k, patterns)
    }

    fn index(
        &self,
        shape: &AttnShape,
        q: &DeviceTensor,
        k: &DeviceTensor,
        patterns: &[HeadPattern],
        vs: &DeviceVsSelection,
    ) -> Result<DeviceIndex> {
        build_index(&self.gpu, shape, q, k, patterns, vs)
    }

    fn attend(
        &self,
        shape: &AttnShape,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        patterns: &[HeadPattern],
        index: Option<&DeviceIndex>,
        out: &mut DeviceTensor,
    ) -> Result<()> {
        check_patterns(shape, patterns)?;
        attention(&self.gpu, shape, q, k, v, patterns, index, out)
    }
}

impl BackendTransfer for CudaBackend {
    type Owned = DeviceTensor;

    /// Copies `t` to the device; non-finite values are refused (the kernels would spread them).
    fn upload(&self, t: HostTensor<'_>) -> Result<DeviceTensor> {
        if let Some(i) = (0..t.len()).find(|&i| !t.get(i).is_finite()) {
            return Err(CudaError::Invalid(format!("an input has a non-finite value at element {i}")));
        }
        DeviceTensor::upload(&self.gpu, t)
    }
    fn input<'t>(&self, t: &'t DeviceTensor) -> &'t DeviceTensor {
        t
    }
    fn output_to_host(&self, out: &DeviceTensor) -> Result<Vec<f32>> {
        out.download_f32(&self.gpu)
    }
    fn selection_to_host(&self, shape: &AttnShape, s: &DeviceVsSelection) -> Result<Vec<VsSelection>> {
        s.download(&self.gpu, shape)
    }
    fn selection_from_host(
        &self,
        shape: &AttnShape,
        patterns: &[HeadPattern],
        s: &[VsSelection],
    ) -> Result<DeviceVsSelection> {
        check_patterns(shape, patterns)?;
        DeviceVsSelection::upload(&self.gpu, shape, patterns, s)
    }
    fn index_to_host(&self, shape: &AttnShape, index: &DeviceIndex) -> Result<SparseIndex> {
        index.download(&self.gpu, shape)
    }
    fn index_from_host(&self, shape: &AttnShape, index: &SparseIndex) -> Result<DeviceIndex> {
        DeviceIndex::upload(&self.gpu, shape, index)
    }
}
