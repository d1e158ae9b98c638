//! Device-side random normals (`kernels/fill.cu`), for benchmark inputs that never cross the bus.

use crate::context::{Arg, Gpu};
use crate::error::Result;
use crate::tensor::DeviceTensor;
use minference_core::DType;

/// Fills `t` with normals of standard deviation `std`, a counter-based hash of `seed` and the
/// element index (Box-Muller), written in `t`'s dtype. The same seed gives the same tensor.
/// Enqueued on `gpu`'s stream; call [`Gpu::sync`] before reading `t` from the host.
pub fn fill_normal(gpu: &Gpu, t: &mut DeviceTensor, seed: u64, std: f32) -> Result<()> {
    let code = match t.dtype {
        DType::Bf16 => 0,
        DType::F16 => 1,
        DType::F32 => 2,
    };
    let p = t.ptr(gpu);
    gpu.launch(
        "fill_normal",
        (1024, 1, 1),
        256,
        0,
        &[Arg::P(p), Arg::P(t.len as u64), Arg::P(seed), Arg::F(std), Arg::I(code)],
    )
}
