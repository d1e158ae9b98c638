//! Host-side validation and the small per-launch metadata arrays (sequences, per-head patterns,
//! slot bases) the kernels read.

use crate::context::Gpu;
use crate::error::{CudaError, Result};
use crate::kernels::{HEAD_ASHAPE, HEAD_DENSE, HEAD_INDEX};
use cudarc::driver::CudaSlice;
use minference_core::{AttnShape, DType, HeadPattern};

pub const SUPPORTED_HEAD_DIMS: [usize; 3] = [64, 96, 128];

/// Tokens per launch: int32 positions with headroom for the kernels' key arithmetic (a row block's
/// end plus a tile, index.cu), so that it never overflows.
pub const MAX_TOKENS: usize = i32::MAX as usize - 256;

/// Checks a problem against what the kernels support (shape invariants, head dim, int32 ranges,
/// grid limits, tensor lengths and one dtype for Q/K/V).
pub fn check_problem(shape: &AttnShape, q: (DType, usize), k: (DType, usize), v: Option<(DType, usize)>) -> Result<()> {
    shape.validate()?;
    if !SUPPORTED_HEAD_DIMS.contains(&shape.head_dim) {
        return Err(CudaError::UnsupportedHeadDim(shape.head_dim));
    }
    let total_kv_elems = shape.kv_heads.checked_mul(shape.total_kv()).and_then(|x| x.checked_mul(shape.head_dim));
    if shape.total_q() > MAX_TOKENS || shape.total_kv() > MAX_TOKENS || total_kv_elems.is_none() {
        return Err(CudaError::Invalid(format!("token counts must be at most {MAX_TOKENS}")));
    }
    if shape.heads > 65_535 || shape.seqs.len() > 65_535 {
        return Err(CudaError::Invalid("at most 65535 heads and 65535 sequences per launch".into()));
    }
    if q.1 != shape.q_elems() {
        return Err(CudaError::Invalid(format!("Q has {} elements, shape needs {}", q.1, shape.q_elems())));
    }
    if k.1 != shape.kv_elems() {
        return Err(CudaError::Invalid(format!("K has {} elements, shape needs {}", k.1, shape.kv_elems())));
    }
    if k.0 != q.0 {
        return Err(CudaError::Invalid(format!("Q is {:?} but K is {:?}", q.0, k.0)));
    }
    if let Some(v) = v {
        if v.1 != shape.kv_elems() {
            return Err(CudaError::Invalid(format!("V has {} elements, shape needs {}", v.1, shape.kv_elems())));
        }
        if v.0 != q.0 {
            return Err(CudaError::Invalid(format!("Q is {:?} but V is {:?}", q.0, v.0)));
        }
    }
    Ok(())
}

pub fn check_patterns(shape: &AttnShape, patterns: &[HeadPattern]) -> Result<()> {
    if patterns.len() != shape.heads {
        return Err(CudaError::Invalid(format!("{} patterns for {} heads", patterns.len(), shape.heads)));
    }
    for (h, p) in patterns.iter().enumerate() {
        if let HeadPattern::BlockSparse { k_b: 0 } = p {
            return Err(CudaError::Invalid(format!("head {h}: block-sparse k_b must be > 0")));
        }
    }
    Ok(())
}

/// Slot numbering of the sparse index (see core's index.rs).
pub fn slot_base(shape: &AttnShape) -> Vec<u32> {
    let mut out = Vec::with_capacity(shape.seqs.len() + 1);
    let mut acc = 0u32;
    for s in &shape.seqs {
        out.push(acc);
        acc += (shape.heads * s.row_blocks()) as u32;
    }
    out.push(acc);
    out
}

pub fn max_row_blocks(shape: &AttnShape) -> usize {
    shape.seqs.iter().map(|s| s.row_blocks()).max().unwrap_or(0)
}

pub fn max_kv(shape: &AttnShape) -> usize {
    shape.seqs.iter().map(|s| s.kv_len).max().unwrap_or(0)
}

/// The kernels' per-sequence table: `[q_start, kv_start, q_len, kv_len]` for each sequence.
pub fn seq_table(shape: &AttnShape) -> Vec<i32> {
    let mut seqs = Vec::with_capacity(4 * shape.seqs.len());
    for (b, s) in shape.seqs.iter().enumerate() {
        seqs.extend([shape.q_start(b) as i32, shape.kv_start(b) as i32, s.q_len as i32, s.kv_len as i32]);
    }
    seqs
}

