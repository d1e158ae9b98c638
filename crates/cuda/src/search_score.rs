//! Candidate scoring of the offline pattern search on the GPU (kernels/search_score.cu): for one
//! head's Q, K, V (bf16 on the device) and a list of masks, every mask's kept attention mass and
//! output error over the rows from a floor on, summed per mask in row order.
//!
//! Masks are packed on the host as CSR over (mask, 64-row block) like [`minference_core::SparseIndex`]:
//! dense and A-shape masks are analytic and have empty rows.

use crate::context::{Arg, Gpu};
use crate::error::{CudaError, Result};
use crate::kernels::{HEAD_ASHAPE, HEAD_DENSE, HEAD_INDEX};
use crate::tensor::DeviceTensor;
use minference_core::{DType, RowBlockIndex, TILE};

/// One candidate's kernel mask (the search crate's `HeadMask`, borrowed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScoreMask<'a> {
    Dense,
    AShape {
        n_init: usize,
        n_local: usize,
    },
    /// Tiles and gathered columns per 64-row block; missing blocks keep nothing.
    Index(&'a [RowBlockIndex]),
}

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

/// What to score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreRequest {
    /// Rows before this are not scored.
    pub floor: usize,
    /// Also compare each mask's normalised output with the dense output.
    pub want_output: bool,
    /// `|O_mask − O_dense|` above this counts as one element over.
    pub threshold: f32,
}

/// One mask's sums over the scored rows (the search crate's `Tally`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreSums {
    pub rows: u64,
    /// Σ over rows of the kept probability mass.
    pub mass: f64,
    /// Σ ‖O_mask − O_dense‖² (0 without `want_output`).
    pub err_sq: f64,
    /// Σ ‖O_dense‖² (0 without `want_output`).
    pub ref_sq: f64,
    /// Elements with `|O_mask − O_dense| > threshold` (0 without `want_output`).
    pub over: u64,
}

/// Host-side CSR of a mask list: per mask a kind and A-shape settings, per (mask, row block) slot
/// a range of tile starts and of columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedMasks {
    pub kinds: Vec<i32>,
    pub a_init: Vec<i32>,
    pub a_local: Vec<i32>,
    /// `masks * blocks + 1` entries; slot `mask * blocks + block`.
    pub tile_ptr: Vec<i32>,
    pub tile_start: Vec<i32>,
    pub col_ptr: Vec<i32>,
    pub col_index: Vec<i32>,
    pub blocks: usize,
}

impl PackedMasks {
    /// Packs `masks` for a head of `n` rows. Index rows past the head's blocks are an error; A-shape
    /// settings are clamped to `n + 1` (larger ones keep the same entries).
    pub fn pack(masks: &[ScoreMask], n: usize) -> Result<PackedMasks> {
        let blocks = n.div_ceil(TILE);
        let cap = |x: usize| x.min(n + 1) as i32;
        let mut p = PackedMasks { blocks, ..Default::default() };
        p.tile_ptr.push(0);
        p.col_ptr.push(0);
        for m in masks {
            let (kind, init, local) = match *m {
                ScoreMask::Dense => (HEAD_DENSE, 0, 0),
                ScoreMask::AShape { n_init, n_local } => (HEAD_ASHAPE, cap(n_init), cap(n_local)),
                ScoreMask::Index(rows) => {
                    if rows.len() > blocks {
                        return Err(CudaError::Invalid(format!(
                            "a mask has {} row blocks, the head has {blocks}",
                            rows.len()
                        )));
                    }
                    (HEAD_INDEX, 0, 0)
                }
            };
            p.kinds.push(kind);
            p.a_init.push(init);
            p.a_local.push(local);
            for b in 0..blocks {
                if let ScoreMask::Index(rows) = m {
                    if let Some(r) = rows.get(b) {
                        p.tile_start.extend_from_slice(&r.tiles);
                        p.col_index.extend_from_slice(&r.columns);
                    }
                }
                p.tile_ptr.push(to_i32(p.tile_start.len())?);
                p.col_ptr.push(to_i32(p.col_index.len())?);
            }
        }
        Ok(p)
    }

    pub fn masks(&self) -> usize {
        self.kinds.len()
    }
}

