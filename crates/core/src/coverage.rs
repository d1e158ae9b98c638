//! Coverage accounting for one head: how many causal `(row, key)` pairs the kernel computes and how
//! much work it does to get them. Cost is `O(tiles + columns)` per row block (closed-form counts per
//! tile), never `O(N²)`.
//!
//! Definitions (all per head, per sequence):
//! * `entries`: pairs `(row, key)` with `key <= pos(row)`, `key < kv_len` that the kernel computes,
//!   i.e. pairs where [`crate::mask::kernel_mask_keep`] is true (tiles and columns are assumed
//!   disjoint, as the index builders guarantee).
//! * `causal`: all causal pairs ([`crate::shape::causal_entries`]); `density = entries / causal`.
//! * `tiles64`: 64×64 tiles the kernel visits. VS/BS: the index's tiles, one per entry and row
//!   block. Dense: the 64-aligned key tiles up to each row block's last position. A-shape: the sink
//!   range and the window range walked in 64-wide steps from their starts. Partial tiles (past
//!   `kv_len` or in the last, partial row block) count as whole tiles.
//! * `column_strips`: gathered columns summed over row blocks; each is a 64-row × 1-key strip (the
//!   paper's FLOP unit for vertical lines).
//! * `gather_groups`: `Σ ceil(columns / 64)` over row blocks: the 64×64 MMA tiles the gather phase
//!   really executes.
//! * `kernel_flops(D) = 4·D·64·64·(tiles64 + gather_groups)` (QKᵀ and PV, 2 FLOPs per MAC), the
//!   work as executed; `strip_flops(D) = 4·D·(64·64·tiles64 + 64·column_strips)`, the paper's count.

use crate::ashape::{ashape_key_ranges, ashape_row_count};
use crate::error::{CoreError, Result};
use crate::index::{RowBlockIndex, SparseIndex};
use crate::pattern::{HeadPattern, TILE};
use crate::shape::{causal_entries, AttnShape, SeqLen};

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Coverage {
    pub entries: u64,
    pub causal: u64,
    pub tiles64: u64,
    pub column_strips: u64,
    pub gather_groups: u64,
}

impl Coverage {
    /// Fraction of the causal pairs the kernel computes (0 when there are none).
    pub fn density(&self) -> f64 {
        if self.causal == 0 {
            0.0
        } else {
            self.entries as f64 / self.causal as f64
        }
    }
    /// FLOPs as the kernel executes them (64×64 per tile and per 64-column gather group).
    pub fn kernel_flops(&self, head_dim: usize) -> f64 {
        4.0 * head_dim as f64 * (TILE * TILE) as f64 * (self.tiles64 + self.gather_groups) as f64
    }
    /// FLOPs with verticals counted as 64×1 strips (paper Fig. 3c convention).
    pub fn strip_flops(&self, head_dim: usize) -> f64 {
        4.0 * head_dim as f64 * ((TILE * TILE) as f64 * self.tiles64 as f64 + TILE as f64 * self.column_strips as f64)
    }
    /// Sums two accountings (e.g. over heads or sequences).
    pub fn add(&mut self, other: &Coverage) {
        self.entries += other.entries;
        self.causal += other.causal;
        self.tiles64 += other.tiles64;
        self.column_strips += other.column_strips;
        self.gather_groups += other.gather_groups;
    }
}

/// Coverage of one head from its per-row-block index entries (`rows` is ignored for dense and
/// A-shape heads, and must have one entry per row block for VS/BS heads).
pub fn head_coverage(pattern: &HeadPattern, rows: &[RowBlockIndex], seq: SeqLen) -> Result<Coverage> {
    let needs_rows = pattern.reads_index();
    if needs_rows && rows.len() != seq.row_blocks() {
        return Err(CoreError::Shape(format!("{} row-block entries for {} row blocks", rows.len(), seq.row_blocks())));
    }
    head_coverage_with(pattern, seq, |m| rows.get(m).map_or((&[][..], &[][..]), |r| (&r.tiles[..], &r.columns[..])))
}

/// Coverage of head `h` of sequence `b` read from a CSR [`SparseIndex`].
pub fn index_head_coverage(
    pattern: &HeadPattern,
    index: &SparseIndex,
    shape: &AttnShape,
    b: usize,
    h: usize,
) -> Result<Coverage> {
    if b >= shape.seqs.len() || h >= shape.heads || index.slot_base.len() != shape.seqs.len() + 1 {
        return Err(CoreError::Shape(format!("sequence {b} / head {h} not in the index")));
    }
    let slots = index.slots();
    if index.slot(shape, b, h, shape.seqs[b].row_blocks()) > slots {
        return Err(CoreError::Shape("index has fewer slots than the shape".into()));
    }
    head_coverage_with(pattern, shape.seqs[b], |m| {
        let s = index.slot(shape, b, h, m);
        (index.tiles(s), index.columns(s))
    })
}