/// Device copy of the per-launch metadata: the sequence table, the heads' kinds and A-shape
/// extents, the sequences' first slots, in one buffer (one upload per launch instead of five);
/// the accessors give each array's device address.
pub struct Meta {
    buf: CudaSlice<i32>,
    heads: usize,
    n_seqs: usize,
    pub n_slots: usize,
}

impl Meta {
    pub fn new(gpu: &Gpu, shape: &AttnShape, patterns: &[HeadPattern]) -> Result<Meta> {
        let cap = |x: usize| x.min(max_kv(shape) + 1) as i32;
        let seqs = seq_table(shape);
        // Offsets follow what is packed: one entry per pattern.
        let heads = patterns.len();
        // seqs | head_kind | head_init | head_local | slot_base
        let mut packed = Vec::with_capacity(seqs.len() + 3 * heads + shape.seqs.len() + 1);
        packed.extend_from_slice(&seqs);
        let (mut init, mut local) = (Vec::with_capacity(heads), Vec::with_capacity(heads));
        for p in patterns {
            let (k, i, l) = match *p {
                HeadPattern::Dense => (HEAD_DENSE, 0, 0),
                HeadPattern::AShape { n_init, n_local } => (HEAD_ASHAPE, cap(n_init), cap(n_local)),
                HeadPattern::VerticalSlash { .. }
                | HeadPattern::AdaptiveVs { .. }
                | HeadPattern::BlockSparse { .. } => (HEAD_INDEX, 0, 0),
            };
            packed.push(k);
            init.push(i);
            local.push(l);
        }
        packed.extend(init);
        packed.extend(local);
        let base = slot_base(shape);
        let n_slots = *base.last().unwrap_or(&0) as usize;
        // The kernels read slot_base as u32: the same bits.
        packed.extend(base.iter().map(|&b| b as i32));
        Ok(Meta { buf: gpu.upload(&packed)?, heads, n_seqs: shape.seqs.len(), n_slots })
    }

    fn at(&self, gpu: &Gpu, ints: usize) -> u64 {
        gpu.ptr(&self.buf) + (4 * ints) as u64
    }

    /// int[4] per sequence: q_start, kv_start, q_len, kv_len.
    pub fn seqs(&self, gpu: &Gpu) -> u64 {
        self.at(gpu, 0)
    }
    /// int per head: `HEAD_*`.
    pub fn head_kind(&self, gpu: &Gpu) -> u64 {
        self.at(gpu, 4 * self.n_seqs)
    }
    /// int per head: an A-shape head's sink tokens (0 otherwise).
    pub fn head_init(&self, gpu: &Gpu) -> u64 {
        self.at(gpu, 4 * self.n_seqs + self.heads)
    }
    /// int per head: an A-shape head's local window (0 otherwise).
    pub fn head_local(&self, gpu: &Gpu) -> u64 {
        self.at(gpu, 4 * self.n_seqs + 2 * self.heads)
    }
    /// u32 per sequence and one more: each sequence's first slot, then the slot count.
    pub fn slot_base(&self, gpu: &Gpu) -> u64 {
        self.at(gpu, 4 * self.n_seqs + 3 * self.heads)
    }
}

pub fn dtype_suffix(dtype: DType) -> &'static str {
    match dtype {
        DType::Bf16 => "bf16",
        DType::F16 => "f16",
        DType::F32 => "f32",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_past_the_kernels_bound_are_refused() {
        let at_bound = AttnShape::single(1, 1, 64, MAX_TOKENS);
        let elems = at_bound.q_elems();
        assert!(check_problem(&at_bound, (DType::Bf16, elems), (DType::Bf16, elems), None).is_ok());
        let past = AttnShape::single(1, 1, 64, MAX_TOKENS + 1);
        let elems = past.q_elems();
        let err = check_problem(&past, (DType::Bf16, elems), (DType::Bf16, elems), None).unwrap_err();
        assert!(err.to_string().contains(&MAX_TOKENS.to_string()), "{err}");
    }
}
