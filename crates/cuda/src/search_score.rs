//! Typed launcher of the search-scoring kernels (kernels/search_score.cu, built with every other
//! unit by build.rs): for one head's Q, K, V (bf16 on the device) and a CSR of masks, every mask's
//! kept attention mass and output error per row. What is scored and how the rows are summed is the
//! search crate's (`minference_search::gpu_score`).

use crate::context::{Arg, Gpu};
use crate::error::{CudaError, Result};
use crate::kernels::{HEAD_ASHAPE, HEAD_DENSE, HEAD_INDEX};
use crate::tensor::DeviceTensor;
use minference_core::{DType, TILE};

/// A `[n, head_dim]` slice of a bf16 device tensor, starting at element `offset`.
#[derive(Clone, Copy)]
pub struct HeadSlice<'a> {
    pub tensor: &'a DeviceTensor,
    pub offset: usize,
}

/// One head on the device: Q of the query head, K and V of its KV head.
#[derive(Clone, Copy)]
pub struct DeviceHead<'a> {
    pub q: HeadSlice<'a>,
    pub k: HeadSlice<'a>,
    pub v: HeadSlice<'a>,
    pub n: usize,
    pub head_dim: usize,
}

fn check_slice(name: &str, s: &HeadSlice, n: usize, d: usize) -> Result<()> {
    if s.tensor.dtype != DType::Bf16 {
        return Err(CudaError::UnsupportedDType(s.tensor.dtype));
    }
    if s.offset.checked_add(n * d).is_none_or(|end| end > s.tensor.len) {
        return Err(CudaError::Invalid(format!(
            "{name}: [{n}, {d}] at element {} does not fit a tensor of {} elements",
            s.offset, s.tensor.len
        )));
    }
    Ok(())
}

impl DeviceHead<'_> {
    /// The kernels take D = 64 or 128, 1 ..= i32::MAX rows, and bf16 slices inside their tensors.
    pub fn validate(&self) -> Result<()> {
        let (n, d) = (self.n, self.head_dim);
        if ![64, 128].contains(&d) {
            return Err(CudaError::UnsupportedHeadDim(d));
        }
        if n == 0 || n > i32::MAX as usize {
            return Err(CudaError::Invalid(format!("search scoring needs 1 ..= {} rows, got {n}", i32::MAX)));
        }
        check_slice("Q", &self.q, n, d)?;
        check_slice("K", &self.k, n, d)?;
        check_slice("V", &self.v, n, d)
    }
}

/// One mask of a [`MaskCsr`]. Dense and A-shape masks are analytic: their CSR rows stay empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    Dense,
    AShape { n_init: i32, n_local: i32 },
    Index,
}

/// Masks as CSR over (mask, 64-row block), like `minference_core::SparseIndex`: slot
/// `mask * blocks + block` holds the tile starts `tile_ptr[s]..tile_ptr[s + 1]` of `tile_start`
/// and the columns `col_ptr[s]..col_ptr[s + 1]` of `col_index`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskCsr {
    pub kinds: Vec<MaskKind>,
    pub blocks: usize,
    pub tile_ptr: Vec<i32>,
    pub tile_start: Vec<i32>,
    pub col_ptr: Vec<i32>,
    pub col_index: Vec<i32>,
}

impl MaskCsr {
    /// The kernels read every slot's range: the pointers must start at 0, never decrease and end
    /// at their array's length.
    fn validate(&self, n: usize) -> Result<()> {
        if self.blocks != n.div_ceil(TILE) {
            return Err(CudaError::Invalid(format!("a mask CSR of {} row blocks for {n} rows", self.blocks)));
        }
        let slots = self.kinds.len() * self.blocks + 1;
        for (name, ptr, len) in
            [("tile", &self.tile_ptr, self.tile_start.len()), ("column", &self.col_ptr, self.col_index.len())]
        {
            let ordered = ptr.first() == Some(&0) && ptr.windows(2).all(|w| w[0] <= w[1]);
            if ptr.len() != slots || !ordered || ptr.last().map(|&e| e as usize) != Some(len) {
                return Err(CudaError::Invalid(format!(
                    "the {name} pointers of a mask CSR are not {slots} ordered offsets into {len} entries"
                )));
            }
        }
        Ok(())
    }
}

/// Per (mask, row) results, `[masks, n]` each (rows before the first scored block are zero);
/// `err_sq`, `ref_sq` and `over` are empty unless the output was compared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowScores {
    pub mass: Vec<f32>,
    pub err_sq: Vec<f32>,
    pub ref_sq: Vec<f32>,
    pub over: Vec<f32>,
}

