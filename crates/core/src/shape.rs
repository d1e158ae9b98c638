//! Attention problem shapes and the tensor layout every backend shares.
//!
//! Layout (head-major, sequences packed along the token axis):
//! * `Q`, `O`: `[heads, total_q, head_dim]`
//! * `K`, `V`: `[kv_heads, total_kv, head_dim]`
//!
//! Sequence `b` owns query rows `q_start(b)..q_start(b)+q_len` and key rows
//! `kv_start(b)..kv_start(b)+kv_len` of every head. Query `i` of a sequence sits at absolute position
//! `i + kv_len - q_len` (chunked prefill / prefix cache) and may see keys `j <= i + offset`.

use crate::error::{CoreError, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqLen {
    pub q_len: usize,
    pub kv_len: usize,
}

impl SeqLen {
    pub fn prefill(n: usize) -> Self {
        SeqLen { q_len: n, kv_len: n }
    }
    /// Absolute position of query row 0.
    pub fn offset(&self) -> usize {
        self.kv_len - self.q_len
    }
    /// Number of 64-row query blocks.
    pub fn row_blocks(&self) -> usize {
        self.q_len.div_ceil(crate::TILE)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttnShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub seqs: Vec<SeqLen>,
}

impl AttnShape {
    /// One prefill sequence of `n` tokens.
    pub fn single(heads: usize, kv_heads: usize, head_dim: usize, n: usize) -> Self {
        AttnShape { heads, kv_heads, head_dim, seqs: vec![SeqLen::prefill(n)] }
    }

    /// Checks every invariant the kernels rely on.
    pub fn validate(&self) -> Result<()> {
        if self.heads == 0 || self.kv_heads == 0 {
            return Err(CoreError::Shape("heads and kv_heads must be > 0".into()));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(CoreError::Shape(format!(
                "heads ({}) must be a multiple of kv_heads ({})",
                self.heads, self.kv_heads
            )));
        }
        if self.head_dim == 0 {
            return Err(CoreError::Shape("head_dim must be > 0".into()));
        }
        if self.seqs.is_empty() {
            return Err(CoreError::Shape("no sequences".into()));
        }
        for (b, s) in self.seqs.iter().enumerate() {
            if s.q_len == 0 {
                return Err(CoreError::Shape(format!("sequence {b}: q_len = 0")));
            }
            if s.q_len > s.kv_len {
                return Err(CoreError::Shape(format!("sequence {b}: q_len {} > kv_len {}", s.q_len, s.kv_len)));
            }
            if s.kv_len > i32::MAX as usize {
                return Err(CoreError::Shape(format!("sequence {b}: kv_len {} too large", s.kv_len)));
            }
        }
        Ok(())
    }

    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
    pub fn kv_head_of(&self, h: usize) -> usize {
        h / self.group()
    }
    pub fn total_q(&self) -> usize {
        self.seqs.iter().map(|s| s.q_len).sum()
    }
    pub fn total_kv(&self) -> usize {
        self.seqs.iter().map(|s| s.kv_len).sum()
    }
    pub fn q_start(&self, b: usize) -> usize {
        self.seqs[..b].iter().map(|s| s.q_len).sum()
    }
    pub fn kv_start(&self, b: usize) -> usize {
        self.seqs[..b].iter().map(|s| s.kv_len).sum()
    }
    pub fn q_elems(&self) -> usize {
        self.heads * self.total_q() * self.head_dim
    }
    pub fn kv_elems(&self) -> usize {
        self.kv_heads * self.total_kv() * self.head_dim
    }
    /// Dense causal FLOPs (2 matmuls × 2 FLOPs per MAC) over the causal entries.
    pub fn dense_causal_flops(&self) -> f64 {
        let entries: f64 = self.seqs.iter().map(|s| causal_entries(s) as f64).sum();
        4.0 * entries * self.head_dim as f64 * self.heads as f64
    }
}

/// Number of (row, key) pairs with key <= row position for one sequence.
pub fn causal_entries(s: &SeqLen) -> u64 {
    let q = s.q_len as u64;
    let off = s.offset() as u64;
    // row i sees off + i + 1 keys
    q * off + q * (q + 1) / 2
}
