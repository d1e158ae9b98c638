//! Device-resident tensors in the shared layout (`[heads, tokens, head_dim]`), bf16 / f16 / f32.

use crate::context::Gpu;
use crate::error::{CudaError, DriverContext, Result};
use cudarc::driver::CudaSlice;
use half::{bf16, f16};
use minference_core::{DType, HostTensor};

pub struct DeviceTensor {
    pub(crate) buf: CudaSlice<u8>,
    pub dtype: DType,
    pub len: usize,
}

pub fn elem_bytes(dtype: DType) -> usize {
    match dtype {
        DType::F32 => 4,
        DType::F16 | DType::Bf16 => 2,
    }
}

impl DeviceTensor {
    /// Uninitialised tensor of `len` elements.
    pub fn alloc(gpu: &Gpu, dtype: DType, len: usize) -> Result<DeviceTensor> {
        Ok(DeviceTensor { buf: gpu.alloc::<u8>(len * elem_bytes(dtype))?, dtype, len })
    }

    pub fn upload(gpu: &Gpu, t: HostTensor) -> Result<DeviceTensor> {
        let bytes: Vec<u8> = match t {
            HostTensor::F32(s) => s.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostTensor::F16(s) => s.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
            HostTensor::Bf16(s) => s.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        };
        Ok(DeviceTensor { buf: gpu.upload(&bytes)?, dtype: t.dtype(), len: t.len() })
    }

    /// Copies back and converts to f32.
    pub fn download_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = gpu.download(&self.buf, self.len * elem_bytes(self.dtype))?;
        Ok(match self.dtype {
            DType::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            DType::F16 => {
                bytes.chunks_exact(2).map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect()
            }
            DType::Bf16 => {
                bytes.chunks_exact(2).map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect()
            }
        })
    }

    /// Fills every byte with `byte` (tests poison outputs with 0xff = NaN in every dtype).
    pub fn fill_bytes(&mut self, gpu: &Gpu, byte: u8) -> Result<()> {
        let host = vec![byte; self.len * elem_bytes(self.dtype)];
        gpu.stream()
            .memcpy_htod(&host, &mut self.buf)
            .map_err(|e| CudaError::Driver { context: "poison fill".into(), message: format!("{e:?}") })
    }

    /// Copies all of `src` into `self` from element `at` on (device to device, enqueued on `gpu`'s
    /// stream): replicating one head group over the others. Both must have the same dtype.
    pub fn copy_from(&mut self, gpu: &Gpu, src: &DeviceTensor, at: usize) -> Result<()> {
        if src.dtype != self.dtype || at + src.len > self.len {
            return Err(CudaError::Invalid(format!(
                "copying {} {:?} elements to element {at} of {} {:?} elements",
                src.len, src.dtype, self.len, self.dtype
            )));
        }
        let eb = elem_bytes(self.dtype);
        let mut dst = self.buf.slice_mut(at * eb..(at + src.len) * eb);
        gpu.stream().memcpy_dtod(&src.buf, &mut dst).ctx("device-to-device copy")
    }

    /// Copies `dst.len()` raw bytes (the bit patterns exactly as on the device) from element `first`
    /// on into `dst`. Does not synchronise the stream: call [`Gpu::sync`] before relying on `dst`.
    pub fn read_bytes(&self, gpu: &Gpu, first: usize, dst: &mut [u8]) -> Result<()> {
        let at = first * elem_bytes(self.dtype);
        if at + dst.len() > self.len * elem_bytes(self.dtype) {
            return Err(CudaError::Invalid(format!(
                "reading {} bytes from element {first} of {} {:?} elements",
                dst.len(),
                self.len,
                self.dtype
            )));
        }
        if dst.is_empty() {
            return Ok(());
        }
        gpu.stream().memcpy_dtoh(&self.buf.slice(at..at + dst.len()), dst).ctx("device-to-host copy")
    }

    pub(crate) fn ptr(&self, gpu: &Gpu) -> u64 {
        gpu.ptr(&self.buf)
    }

    /// Raw device address, for kernels of other crates (the model engine) launched on `gpu`'s stream.
    pub fn device_ptr(&self, gpu: &Gpu) -> u64 {
        gpu.ptr(&self.buf)
    }
}
