//! The sparse index every attention backend consumes: per (sequence, head, row block), a list of
//! 64-wide key tiles (arbitrary, not necessarily 64-aligned starts) and a list of gathered key
//! columns, both in CSR form so that no row pays for another row's capacity (spec §2.7).
//!
//! Slot numbering: `slot = slot_base[b] + h * row_blocks(b) + m` for sequence `b`, head `h`, row block
//! `m`. Key positions are local to the sequence (`0..kv_len`).
//!
//! Kernel semantics (shared by CPU and CUDA):
//! * tile `t` covers keys `tile_start[t] .. tile_start[t] + 64`, masked element-wise by
//!   `key < kv_len` and causality `key <= row + offset`;
//! * every column of a row block lies strictly before the block's first absolute position, so
//!   columns need no causal mask; they are processed 64 at a time (PIT-style gather);
//! * tiles and columns of a slot are disjoint, so one online softmax over both is exact.

use crate::error::{CoreError, Result};
use crate::shape::AttnShape;
use serde::{Deserialize, Serialize};

/// The Vertical-Slash choice of one (sequence, head): `verticals` ascending key columns,
/// `slashes` descending diagonal distances `d = position - key` (spec §1.3.3 order).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VsSelection {
    pub verticals: Vec<u32>,
    pub slashes: Vec<u32>,
}

/// Tiles and columns of one (sequence, head, row block).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RowBlockIndex {
    pub tiles: Vec<i32>,
    pub columns: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SparseIndex {
    pub heads: usize,
    /// Per sequence: first slot, plus one final entry = total slots.
    pub slot_base: Vec<u32>,
    /// `tile_ptr[s]..tile_ptr[s+1]` are slot `s`'s entries of `tile_start`.
    pub tile_ptr: Vec<u32>,
    pub tile_start: Vec<i32>,
    pub col_ptr: Vec<u32>,
    pub col_index: Vec<i32>,
}

impl SparseIndex {
    /// An index with no tiles and no columns for every slot of `shape`.
    pub fn empty(shape: &AttnShape) -> Self {
        let mut slot_base = Vec::with_capacity(shape.seqs.len() + 1);
        let mut acc = 0u32;
        for s in &shape.seqs {
            slot_base.push(acc);
            acc += (shape.heads * s.row_blocks()) as u32;
        }
        slot_base.push(acc);
        SparseIndex {
            heads: shape.heads,
            slot_base,
            tile_ptr: vec![0; acc as usize + 1],
            tile_start: Vec::new(),
            col_ptr: vec![0; acc as usize + 1],
            col_index: Vec::new(),
        }
    }

    pub fn slots(&self) -> usize {
        self.tile_ptr.len() - 1
    }

    pub fn slot(&self, shape: &AttnShape, b: usize, h: usize, m: usize) -> usize {
        self.slot_base[b] as usize + h * shape.seqs[b].row_blocks() + m
    }

    pub fn tiles(&self, slot: usize) -> &[i32] {
        &self.tile_start[self.tile_ptr[slot] as usize..self.tile_ptr[slot + 1] as usize]
    }

    pub fn columns(&self, slot: usize) -> &[i32] {
        &self.col_index[self.col_ptr[slot] as usize..self.col_ptr[slot + 1] as usize]
    }

    /// Builds the CSR arrays from per-slot lists (in slot order).
    pub fn from_slots(shape: &AttnShape, rows: Vec<RowBlockIndex>) -> Result<Self> {
        let mut idx = SparseIndex::empty(shape);
        if rows.len() != idx.slots() {
            return Err(CoreError::Shape(format!("{} row-block entries for {} slots", rows.len(), idx.slots())));
        }
        let mut tp = 0usize;
        let mut cp = 0usize;
        for (s, r) in rows.into_iter().enumerate() {
            tp += r.tiles.len();
            cp += r.columns.len();
            if tp > u32::MAX as usize || cp > u32::MAX as usize {
                return Err(CoreError::Overflow(format!("sparse index exceeds 2^32 entries at slot {s}")));
            }
            idx.tile_start.extend_from_slice(&r.tiles);
            idx.col_index.extend_from_slice(&r.columns);
            idx.tile_ptr[s + 1] = tp as u32;
            idx.col_ptr[s + 1] = cp as u32;
        }
        Ok(idx)
    }

    /// Replaces the entries of one head of one sequence (other slots untouched).
    pub fn set_head(&mut self, shape: &AttnShape, b: usize, h: usize, rows: &[RowBlockIndex]) -> Result<()> {
        let mut all: Vec<RowBlockIndex> = (0..self.slots())
            .map(|s| RowBlockIndex { tiles: self.tiles(s).to_vec(), columns: self.columns(s).to_vec() })
            .collect();
        let base = self.slot(shape, b, h, 0);
        for (m, r) in rows.iter().enumerate() {
            all[base + m] = r.clone();
        }
        *self = SparseIndex::from_slots(shape, all)?;
        Ok(())
    }

    /// Bytes the index occupies (spec §8 item 30).
    pub fn bytes(&self) -> usize {
        4 * (self.slot_base.len()
            + self.tile_ptr.len()
            + self.tile_start.len()
            + self.col_ptr.len()
            + self.col_index.len())
    }
}