fn to_i32(x: usize) -> Result<i32> {
    i32::try_from(x).map_err(|_| CudaError::Invalid(format!("{x} index entries exceed the int32 range")))
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

/// Scores every mask of `masks` on `head`: per mask the sums over rows `floor..n`.
pub fn score_masks(gpu: &Gpu, head: &DeviceHead, masks: &[ScoreMask], req: &ScoreRequest) -> Result<Vec<ScoreSums>> {
    let (n, d) = (head.n, head.head_dim);
    if ![64, 128].contains(&d) {
        return Err(CudaError::UnsupportedHeadDim(d));
    }
    if n == 0 || n > i32::MAX as usize {
        return Err(CudaError::Invalid(format!("search scoring needs 1 ..= {} rows, got {n}", i32::MAX)));
    }
    check_slice("Q", &head.q, n, d)?;
    check_slice("K", &head.k, n, d)?;
    check_slice("V", &head.v, n, d)?;
    if masks.is_empty() {
        return Ok(Vec::new());
    }
    let packed = PackedMasks::pack(masks, n)?;
    let floor = req.floor.min(n - 1);
    let blocks = packed.blocks;
    let first_block = floor / TILE;
    let scored_blocks = (blocks - first_block) as u32;
    let c = packed.masks();
    let elem = |s: &HeadSlice| s.tensor.ptr(gpu) + (s.offset * 2) as u64;
    let (q, k, v) = (elem(&head.q), elem(&head.k), elem(&head.v));
    let scale = 1.0 / (d as f32).sqrt();
    // Shared memory: Q and K/V rows [64][D + 1], probabilities [64][65] (f32), chunk keys [64].
    let smem = (2 * TILE * (d + 1) + TILE * 65) * 4 + TILE * 4;

    let lse = gpu.alloc_zeros::<f32>(n)?;
    let dense = gpu.alloc_zeros::<f32>(if req.want_output { n * d } else { 1 })?;
    let common = [Arg::I(n as i32), Arg::I(first_block as i32), Arg::F(scale)];
    let mut a = vec![Arg::P(q), Arg::P(k), Arg::P(gpu.ptr(&lse))];
    a.extend(common);
    gpu.launch(&format!("search_row_lse_d{d}"), (scored_blocks, 1, 1), 256, smem, &a)?;
    if req.want_output {
        let mut a = vec![Arg::P(q), Arg::P(k), Arg::P(v), Arg::P(gpu.ptr(&lse)), Arg::P(gpu.ptr(&dense))];
        a.extend(common);
        gpu.launch(&format!("search_dense_out_d{d}"), (scored_blocks, 1, 1), 256, smem, &a)?;
    }

    let up = |x: &[i32]| gpu.upload(if x.is_empty() { &[0][..] } else { x });
    let (kinds, a_init, a_local) = (up(&packed.kinds)?, up(&packed.a_init)?, up(&packed.a_local)?);
    let (tile_ptr, tile_start) = (up(&packed.tile_ptr)?, up(&packed.tile_start)?);
    let (col_ptr, col_index) = (up(&packed.col_ptr)?, up(&packed.col_index)?);
    let outputs = if req.want_output { c * n } else { 1 };
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
        Arg::I(req.want_output as i32),
        Arg::F(req.threshold),
        Arg::F(scale),
    ];
    let grid_y = u32::try_from(c)
        .ok()
        .filter(|&y| y <= 65535)
        .ok_or_else(|| CudaError::Invalid(format!("{c} masks exceed one launch (65535)")))?;
    gpu.launch(&format!("search_score_d{d}"), (scored_blocks, grid_y, 1), 256, smem, &a)?;

    let mass = gpu.download(&out_mass, c * n)?;
    let (err, refs, over) = if req.want_output {
        (gpu.download(&out_err, c * n)?, gpu.download(&out_ref, c * n)?, gpu.download(&out_over, c * n)?)
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };
    Ok((0..c)
        .map(|m| {
            let rows = m * n + floor..(m + 1) * n;
            let mut s = ScoreSums { rows: (n - floor) as u64, ..Default::default() };
            s.mass = mass[rows.clone()].iter().map(|&x| x as f64).sum();
            if req.want_output {
                s.err_sq = err[rows.clone()].iter().map(|&x| x as f64).sum();
                s.ref_sq = refs[rows.clone()].iter().map(|&x| x as f64).sum();
                s.over = over[rows].iter().map(|&x| x as u64).sum();
            }
            s
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tiles: &[i32], columns: &[i32]) -> RowBlockIndex {
        RowBlockIndex { tiles: tiles.to_vec(), columns: columns.to_vec() }
    }

    #[test]
    fn packing_lays_out_one_slot_per_mask_and_block() {
        let idx = vec![row(&[0], &[]), row(&[0, 64], &[3, 7])];
        let masks = [ScoreMask::Dense, ScoreMask::Index(&idx), ScoreMask::AShape { n_init: 4, n_local: 1 << 40 }];
        let p = PackedMasks::pack(&masks, 130).unwrap();
        assert_eq!(p.blocks, 3);
        assert_eq!(p.kinds, vec![HEAD_DENSE, HEAD_INDEX, HEAD_ASHAPE]);
        assert_eq!(p.a_init, vec![0, 0, 4]);
        assert_eq!(p.a_local, vec![0, 0, 131], "huge windows are clamped to n + 1");
        // Slots 0..3 dense (empty), 3..6 the index (third block missing = empty), 6..9 A-shape.
        assert_eq!(p.tile_ptr, vec![0, 0, 0, 0, 1, 3, 3, 3, 3, 3]);
        assert_eq!(p.tile_start, vec![0, 0, 64]);
        assert_eq!(p.col_ptr, vec![0, 0, 0, 0, 0, 2, 2, 2, 2, 2]);
        assert_eq!(p.col_index, vec![3, 7]);
    }

    #[test]
    fn packing_rejects_an_index_longer_than_the_head() {
        let idx = vec![RowBlockIndex::default(); 3];
        assert!(PackedMasks::pack(&[ScoreMask::Index(&idx)], 128).is_err());
        assert!(PackedMasks::pack(&[ScoreMask::Index(&idx)], 129).is_ok());
        assert_eq!(PackedMasks::pack(&[], 10).unwrap().tile_ptr, vec![0]);
    }
}
