//! Per-layer KV cache in f16, head-major `[kv_heads, capacity, head_dim]`: the first `len` rows of
//! each KV head are one contiguous run, so a decode step streams each head's keys and values once
//! (half the bytes of f32; attention converts to f32 and accumulates in f32). Prefill attends over
//! the f32 K/V it has just computed (`forward` keeps one layer of them), so prefill numbers do not
//! depend on the cache's precision.

use half::f16;
use minference_model::{ModelError, Result};

#[derive(Debug, Clone)]
pub struct KvCache {
    pub(crate) k: Vec<Vec<f16>>,
    pub(crate) v: Vec<Vec<f16>>,
    kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    len: usize,
}

/// Bytes of one cached value.
pub const KV_BYTES: usize = 2;

fn zeroed_f16(len: usize) -> Result<Vec<f16>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        ModelError::OutOfMemory(format!(
            "cannot allocate {:.2} GiB for the KV cache",
            (len * KV_BYTES) as f64 / 1073741824.0
        ))
    })?;
    v.resize(len, f16::ZERO);
    Ok(v)
}

impl KvCache {
    pub fn new(layers: usize, kv_heads: usize, head_dim: usize, capacity: usize) -> Result<Self> {
        let size = kv_heads * capacity * head_dim;
        let mut k = Vec::with_capacity(layers);
        let mut v = Vec::with_capacity(layers);
        for _ in 0..layers {
            k.push(zeroed_f16(size)?);
            v.push(zeroed_f16(size)?);
        }
        Ok(KvCache { k, v, kv_heads, head_dim, capacity, len: 0 })
    }

    /// A cache with no rows (nothing allocated).
    pub fn empty(layers: usize, kv_heads: usize, head_dim: usize) -> Self {
        KvCache { k: vec![Vec::new(); layers], v: vec![Vec::new(); layers], kv_heads, head_dim, capacity: 0, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }
    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }

    pub fn bytes(&self) -> usize {
        KV_BYTES * 2 * self.k.len() * self.kv_heads * self.capacity * self.head_dim
    }

    /// Makes room for `extra` more tokens, doubling the capacity when it runs out.
    pub(crate) fn reserve(&mut self, extra: usize) -> Result<()> {
        let need = self.len + extra;
        if need <= self.capacity {
            return Ok(());
        }
        let new_cap = need.max(self.capacity * 2);
        let (d, old, len, heads) = (self.head_dim, self.capacity, self.len, self.kv_heads);
        let regrow = |buf: &mut Vec<f16>| -> Result<()> {
            let mut grown = zeroed_f16(heads * new_cap * d)?;
            for h in 0..heads {
                let src = &buf[h * old * d..h * old * d + len * d];
                grown[h * new_cap * d..h * new_cap * d + len * d].copy_from_slice(src);
            }
            *buf = grown;
            Ok(())
        };
        for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
            regrow(buf)?;
        }
        self.capacity = new_cap;
        Ok(())
    }

    /// Writes rows `[tokens, kv_heads * head_dim]` for positions `start..start+tokens` of `layer`.
    pub(crate) fn write(&mut self, layer: usize, start: usize, k_rows: &[f32], v_rows: &[f32]) {
        use half::slice::HalfFloatSliceExt;
        let (d, cap, hk) = (self.head_dim, self.capacity, self.kv_heads);
        let tokens = k_rows.len() / (hk * d);
        for (buf, rows) in [(&mut self.k[layer], k_rows), (&mut self.v[layer], v_rows)] {
            for t in 0..tokens {
                for h in 0..hk {
                    let dst = (h * cap + start + t) * d;
                    buf[dst..dst + d].convert_from_f32_slice(&rows[(t * hk + h) * d..(t * hk + h + 1) * d]);
                }
            }
        }
    }

    /// The first `len` rows of KV head `h` of `layer`, f16.
    pub(crate) fn head(&self, layer: usize, h: usize, len: usize) -> (&[f16], &[f16]) {
        let start = h * self.capacity * self.head_dim;
        let end = start + len * self.head_dim;
        (&self.k[layer][start..end], &self.v[layer][start..end])
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }
}
