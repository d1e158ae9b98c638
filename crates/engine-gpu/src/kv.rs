//! The device KV cache: per layer the prefill keys/values as `DeviceTensor`s, as `layer_attention`
//! reads them — one `[kv_heads, N, D]` pair per layer (per-layer attention) or one `[N, D]` pair
//! per KV head (per-group attention) — plus a decode tail `[max_new_tokens, D]` per KV head.
//! Layers that do not fit stay in pinned host memory and pass through one shared device staging
//! layer (per-group attention only).

use crate::error::{driver, EngineError, Result};
use crate::view::DeviceView;
use cudarc::driver::{CudaSlice, PinnedHostSlice};
use minference_core::DType;
use minference_cuda::{DeviceTensor, Gpu};
use minference_engine::MemoryPlan;

pub struct GroupKv {
    pub k: DeviceTensor,
    pub v: DeviceTensor,
}

enum Prefix {
    /// `[kv_heads, N, D]` each.
    Layer(GroupKv),
    Device(Vec<GroupKv>),
    /// K and V of all KV heads, `[kv_heads, N, D]` each.
    Host {
        k: PinnedHostSlice<u16>,
        v: PinnedHostSlice<u16>,
    },
}

pub struct KvCache {
    prefix: Vec<Prefix>,
    staging: Option<Vec<GroupKv>>,
    /// `tail[layer][kv_head]` = (K, V), `[max_new_tokens, D]` each.
    tail: Vec<Vec<(CudaSlice<u16>, CudaSlice<u16>)>>,
    pub n_prefix: usize,
    pub len: usize,
    pub tail_capacity: usize,
    kv_heads: usize,
    head_dim: usize,
    dtype: DType,
}

fn group(gpu: &Gpu, dtype: DType, n: usize, d: usize) -> Result<GroupKv> {
    Ok(GroupKv { k: DeviceTensor::alloc(gpu, dtype, n * d)?, v: DeviceTensor::alloc(gpu, dtype, n * d)? })
}

impl KvCache {
    /// Allocates the cache `plan` describes (resident layers first, the last layers offloaded).
    pub fn new(
        gpu: &Gpu,
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        plan: &MemoryPlan,
        max_new: usize,
        dtype: DType,
    ) -> Result<Self> {
        let n = plan.tokens;
        let mut prefix = Vec::with_capacity(layers);
        for l in 0..layers {
            if l < plan.kv_resident_layers && plan.per_layer_attention {
                prefix.push(Prefix::Layer(group(gpu, dtype, kv_heads * n, head_dim)?));
            } else if l < plan.kv_resident_layers {
                prefix.push(Prefix::Device(
                    (0..kv_heads).map(|_| group(gpu, dtype, n, head_dim)).collect::<Result<_>>()?,
                ));
            } else {
                let elems = kv_heads * n * head_dim;
                let ctx = gpu.stream().context();
                // SAFETY: plain pinned host buffers, fully written by device copies before they are read.
                let alloc = |what: &str| {
                    unsafe { ctx.alloc_pinned_with_flags::<u16>(elems, 0) }.map_err(|e| {
                        EngineError::OutOfMemory(format!(
                            "pinning {:.2} GiB of host memory for the offloaded {what} of layer {l} failed: {e:?}",
                            (2 * elems) as f64 / (1u64 << 30) as f64
                        ))
                    })
                };
                prefix.push(Prefix::Host { k: alloc("keys")?, v: alloc("values")? });
            }
        }
        let staging = if plan.kv_offloaded_layers > 0 {
            Some((0..kv_heads).map(|_| group(gpu, dtype, n, head_dim)).collect::<Result<Vec<_>>>()?)
        } else {
            None
        };
        let cap = max_new.max(1);
        let tail = (0..layers)
            .map(|_| {
                (0..kv_heads)
                    .map(|_| Ok((gpu.alloc::<u16>(cap * head_dim)?, gpu.alloc::<u16>(cap * head_dim)?)))
                    .collect()
            })
            .collect::<Result<Vec<Vec<_>>>>()?;
        Ok(KvCache { prefix, staging, tail, n_prefix: n, len: 0, tail_capacity: cap, kv_heads, head_dim, dtype })
    }

    pub fn is_offloaded(&self, layer: usize) -> bool {
        matches!(self.prefix[layer], Prefix::Host { .. })
    }

