//! Per-head pattern dispatch for sparse attention, and validation of a `SparseIndex` against a shape
//! (so that a malformed index is an error, not an out-of-bounds panic).

use crate::attention::{BlockId, TilePlan};
use crate::error::{CpuError, CpuResult};
use crate::tiles::{AShapeMask, RowSpan, TileIter};
use minference_core::{AttnShape, HeadPattern, SparseIndex, TILE};

pub(crate) struct SparsePlan<'a> {
    pub shape: &'a AttnShape,
    pub patterns: &'a [HeadPattern],
    pub index: &'a SparseIndex,
}

impl SparsePlan<'_> {
    fn slot(&self, id: BlockId) -> usize {
        self.index.slot(self.shape, id.b, id.h, id.m)
    }
}

impl TilePlan for SparsePlan<'_> {
    fn tiles(&self, id: BlockId, span: RowSpan) -> TileIter<'_> {
        match self.patterns[id.h] {
            HeadPattern::Dense => TileIter::dense(span),
            HeadPattern::AShape { n_init, n_local } => TileIter::ashape(span, AShapeMask { n_init, n_local }),
            HeadPattern::VerticalSlash { .. } | HeadPattern::AdaptiveVs { .. } | HeadPattern::BlockSparse { .. } => {
                let slot = self.slot(id);
                TileIter::index(self.index.tiles(slot), self.index.columns(slot), span.kv_len)
            }
        }
    }

    fn cost(&self, id: BlockId, span: RowSpan) -> usize {
        match self.patterns[id.h] {
            HeadPattern::Dense => span.last / TILE + 1,
            HeadPattern::AShape { n_init, n_local } => {
                (n_init.min(span.last + 1) + n_local.min(span.last + 1)) / TILE + 2
            }
            _ => {
                let slot = self.slot(id);
                self.index.tiles(slot).len() + self.index.columns(slot).len().div_ceil(TILE)
            }
        }
    }
}

/// Checks the CSR structure of `index` against `shape`, and that every column lies in `0..kv_len`.
/// Tile starts may be any i32: keys outside `0..kv_len` are masked.
pub(crate) fn check_index(shape: &AttnShape, index: &SparseIndex) -> CpuResult<()> {
    let bad = |msg: String| Err(CpuError::InvalidIndex(msg));
    if index.heads != shape.heads {
        return bad(format!("index has {} heads, shape {}", index.heads, shape.heads));
    }
    if index.slot_base.len() != shape.seqs.len() + 1 {
        return bad(format!("slot_base has {} entries for {} sequences", index.slot_base.len(), shape.seqs.len()));
    }
    let mut acc = 0usize;
    for (b, seq) in shape.seqs.iter().enumerate() {
        if index.slot_base[b] as usize != acc {
            return bad(format!("slot_base[{b}] = {}, expected {acc}", index.slot_base[b]));
        }
        acc += shape.heads * seq.row_blocks();
    }
    if index.slot_base[shape.seqs.len()] as usize != acc {
        return bad("last slot_base entry is not the slot count".into());
    }
    check_ptr("tile_ptr", &index.tile_ptr, acc, index.tile_start.len())?;
    check_ptr("col_ptr", &index.col_ptr, acc, index.col_index.len())?;
    for (b, seq) in shape.seqs.iter().enumerate() {
        let lo = index.slot_base[b] as usize;
        let hi = index.slot_base[b + 1] as usize;
        let cols = &index.col_index[index.col_ptr[lo] as usize..index.col_ptr[hi] as usize];
        if let Some(c) = cols.iter().find(|&&c| c < 0 || c as usize >= seq.kv_len) {
            return bad(format!("sequence {b}: column {c} outside 0..{}", seq.kv_len));
        }
    }
    Ok(())
}

fn check_ptr(name: &str, ptr: &[u32], slots: usize, entries: usize) -> CpuResult<()> {
    if ptr.len() != slots + 1 || ptr[0] != 0 || ptr[slots] as usize != entries || ptr.windows(2).any(|w| w[0] > w[1]) {
        return Err(CpuError::InvalidIndex(format!(
            "{name} is not a CSR row pointer for {slots} slots and {entries} entries"
        )));
    }
    Ok(())
}
