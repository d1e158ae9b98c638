//! Per-layer KV cache in the backend's head-major layout, `[kv_heads, capacity, head_dim]`, so
//! the first `len` rows of each head are one contiguous slice the backend can read directly.

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
    pub fn new(layers: usize, kv_heads: usize, head_dim: usize, capacity: usize) -> Self {
        let size = kv_heads * capacity * head_dim;
        KvCache {
            k: (0..layers).map(|_| vec![0.0; size]).collect(),
            v: (0..layers).map(|_| vec![0.0; size]).collect(),
            kv_heads,
            head_dim,
            capacity,
            len: 0,
        }
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
    pub(crate) fn reserve(&mut self, extra: usize) {
        let need = self.len + extra;
        if need <= self.capacity {
            return;
        }
        let new_cap = need.max(self.capacity * 2);
        let (d, old) = (self.head_dim, self.capacity);
        let regrow = |buf: &mut Vec<f32>| {
            let mut grown = vec![0.0; self.kv_heads * new_cap * d];
            for h in 0..self.kv_heads {
                let src = &buf[h * old * d..h * old * d + self.len * d];
                grown[h * new_cap * d..h * new_cap * d + self.len * d].copy_from_slice(src);
            }
            *buf = grown;
        };
        self.k.iter_mut().for_each(regrow);
        self.v.iter_mut().for_each(regrow);
        self.capacity = new_cap;
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
