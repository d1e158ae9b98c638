//! Borrowed host tensors of the three supported element types.

use half::{bf16, f16};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    Bf16,
}

#[derive(Debug, Clone, Copy)]
pub enum HostTensor<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
}

impl<'a> HostTensor<'a> {
    pub fn len(&self) -> usize {
        match self {
            HostTensor::F32(s) => s.len(),
            HostTensor::F16(s) => s.len(),
            HostTensor::Bf16(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dtype(&self) -> DType {
        match self {
            HostTensor::F32(_) => DType::F32,
            HostTensor::F16(_) => DType::F16,
            HostTensor::Bf16(_) => DType::Bf16,
        }
    }
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            HostTensor::F32(s) => s[i],
            HostTensor::F16(s) => s[i].to_f32(),
            HostTensor::Bf16(s) => s[i].to_f32(),
        }
    }
    /// Converts a contiguous range to f32 into `dst` (used to stage tiles).
    pub fn read_into(&self, start: usize, dst: &mut [f32]) {
        let end = start + dst.len();
        match self {
            HostTensor::F32(s) => dst.copy_from_slice(&s[start..end]),
            HostTensor::F16(s) => {
                for (d, x) in dst.iter_mut().zip(&s[start..end]) {
                    *d = x.to_f32()
                }
            }
            HostTensor::Bf16(s) => {
                for (d, x) in dst.iter_mut().zip(&s[start..end]) {
                    *d = x.to_f32()
                }
            }
        }
    }
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut v = vec![0.0; self.len()];
        self.read_into(0, &mut v);
        v
    }
}

/// Owned tensor, convenient for tests, benchmarks and the synthetic generator.
#[derive(Debug, Clone)]
pub enum OwnedTensor {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl OwnedTensor {
    pub fn from_f32(data: &[f32], dtype: DType) -> Self {
        match dtype {
            DType::F32 => OwnedTensor::F32(data.to_vec()),
            DType::F16 => OwnedTensor::F16(data.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::Bf16 => OwnedTensor::Bf16(data.iter().map(|&x| bf16::from_f32(x)).collect()),
        }
    }
    /// A copy of `t` in its own element type.
    pub fn copy_of(t: HostTensor<'_>) -> Self {
        match t {
            HostTensor::F32(s) => OwnedTensor::F32(s.to_vec()),
            HostTensor::F16(s) => OwnedTensor::F16(s.to_vec()),
            HostTensor::Bf16(s) => OwnedTensor::Bf16(s.to_vec()),
        }
    }
    pub fn view(&self) -> HostTensor<'_> {
        match self {
            OwnedTensor::F32(v) => HostTensor::F32(v),
            OwnedTensor::F16(v) => HostTensor::F16(v),
            OwnedTensor::Bf16(v) => HostTensor::Bf16(v),
        }
    }
}
