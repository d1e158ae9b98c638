//! Per-layer KV cache in the backend's head-major layout, `[kv_heads, capacity, head_dim]`, so
//! the first `len` rows of each head are one contiguous slice the backend can read directly.

use crate::memory::zeroed;
use minference_model::Result;

#[derive(Debug, Clone)]
pub struct KvCache {
    pub(crate) k: Vec<Vec<f32>>,
    pub(crate) v: Vec<Vec<f32>>,
    kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    len: usize,
}

impl KvCache {
    pub fn new(layers: usize, kv_heads: usize, head_dim: usize, capacity: usize) -> Result<Self> {
        let size = kv_heads * capacity * head_dim;
        let mut k = Vec::with_capacity(layers);
        let mut v = Vec::with_capacity(layers);
        for _ in 0..layers {
            k.push(zeroed(size, "the KV cache")?);
            v.push(zeroed(size, "the KV cache")?);
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

    pub fn bytes(&self) -> usize {
        4 * 2 * self.k.len() * self.kv_heads * self.capacity * self.head_dim
    }

    /// Makes room for `extra` more tokens, doubling the capacity when it runs out.
    pub(crate) fn reserve(&mut self, extra: usize) -> Result<()> {
        let need = self.len + extra;
        if need <= self.capacity {
            return Ok(());
        }
        let new_cap = need.max(self.capacity * 2);
        let (d, old, len, heads) = (self.head_dim, self.capacity, self.len, self.kv_heads);
        let regrow = |buf: &mut Vec<f32>| -> Result<()> {
            let mut grown = zeroed(heads * new_cap * d, "the KV cache")?;
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
        let (d, cap, hk) = (self.head_dim, self.capacity, self.kv_heads);
        let tokens = k_rows.len() / (hk * d);
        for (buf, rows) in [(&mut self.k[layer], k_rows), (&mut self.v[layer], v_rows)] {
            for t in 0..tokens {
                for h in 0..hk {
                    let dst = (h * cap + start + t) * d;
                    buf[dst..dst + d].copy_from_slice(&rows[(t * hk + h) * d..(t * hk + h + 1) * d]);
                }
            }
        }
    }

    /// The first `len` rows of KV head `h` of `layer`.
    pub(crate) fn head(&self, layer: usize, h: usize, len: usize) -> (&[f32], &[f32]) {
        let start = h * self.capacity * self.head_dim;
        let end = start + len * self.head_dim;
        (&self.k[layer][start..end], &self.v[layer][start..end])
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }
}