/// Coverage with the row block's `(tiles, columns)` supplied by `row_block(m)`.
pub fn head_coverage_with<'a>(
    pattern: &HeadPattern,
    seq: SeqLen,
    row_block: impl Fn(usize) -> (&'a [i32], &'a [i32]),
) -> Result<Coverage> {
    if seq.q_len == 0 || seq.q_len > seq.kv_len {
        return Err(CoreError::Shape(format!("need 0 < q_len <= kv_len, got {} / {}", seq.q_len, seq.kv_len)));
    }
    let kv = seq.kv_len as i64;
    let mut cov = Coverage { causal: causal_entries(&seq), ..Default::default() };
    for m in 0..seq.row_blocks() {
        let p0 = (seq.offset() + TILE * m) as i64;
        let p1 = (seq.offset() + (TILE * m + TILE).min(seq.q_len)) as i64 - 1;
        match *pattern {
            HeadPattern::Dense => {
                cov.entries += pairs_in_range(p0, p1, 0, kv);
                cov.tiles64 += (p1 / TILE as i64 + 1) as u64;
            }
            HeadPattern::AShape { n_init, n_local } => {
                cov.entries += (p0..=p1).map(|p| ashape_row_count(p as usize, n_init, n_local)).sum::<u64>();
                for (a, b) in ashape_key_ranges(p0 as usize, p1 as usize, n_init, n_local, seq.kv_len) {
                    cov.tiles64 += (b - a).div_ceil(TILE) as u64;
                }
            }
            HeadPattern::VerticalSlash { .. } | HeadPattern::AdaptiveVs { .. } | HeadPattern::BlockSparse { .. } => {
                let (tiles, columns) = row_block(m);
                for &t in tiles {
                    let t = t as i64;
                    cov.entries += pairs_in_range(p0, p1, t.max(0), (t + TILE as i64).min(kv));
                }
                for &c in columns {
                    cov.entries += pairs_in_range(p0, p1, c as i64, (c as i64 + 1).min(kv));
                }
                cov.tiles64 += tiles.len() as u64;
                cov.column_strips += columns.len() as u64;
                cov.gather_groups += columns.len().div_ceil(TILE) as u64;
            }
        }
    }
    Ok(cov)
}

/// `Σ_{p = p0..=p1} |{ key ∈ [a, b) : key <= p }|` in closed form.
pub fn pairs_in_range(p0: i64, p1: i64, a: i64, b: i64) -> u64 {
    if a >= b || p1 < p0 || p1 < a {
        return 0;
    }
    let mut total: i128 = 0;
    // Rows with a <= p < b see p + 1 - a keys of the range.
    let (lo, hi) = (p0.max(a), p1.min(b - 1));
    if lo <= hi {
        let (first, last, count) = ((lo + 1 - a) as i128, (hi + 1 - a) as i128, (hi - lo + 1) as i128);
        total += (first + last) * count / 2;
    }
    // Rows with p >= b see the whole range.
    let lo = p0.max(b);
    if lo <= p1 {
        total += (p1 - lo + 1) as i128 * (b - a) as i128;
    }
    total as u64
}

/// Mean over rows of the attention probability mass the mask keeps.
///
/// `prob_rows` holds `positions.len()` rows of `kv_len` probabilities each (row-major); row `r` sits
/// at absolute position `positions[r]`; `keep(pos, key)` is the mask (e.g. a closure over
/// [`crate::mask::kernel_mask_keep`]).
pub fn attention_recall(prob_rows: &[f32], positions: &[usize], keep: impl Fn(usize, usize) -> bool) -> Result<f64> {
    if positions.is_empty() || !prob_rows.len().is_multiple_of(positions.len()) {
        return Err(CoreError::Shape(format!(
            "{} probabilities do not split into {} rows",
            prob_rows.len(),
            positions.len()
        )));
    }
    let kv_len = prob_rows.len() / positions.len();
    let total: f64 = positions
        .iter()
        .zip(prob_rows.chunks_exact(kv_len))
        .map(|(&pos, row)| row.iter().enumerate().filter(|&(j, _)| keep(pos, j)).map(|(_, &p)| p as f64).sum::<f64>())
        .sum();
    Ok(total / positions.len() as f64)
}