    /// Device tensors holding the prefill K/V of (layer, kv_head): the cache itself or the staging layer.
    /// Per-group attention: the `[N, D]` tensors of one KV head (the cache or the staging layer).
    pub fn prefix(&self, layer: usize, kv_head: usize) -> Result<&GroupKv> {
        match &self.prefix[layer] {
            Prefix::Layer(_) => Err(EngineError::Input("per-group access to a per-layer KV cache".into())),
            Prefix::Device(groups) => Ok(&groups[kv_head]),
            Prefix::Host { .. } => self
                .staging
                .as_ref()
                .map(|s| &s[kv_head])
                .ok_or_else(|| EngineError::Input("offloaded layer without a staging buffer".into())),
        }
    }

    /// Per-layer attention: the `[kv_heads, N, D]` tensors of a layer.
    pub fn layer(&self, layer: usize) -> Result<&GroupKv> {
        match &self.prefix[layer] {
            Prefix::Layer(kv) => Ok(kv),
            _ => Err(EngineError::Input("per-layer access to a per-group KV cache".into())),
        }
    }

    /// The prefill K/V of (layer, kv_head) as `N` rows of D each, in either layout.
    pub fn prefix_views(&self, gpu: &Gpu, layer: usize, kv_head: usize) -> Result<(DeviceView, DeviceView)> {
        let (n, d) = (self.n_prefix, self.head_dim);
        if let Prefix::Layer(kv) = &self.prefix[layer] {
            let head = |t| DeviceView::of_tensor(gpu, t, n * d).rows(kv_head, 1).as_rows_of(d);
            return Ok((head(&kv.k), head(&kv.v)));
        }
        let kv = self.prefix(layer, kv_head)?;
        let rows = |t| DeviceView::of_tensor(gpu, t, d).rows(0, n);
        Ok((rows(&kv.k), rows(&kv.v)))
    }

    /// The decode tail K/V of (layer, kv_head): `tail_capacity` rows of D each.
    pub fn tail_views(&self, gpu: &Gpu, layer: usize, kv_head: usize) -> (DeviceView, DeviceView) {
        let (k, v) = &self.tail[layer][kv_head];
        let rows = |t| DeviceView::of_slice(gpu, t, self.dtype, self.head_dim);
        (rows(k), rows(v))
    }

    /// Copies the staging layer to the pinned host copy of `layer` (stream-ordered).
    pub fn offload(&mut self, gpu: &Gpu, layer: usize) -> Result<()> {
        let per_group = self.n_prefix * self.head_dim;
        let stream = gpu.stream().cu_stream();
        let Some(staging) = &self.staging else {
            return Ok(());
        };
        if let Prefix::Host { k, v } = &mut self.prefix[layer] {
            let (k_host, v_host) =
                (k.as_mut_slice().map_err(driver("pinned K"))?, v.as_mut_slice().map_err(driver("pinned V"))?);
            for (g, s) in staging.iter().enumerate().take(self.kv_heads) {
                let range = g * per_group..(g + 1) * per_group;
                // SAFETY: the staging tensors hold `per_group` bf16 values; the pinned buffers outlive the copy
                // (the engine synchronises before dropping the cache).
                unsafe {
                    cudarc::driver::result::memcpy_dtoh_async(&mut k_host[range.clone()], s.k.device_ptr(gpu), stream)
                        .map_err(driver("offloading K"))?;
                    cudarc::driver::result::memcpy_dtoh_async(&mut v_host[range], s.v.device_ptr(gpu), stream)
                        .map_err(driver("offloading V"))?;
                }
            }
        }
        Ok(())
    }

    /// Brings one KV head of an offloaded layer back into the staging layer (decode).
    pub fn stage(&mut self, gpu: &Gpu, layer: usize, kv_head: usize) -> Result<()> {
        let per_group = self.n_prefix * self.head_dim;
        let stream = gpu.stream().cu_stream();
        let Some(staging) = &self.staging else {
            return Ok(());
        };
        if let Prefix::Host { k, v } = &self.prefix[layer] {
            let (k_host, v_host) =
                (k.as_slice().map_err(driver("pinned K"))?, v.as_slice().map_err(driver("pinned V"))?);
            let range = kv_head * per_group..(kv_head + 1) * per_group;
            let s = &staging[kv_head];
            // SAFETY: as in `offload`, in the other direction.
            unsafe {
                cudarc::driver::result::memcpy_htod_async(s.k.device_ptr(gpu), &k_host[range.clone()], stream)
                    .map_err(driver("staging K"))?;
                cudarc::driver::result::memcpy_htod_async(s.v.device_ptr(gpu), &v_host[range], stream)
                    .map_err(driver("staging V"))?;
            }
        }
        Ok(())
    }
}
