//! One layer of MInference prefill attention on device tensors, through the CUDA backend's
//! [`AttentionBackend`] operations: VS estimation, index build and the sparse/dense attention of
//! every head in its own pattern, timed per phase with CUDA events.

use crate::backend::CudaBackend;
use crate::context::Gpu;
use crate::error::Result;
use crate::index::DeviceIndex;
use crate::tensor::DeviceTensor;
use minference_core::{ashape_entries, causal_entries, AttentionBackend, AttnShape, HeadPattern};

/// Milliseconds of the three phases (device time between events), the index size, and the causal
/// `(row, key)` pairs the kernels computed against all there were (core's coverage accounting).
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerTimings {
    pub estimate_ms: f32,
    pub index_ms: f32,
    pub attention_ms: f32,
    pub index_tiles: usize,
    pub index_cols: usize,
    pub kernel_entries: u64,
    pub causal_entries: u64,
}

impl LayerTimings {
    pub fn total_ms(&self) -> f32 {
        self.estimate_ms + self.index_ms + self.attention_ms
    }
}

/// Estimation + index + attention for one layer; `out` receives the attention output (f32 or the
/// input dtype).
#[allow(clippy::too_many_arguments)]
pub fn layer_attention(
    backend: &CudaBackend,
    shape: &AttnShape,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    patterns: &[HeadPattern],
    out: &mut DeviceTensor,
) -> Result<(LayerTimings, Option<DeviceIndex>)> {
    let gpu = backend.gpu();
    let needs_index = patterns.iter().any(HeadPattern::reads_index);
    let (e0, e1, e2, e3) = (gpu.event()?, gpu.event()?, gpu.event()?, gpu.event()?);
    gpu.record(&e0)?;
    let index = if needs_index {
        let vs = backend.estimate(shape, q, k, patterns)?;
        gpu.record(&e1)?;
        let index = backend.index(shape, q, k, patterns, &vs)?;
        gpu.record(&e2)?;
        Some(index)
    } else {
        gpu.record(&e1)?;
        gpu.record(&e2)?;
        None
    };
    backend.attend(shape, q, k, v, patterns, index.as_ref(), out)?;
    gpu.record(&e3)?;
    gpu.sync()?;
    let ms = |a: &cudarc::driver::CudaEvent, b: &cudarc::driver::CudaEvent| a.elapsed_ms(b).unwrap_or(f32::NAN);
    let (kernel_entries, causal_entries) = computed_pairs(gpu, shape, patterns, index.as_ref())?;
    let t = LayerTimings {
        estimate_ms: ms(&e0, &e1),
        index_ms: ms(&e1, &e2),
        attention_ms: ms(&e2, &e3),
        index_tiles: index.as_ref().map_or(0, |i| i.n_tiles),
        index_cols: index.as_ref().map_or(0, |i| i.n_cols),
        kernel_entries,
        causal_entries,
    };
    Ok((t, index))
}

/// (pairs computed, causal pairs) over the heads of one launch: index heads counted on the device
/// from their index, dense and A-shape heads in closed form (nothing to download for them).
fn computed_pairs(
    gpu: &Gpu,
    shape: &AttnShape,
    patterns: &[HeadPattern],
    index: Option<&DeviceIndex>,
) -> Result<(u64, u64)> {
    let from_index = match index {
        Some(ix) => ix.entries_per_head(gpu, shape)?,
        None => vec![0; shape.heads],
    };
    let causal: u64 = shape.seqs.iter().map(causal_entries).sum();
    let mut computed = 0;
    for (h, p) in patterns.iter().enumerate() {
        computed += match *p {
            HeadPattern::Dense => causal,
            HeadPattern::AShape { n_init, n_local } => {
                shape.seqs.iter().map(|s| ashape_entries(s, n_init, n_local)).sum()
            }
            _ => from_index[h],
        };
    }
    Ok((computed, causal * patterns.len() as u64))
}
