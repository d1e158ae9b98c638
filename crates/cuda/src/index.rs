//! The CSR sparse index on the device: upload (validated, since the kernel gathers K/V rows at the
//! column indices), download, the sizes, and the pairs it makes the kernels compute.

use crate::context::{Arg, Gpu};
use crate::error::{CudaError, Result};
use crate::layout::{max_row_blocks, seq_table, slot_base};
use cudarc::driver::CudaSlice;
use minference_core::{AttnShape, SparseIndex};

pub struct DeviceIndex {
    pub(crate) tile_ptr: CudaSlice<u32>,
    pub(crate) tile_start: CudaSlice<i32>,
    pub(crate) col_ptr: CudaSlice<u32>,
    pub(crate) col_index: CudaSlice<i32>,
    pub n_slots: usize,
    pub n_tiles: usize,
    pub n_cols: usize,
}

impl DeviceIndex {
    /// Validates `index` against `shape` and copies it to the device.
    pub fn upload(gpu: &Gpu, shape: &AttnShape, index: &SparseIndex) -> Result<DeviceIndex> {
        validate(shape, index)?;
        Ok(DeviceIndex {
            tile_ptr: gpu.upload(&index.tile_ptr)?,
            tile_start: gpu.upload(&index.tile_start)?,
            col_ptr: gpu.upload(&index.col_ptr)?,
            col_index: gpu.upload(&index.col_index)?,
            n_slots: index.slots(),
            n_tiles: index.tile_start.len(),
            n_cols: index.col_index.len(),
        })
    }

    pub fn download(&self, gpu: &Gpu, shape: &AttnShape) -> Result<SparseIndex> {
        Ok(SparseIndex {
            heads: shape.heads,
            slot_base: slot_base(shape),
            tile_ptr: gpu.download(&self.tile_ptr, self.n_slots + 1)?,
            tile_start: gpu.download(&self.tile_start, self.n_tiles)?,
            col_ptr: gpu.download(&self.col_ptr, self.n_slots + 1)?,
            col_index: gpu.download(&self.col_index, self.n_cols)?,
        })
    }

    /// Only the two row pointers, `tile_ptr` and `col_ptr` (`n_slots + 1` entries each): the tiles
    /// and columns of every slot, without copying the (large) tile starts and column indices.
    pub fn download_row_pointers(&self, gpu: &Gpu) -> Result<(Vec<u32>, Vec<u32>)> {
        Ok((gpu.download(&self.tile_ptr, self.n_slots + 1)?, gpu.download(&self.col_ptr, self.n_slots + 1)?))
    }

    /// Causal `(row, key)` pairs the kernels compute under this index, per head of `shape` (core's
    /// `index_head_coverage` entries, summed over the sequences), counted on the device: only
    /// `heads` numbers come back. Heads whose slots are empty (dense, A-shape) get 0.
    pub fn entries_per_head(&self, gpu: &Gpu, shape: &AttnShape) -> Result<Vec<u64>> {
        let seqs = gpu.upload(&seq_table(shape))?;
        let base = gpu.upload(&slot_base(shape))?;
        let entries = gpu.alloc_zeros::<u64>(shape.heads)?;
        let row_blocks = max_row_blocks(shape);
        gpu.launch(
            "index_entries",
            (row_blocks.div_ceil(8).max(1) as u32, shape.heads as u32, shape.seqs.len() as u32),
            256,
            0,
            &[
                Arg::P(gpu.ptr(&seqs)),
                Arg::P(gpu.ptr(&base)),
                Arg::P(gpu.ptr(&self.tile_ptr)),
                Arg::P(gpu.ptr(&self.tile_start)),
                Arg::P(gpu.ptr(&self.col_ptr)),
                Arg::P(gpu.ptr(&self.col_index)),
                Arg::P(gpu.ptr(&entries)),
            ],
        )?;
        gpu.download(&entries, shape.heads)
    }

