//! Key-tile iterators: what one 64-row query block attends to, as a stream of at most 64-key
//! tiles. Every pattern is one of these iterators feeding the same mainloop (`mainloop.rs`).
//!
//! * Range tile: keys `start..end` (`end - start <= 64`), masked element-wise by causality and,
//!   for A-shape, by the §1.2 predicate.
//! * Column group: up to 64 gathered key columns (PIT-style), causal mask only as a safety net
//!   (valid indices put every column before the block).

use minference_core::{ashape_keep, ashape_key_ranges, TILE};

/// The A-shape predicate (spec §1.2): keep key `j` for position `p` iff `p - j < n_local || j < n_init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AShapeMask {
    pub n_init: usize,
    pub n_local: usize,
}

impl AShapeMask {
    #[inline]
    pub fn keeps(&self, pos: usize, key: usize) -> bool {
        ashape_keep(pos, key, self.n_init, self.n_local)
    }
}

/// Absolute positions of the rows of one query block: `first..=last` (local keys `0..kv_len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSpan {
    pub first: usize,
    pub last: usize,
    pub kv_len: usize,
}

impl RowSpan {
    pub fn rows(&self) -> usize {
        self.last - self.first + 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTile<'a> {
    Range { start: usize, end: usize, ashape: Option<AShapeMask> },
    Columns(&'a [i32]),
}

/// One query block's tile stream.
#[derive(Debug, Clone)]
pub enum TileIter<'a> {
    /// Up to two disjoint key ranges cut into 64-key tiles.
    Ranges { ranges: [(usize, usize); 2], which: usize, cursor: usize, ashape: Option<AShapeMask> },
    /// Tiles and column groups from a `SparseIndex` slot.
    Index { tiles: std::slice::Iter<'a, i32>, columns: std::slice::Chunks<'a, i32>, kv_len: usize },
}

impl<'a> TileIter<'a> {
    /// Causal attention: keys `0..=last` in 64-aligned tiles.
    pub fn dense(span: RowSpan) -> Self {
        let end = (span.last + 1).min(span.kv_len);
        TileIter::Ranges { ranges: [(0, end), (0, 0)], which: 0, cursor: 0, ashape: None }
    }

    /// A-shape: core's two disjoint ranges — the sinks left of the window, `0..min(n_init,
    /// window_start)`, and the union of the rows' windows, `first + 1 - n_local ..= last` — so no key
    /// is counted twice. Sinks inside the window range are kept by the window tiles' predicate.
    pub fn ashape(span: RowSpan, mask: AShapeMask) -> Self {
        let ranges = ashape_key_ranges(span.first, span.last, mask.n_init, mask.n_local, span.kv_len);
        TileIter::Ranges { ranges, which: 0, cursor: 0, ashape: Some(mask) }
    }

    /// Tiles (arbitrary starts, clamped to `0..kv_len`) then columns in groups of 64.
    pub fn index(tiles: &'a [i32], columns: &'a [i32], kv_len: usize) -> Self {
        TileIter::Index { tiles: tiles.iter(), columns: columns.chunks(TILE), kv_len }
    }
}

impl<'a> Iterator for TileIter<'a> {
    type Item = KeyTile<'a>;

    fn next(&mut self) -> Option<KeyTile<'a>> {
        match self {
            TileIter::Ranges { ranges, which, cursor, ashape } => loop {
                let (lo, hi) = *ranges.get(*which)?;
                let start = (*cursor).max(lo);
                if start < hi {
                    let end = (start + TILE).min(hi);
                    *cursor = end;
                    return Some(KeyTile::Range { start, end, ashape: *ashape });
                }
                *which += 1;
                *cursor = 0;
            },
            TileIter::Index { tiles, columns, kv_len } => {
                for &t in tiles.by_ref() {
                    let start = (t as i64).max(0);
                    let end = (t as i64 + TILE as i64).min(*kv_len as i64);
                    if start < end {
                        return Some(KeyTile::Range { start: start as usize, end: end as usize, ashape: None });
                    }
                }
                columns.next().map(KeyTile::Columns)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(iter: TileIter, pos: usize) -> Vec<usize> {
        let mut keys = Vec::new();
        for t in iter {
            match t {
                KeyTile::Range { start, end, ashape } => {
                    assert!(end - start <= TILE);
                    keys.extend((start..end).filter(|&k| k <= pos && ashape.is_none_or(|a| a.keeps(pos, k))));
                }
                KeyTile::Columns(c) => keys.extend(c.iter().map(|&x| x as usize).filter(|&k| k <= pos)),
            }
        }
        keys
    }

    #[test]
    fn ashape_keeps_exactly_the_predicate_once() {
        for (n_init, n_local) in [(0, 1), (3, 0), (4, 10), (100, 64), (5, 1000), (70, 70)] {
            let mask = AShapeMask { n_init, n_local };
            for first in [0usize, 5, 64, 130, 640] {
                let span = RowSpan { first, last: first + 63, kv_len: first + 64 };
                for pos in [first, first + 17, first + 63] {
                    let mut got = keys_of(TileIter::ashape(span, mask), pos);
                    let n = got.len();
                    got.dedup();
                    assert_eq!(n, got.len(), "duplicate key");
                    let want: Vec<usize> = (0..=pos).filter(|&k| mask.keeps(pos, k)).collect();
                    assert_eq!(got, want, "n_init={n_init} n_local={n_local} first={first} pos={pos}");
                }
            }
        }
    }

    #[test]
    fn dense_covers_causal_prefix() {
        let span = RowSpan { first: 100, last: 163, kv_len: 200 };
        assert_eq!(keys_of(TileIter::dense(span), 130), (0..=130).collect::<Vec<_>>());
    }

    #[test]
    fn index_tiles_clamp_to_sequence() {
        let tiles = [-10, 150];
        let it = TileIter::index(&tiles, &[], 170);
        let got: Vec<_> = it.collect();
        assert_eq!(
            got,
            vec![
                KeyTile::Range { start: 0, end: 54, ashape: None },
                KeyTile::Range { start: 150, end: 170, ashape: None }
            ]
        );
    }
}
