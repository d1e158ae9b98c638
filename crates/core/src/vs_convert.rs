//! Vertical-Slash index conversion (spec §1.3.5 with the §1.3.6 fixes): turns one head's selection
//! (verticals ascending, slash distances descending) into, per 64-row query block, a list of 64-wide
//! key tiles and a list of gathered key columns.
//!
//! Algorithm for row block `m` (one GPU thread runs exactly this; `O(|V| + |S|)` per row block):
//!
//! ```text
//! off = kv_len - q_len; start = off + 64m; end = start + 64      // absolute positions
//! key_end = min(end, kv_len)                                    // no row of the block sees keys >= key_end
//! window(d) = [e - 64, e) with e = max(end - d, 64)             // 64-wide band of diagonal d in the block
//! si = first slash index with S[si] < end                      // bounded skip: farther diagonals miss the block
//! vi = 0; has_range = si < |S|
//! if has_range: [rs, re) = window(S[si]); si += 1
//! while has_range:
//!     v = V[vi] if vi < |V| else +inf
//!     if v < re:                        // vertical left of or inside the current range
//!         if v < rs: push column v      // left of it: ranges only move right, so never covered later
//!         vi += 1
//!     else if si < |S|:                 // next slash window [e' - 64, e')
//!         e' = max(end - S[si], 64); si += 1
//!         if e' > re + 64: emit [rs, re); [rs, re) = [e' - 64, e')   // disjoint: start a new range
//!         else if e' > re:  re += 64                                // overlapping: grow by one tile
//!     else:
//!         emit [rs, re); break
//! last_end = re if any range was emitted else 0
//! tail = max(start, last_end)           // fix: verticals right of the last range are never dropped
//! for each remaining vertical v < key_end:
//!     if v < start: push column v       // strictly before the block: causally safe as a column
//!     else: emit the tile [tail, tail + 64) once (it covers every v in [tail, end)); stop
//! emit [a, b) = push tile starts a, a + 64, ... < b that are < kv_len     // clamp to kv_len
//! ```
//!
//! Guarantees (tested): tiles strictly increasing with gaps >= 64 (disjoint), the first tile starts
//! `<= start`, every tile start `< end`; columns strictly increasing, `< start` and outside every
//! tile; every `(pos, key)` of the ideal mask (`key ∈ V` or `pos - key ∈ S`, `key <= pos`) is covered;
//! at most `|S| + 1` tiles and `|V|` columns per row block. With `0 ∈ S` the output equals the
//! reference converter's. Every row sees at least one key because the selection must contain
//! vertical 0 or slash 0 (checked).

use crate::error::{CoreError, Result};
use crate::index::{RowBlockIndex, VsSelection};
use crate::pattern::TILE;
use crate::shape::SeqLen;

/// Converts one head's VS selection into one [`RowBlockIndex`] per 64-row query block.
pub fn convert_vs_head(sel: &VsSelection, seq: SeqLen) -> Result<Vec<RowBlockIndex>> {
    validate(sel, seq)?;
    Ok((0..seq.row_blocks()).map(|m| convert_row_block(sel, seq, m)).collect())
}

fn validate(sel: &VsSelection, seq: SeqLen) -> Result<()> {
    if seq.q_len == 0 || seq.q_len > seq.kv_len {
        return Err(CoreError::Shape(format!("need 0 < q_len <= kv_len, got {} / {}", seq.q_len, seq.kv_len)));
    }
    if seq.kv_len > i32::MAX as usize - 2 * TILE {
        return Err(CoreError::Shape(format!("kv_len {} exceeds i32 key positions", seq.kv_len)));
    }
    let n = seq.kv_len as u64;
    if let Some(w) = sel.verticals.windows(2).find(|w| w[0] >= w[1]) {
        return Err(CoreError::Budget(format!("verticals must be strictly ascending ({} then {})", w[0], w[1])));
    }
    if let Some(w) = sel.slashes.windows(2).find(|w| w[0] <= w[1]) {
        return Err(CoreError::Budget(format!("slashes must be strictly descending ({} then {})", w[0], w[1])));
    }
    if let Some(&v) = sel.verticals.last().filter(|&&v| v as u64 >= n) {
        return Err(CoreError::Budget(format!("vertical {v} >= kv_len {n}")));
    }
    if let Some(&d) = sel.slashes.first().filter(|&&d| d as u64 >= n) {
        return Err(CoreError::Budget(format!("slash distance {d} >= kv_len {n}")));
    }
    if sel.verticals.first() != Some(&0) && sel.slashes.last() != Some(&0) {
        return Err(CoreError::Budget("selection needs vertical 0 or slash 0, otherwise some rows see no key".into()));
    }
    Ok(())
}

/// The sequential per-row-block algorithm of the module comment.
fn convert_row_block(sel: &VsSelection, seq: SeqLen, m: usize) -> RowBlockIndex {
    let tile = TILE as i64;
    let kv_len = seq.kv_len as i64;
    let start = (seq.offset() + TILE * m) as i64;
    let end = start + tile;
    let key_end = end.min(kv_len);
    let window_end = |d: u32| (end - d as i64).max(tile);
    let (vs, ss) = (&sel.verticals, &sel.slashes);

    let mut out = RowBlockIndex::default();
    let emit = |tiles: &mut Vec<i32>, rs: i64, re: i64| {
        let mut t = rs;
        while t < re && t < kv_len {
            tiles.push(t as i32);
            t += tile;
        }
    };

    let mut vi = 0usize;
    let mut si = ss.partition_point(|&d| d as i64 >= end);
    let mut last_end = 0i64;
    if si < ss.len() {
        let e = window_end(ss[si]);
        si += 1;
        let (mut rs, mut re) = (e - tile, e);
        loop {
            let v = vs.get(vi).map_or(i64::MAX, |&v| v as i64);
            if v < re {
                if v < rs {
                    out.columns.push(v as i32);
                }
                vi += 1;
            } else if si < ss.len() {
                let e = window_end(ss[si]);
                si += 1;
                if e > re + tile {
                    emit(&mut out.tiles, rs, re);
                    (rs, re) = (e - tile, e);
                } else if e > re {
                    re += tile;
                }
            } else {
                emit(&mut out.tiles, rs, re);
                last_end = re;
                break;
            }
        }
    }
    let tail = start.max(last_end);
    for &v in &vs[vi..] {
        let v = v as i64;
        if v >= key_end {
            break;
        }
        if v < start {
            out.columns.push(v as i32);
        } else {
            emit(&mut out.tiles, tail, tail + tile);
            break;
        }
    }
    out
}
