//! Input checks and conversion of K/V to f32 once per call (the mainloop then reads plain f32 rows).

use crate::error::{CpuError, CpuResult};
use minference_core::{AttnShape, HostTensor};
use std::borrow::Cow;

/// Validates the shape, tensor lengths, dtypes and finiteness of `q`, `k` and `v`.
pub(crate) fn check_qkv(shape: &AttnShape, q: &HostTensor, k: &HostTensor, v: &HostTensor) -> CpuResult<()> {
    check_qk(shape, q, k)?;
    check_len("v", shape.kv_elems(), v)?;
    if v.dtype() != q.dtype() {
        return Err(CpuError::DTypeMismatch { q: q.dtype(), k: k.dtype(), v: v.dtype() });
    }
    check_finite("v", v)
}

/// Validates the shape and `q`/`k` (the inputs of estimation and index building).
pub(crate) fn check_qk(shape: &AttnShape, q: &HostTensor, k: &HostTensor) -> CpuResult<()> {
    shape.validate()?;
    check_len("q", shape.q_elems(), q)?;
    check_len("k", shape.kv_elems(), k)?;
    if q.dtype() != k.dtype() {
        return Err(CpuError::DTypeMismatch { q: q.dtype(), k: k.dtype(), v: k.dtype() });
    }
    check_finite("q", q)?;
    check_finite("k", k)
}

fn check_len(tensor: &'static str, expected: usize, t: &HostTensor) -> CpuResult<()> {
    if t.len() != expected {
        return Err(CpuError::Length { tensor, expected, actual: t.len() });
    }
    Ok(())
}

/// One linear pass: negligible next to the O(N²) attention it guards.
fn check_finite(tensor: &'static str, t: &HostTensor) -> CpuResult<()> {
    let finite = match t {
        HostTensor::F32(s) => s.iter().all(|x| x.is_finite()),
        HostTensor::F16(s) => s.iter().all(|x| x.is_finite()),
        HostTensor::Bf16(s) => s.iter().all(|x| x.is_finite()),
    };
    if finite {
        Ok(())
    } else {
        Err(CpuError::NonFinite(tensor))
    }
}

/// The tensor as f32: borrowed when it already is, converted once otherwise.
pub(crate) fn as_f32<'a>(t: &HostTensor<'a>) -> Cow<'a, [f32]> {
    match t {
        HostTensor::F32(s) => Cow::Borrowed(*s),
        other => Cow::Owned(other.to_f32_vec()),
    }
}