    /// Bytes of the four CSR arrays.
    pub fn bytes(&self) -> usize {
        4 * (2 * (self.n_slots + 1) + self.n_tiles + self.n_cols)
    }
}

fn validate(shape: &AttnShape, index: &SparseIndex) -> Result<()> {
    let bad = |m: String| Err(CudaError::Invalid(format!("sparse index: {m}")));
    let base = slot_base(shape);
    if index.slot_base != base || index.heads != shape.heads {
        return bad("slot_base / heads do not match the shape".into());
    }
    let slots = *base.last().unwrap_or(&0) as usize;
    if index.tile_ptr.len() != slots + 1 || index.col_ptr.len() != slots + 1 {
        return bad(format!("tile_ptr/col_ptr must have {} entries", slots + 1));
    }
    for (name, ptr, len) in
        [("tile_ptr", &index.tile_ptr, index.tile_start.len()), ("col_ptr", &index.col_ptr, index.col_index.len())]
    {
        if ptr[0] != 0 || ptr.windows(2).any(|w| w[0] > w[1]) || ptr[slots] as usize != len {
            return bad(format!("{name} must start at 0, not decrease, and end at {len}"));
        }
    }
    for (b, seq) in shape.seqs.iter().enumerate() {
        for s in base[b] as usize..base[b + 1] as usize {
            let cols = &index.col_index[index.col_ptr[s] as usize..index.col_ptr[s + 1] as usize];
            if let Some(&c) = cols.iter().find(|&&c| c < 0 || c as usize >= seq.kv_len) {
                return bad(format!("column {c} of slot {s} outside 0..{}", seq.kv_len));
            }
            // The Hopper planner merges a block's tiles as ascending, disjoint key ranges (the
            // spec's block_offset order); other orders would drop keys without an error.
            let tiles = &index.tile_start[index.tile_ptr[s] as usize..index.tile_ptr[s + 1] as usize];
            if let Some(&t) = tiles.iter().find(|&&t| t < 0 || t as usize >= seq.kv_len) {
                return bad(format!("tile start {t} of slot {s} outside 0..{}", seq.kv_len));
            }
            if let Some(w) = tiles.windows(2).find(|w| i64::from(w[1]) < i64::from(w[0]) + 64) {
                return bad(format!(
                    "tiles of slot {s} must ascend by at least 64 keys (disjoint 64-key tiles), got {} then {}",
                    w[0], w[1]
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;
    use minference_core::{AttnShape, RowBlockIndex, SparseIndex};

    /// One head of 130 rows (3 row blocks); block 2 gets `tiles`, the others one tile each.
    fn index_with(tiles: Vec<i32>) -> (AttnShape, SparseIndex) {
        let shape = AttnShape::single(1, 1, 64, 130);
        let rows = vec![
            RowBlockIndex { tiles: vec![0], columns: vec![] },
            RowBlockIndex { tiles: vec![64], columns: vec![3] },
            RowBlockIndex { tiles, columns: vec![] },
        ];
        let index = SparseIndex::from_slots(&shape, rows).expect("index");
        (shape, index)
    }

    #[test]
    fn ascending_disjoint_tiles_pass() {
        for tiles in [vec![], vec![5], vec![0, 64], vec![1, 65, 129]] {
            let (shape, index) = index_with(tiles.clone());
            assert!(validate(&shape, &index).is_ok(), "{tiles:?}");
        }
    }

    #[test]
    fn unordered_overlapping_or_out_of_range_tiles_are_errors() {
        for (tiles, says) in [
            (vec![64, 0], "ascend"),
            (vec![0, 63], "ascend"),
            (vec![10, 10], "ascend"),
            (vec![-1], "outside"),
            (vec![130], "outside"),
        ] {
            let (shape, index) = index_with(tiles.clone());
            let err = validate(&shape, &index).expect_err("invalid tiles").to_string();
            assert!(err.contains(says) && err.contains("slot 2"), "{tiles:?}: {err}");
        }
    }
}