/// Scores every mask of `csr` on `head` from row block `first_block` on: per row the kept
/// probability mass and, with `want_output`, the squared error of the mask's normalised output
/// against the dense one, the dense output's square and the elements off by more than `threshold`.
pub fn score_rows(
    gpu: &Gpu,
    head: &DeviceHead,
    csr: &MaskCsr,
    first_block: usize,
    want_output: bool,
    threshold: f32,
) -> Result<RowScores> {
    head.validate()?;
    let (n, d) = (head.n, head.head_dim);
    if csr.kinds.is_empty() {
        return Ok(RowScores::default());
    }
    csr.validate(n)?;
    let blocks = csr.blocks;
    if first_block >= blocks {
        return Err(CudaError::Invalid(format!("first scored block {first_block} of {blocks}")));
    }
    let scored_blocks = (blocks - first_block) as u32;
    let c = csr.kinds.len();
    let elem = |s: &HeadSlice| s.tensor.ptr(gpu) + (s.offset * 2) as u64;
    let (q, k, v) = (elem(&head.q), elem(&head.k), elem(&head.v));
    let scale = 1.0 / (d as f32).sqrt();
    // Shared memory: Q and K/V rows [64][D + 1], probabilities [64][65] (f32), chunk keys [64].
    let smem = (2 * TILE * (d + 1) + TILE * 65) * 4 + TILE * 4;

    let lse = gpu.alloc_zeros::<f32>(n)?;
    let dense = gpu.alloc_zeros::<f32>(if want_output { n * d } else { 1 })?;
    let common = [Arg::I(n as i32), Arg::I(first_block as i32), Arg::F(scale)];
    let mut a = vec![Arg::P(q), Arg::P(k), Arg::P(gpu.ptr(&lse))];
    a.extend(common);
    gpu.launch(&format!("search_row_lse_d{d}"), (scored_blocks, 1, 1), 256, smem, &a)?;
    if want_output {
        let mut a = vec![Arg::P(q), Arg::P(k), Arg::P(v), Arg::P(gpu.ptr(&lse)), Arg::P(gpu.ptr(&dense))];
        a.extend(common);
        gpu.launch(&format!("search_dense_out_d{d}"), (scored_blocks, 1, 1), 256, smem, &a)?;
    }

    let (kinds, a_init, a_local) = kind_arrays(&csr.kinds);
    let up = |x: &[i32]| gpu.upload(if x.is_empty() { &[0][..] } else { x });
    let (kinds, a_init, a_local) = (up(&kinds)?, up(&a_init)?, up(&a_local)?);
    let (tile_ptr, tile_start) = (up(&csr.tile_ptr)?, up(&csr.tile_start)?);
    let (col_ptr, col_index) = (up(&csr.col_ptr)?, up(&csr.col_index)?);
    let outputs = if want_output { c * n } else { 1 };
    let out_mass = gpu.alloc_zeros::<f32>(c * n)?;
    let out_err = gpu.alloc_zeros::<f32>(outputs)?;
    let out_ref = gpu.alloc_zeros::<f32>(outputs)?;
    let out_over = gpu.alloc_zeros::<f32>(outputs)?;
    let a = [
        Arg::P(q),
        Arg::P(k),
        Arg::P(v),
        Arg::P(gpu.ptr(&lse)),
        Arg::P(gpu.ptr(&dense)),
        Arg::P(gpu.ptr(&kinds)),
        Arg::P(gpu.ptr(&a_init)),
        Arg::P(gpu.ptr(&a_local)),
        Arg::P(gpu.ptr(&tile_ptr)),
        Arg::P(gpu.ptr(&tile_start)),
        Arg::P(gpu.ptr(&col_ptr)),
        Arg::P(gpu.ptr(&col_index)),
        Arg::P(gpu.ptr(&out_mass)),
        Arg::P(gpu.ptr(&out_err)),
        Arg::P(gpu.ptr(&out_ref)),
        Arg::P(gpu.ptr(&out_over)),
        Arg::I(n as i32),
        Arg::I(blocks as i32),
        Arg::I(first_block as i32),
        Arg::I(want_output as i32),
        Arg::F(threshold),
        Arg::F(scale),
    ];
    let grid_y = u32::try_from(c)
        .ok()
        .filter(|&y| y <= 65535)
        .ok_or_else(|| CudaError::Invalid(format!("{c} masks exceed one launch (65535)")))?;
    gpu.launch(&format!("search_score_d{d}"), (scored_blocks, grid_y, 1), 256, smem, &a)?;

    let mass = gpu.download(&out_mass, c * n)?;
    if !want_output {
        return Ok(RowScores { mass, ..Default::default() });
    }
    Ok(RowScores {
        mass,
        err_sq: gpu.download(&out_err, c * n)?,
        ref_sq: gpu.download(&out_ref, c * n)?,
        over: gpu.download(&out_over, c * n)?,
    })
}

/// Per mask the kernels' head kind and A-shape settings.
fn kind_arrays(kinds: &[MaskKind]) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    let mut out = (Vec::with_capacity(kinds.len()), Vec::with_capacity(kinds.len()), Vec::with_capacity(kinds.len()));
    for k in kinds {
        let (kind, init, local) = match *k {
            MaskKind::Dense => (HEAD_DENSE, 0, 0),
            MaskKind::AShape { n_init, n_local } => (HEAD_ASHAPE, n_init, n_local),
            MaskKind::Index => (HEAD_INDEX, 0, 0),
        };
        out.0.push(kind);
        out.1.push(init);
        out.2.push(local);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_the_kernel_constants_with_their_settings() {
        let kinds = [MaskKind::Dense, MaskKind::Index, MaskKind::AShape { n_init: 4, n_local: 131 }];
        let (k, init, local) = kind_arrays(&kinds);
        assert_eq!(k, vec![HEAD_DENSE, HEAD_INDEX, HEAD_ASHAPE]);
        assert_eq!((init, local), (vec![0, 0, 4], vec![0, 0, 131]));
    }

    #[test]
    fn a_csr_the_kernels_would_read_past_is_refused() {
        let ok = MaskCsr {
            kinds: vec![MaskKind::Index],
            blocks: 2,
            tile_ptr: vec![0, 1, 3],
            tile_start: vec![0, 0, 64],
            col_ptr: vec![0, 0, 2],
            col_index: vec![3, 7],
        };
        assert!(ok.validate(100).is_ok());
        assert!(ok.validate(200).is_err(), "blocks must match the rows");
        let short = MaskCsr { tile_ptr: vec![0, 1], ..ok.clone() };
        let past_end = MaskCsr { col_ptr: vec![0, 0, 3], ..ok.clone() };
        let decreasing = MaskCsr { tile_ptr: vec![0, 2, 1], tile_start: vec![0], ..ok.clone() };
        for bad in [short, past_end, decreasing] {
            assert!(bad.validate(100).is_err(), "{bad:?}");
        }
    }
}
