//! A-shape (Λ-shape) mask, spec §1.2: a row keeps its `n_init` first keys ("attention sinks") and a
//! window of its `n_local` most recent keys (itself included). A sink inside the window counts once.

/// Whether the row at absolute position `pos` keeps key `key` under A-shape `(n_init, n_local)`.
#[inline]
pub fn ashape_keep(pos: usize, key: usize, n_init: usize, n_local: usize) -> bool {
    key <= pos && (pos - key < n_local || key < n_init)
}

/// The key ranges `[start, end)` that the rows at positions `pos_first..=pos_last` must visit:
/// `[0]` the sinks not already inside the window, `[1]` the union of the rows' windows.
///
/// The two ranges are disjoint and ordered (`ranges[0].1 <= ranges[1].0`); an empty range has
/// `start == end`. Both are clamped to `kv_len`. Every kept `(pos, key)` of a row in the span lies in
/// one of them; the element predicate [`ashape_keep`] still has to be applied inside.
pub fn ashape_key_ranges(
    pos_first: usize,
    pos_last: usize,
    n_init: usize,
    n_local: usize,
    kv_len: usize,
) -> [(usize, usize); 2] {
    let pos_last = pos_last.max(pos_first);
    // Window of the first row starts at pos_first + 1 - n_local; later rows' windows start later.
    let window_start = (pos_first + 1).saturating_sub(n_local).min(kv_len);
    let window_end = if n_local == 0 { window_start } else { (pos_last + 1).min(kv_len) };
    let window_start = window_start.min(window_end);
    // Sinks: keys < n_init visible to the last row and left of a non-empty window.
    let mut sink_end = n_init.min(pos_last + 1).min(kv_len);
    if window_start < window_end {
        sink_end = sink_end.min(window_start);
    }
    let window_start = window_start.max(sink_end);
    let window_end = window_end.max(window_start);
    [(0, sink_end), (window_start, window_end)]
}

/// Number of keys the row at `pos` keeps (keys are `0..=pos`, all assumed `< kv_len`).
pub fn ashape_row_count(pos: usize, n_init: usize, n_local: usize) -> u64 {
    let visible = pos as u64 + 1;
    let window = (n_local as u64).min(visible);
    let sinks = (n_init as u64).min(visible - window);
    window + sinks
}

/// Pairs `(row, key)` an A-shape head keeps over the rows of `seq`, in closed form: a row that sees
/// `v` keys keeps `min(v, n_init + n_local)` of them (the window takes the last `n_local`, the sinks
/// the first of the rest), so the sum over `v = offset + 1 ..= offset + q_len` is two arithmetic
/// pieces. Equal to summing [`ashape_row_count`] over the rows, without the `O(q_len)` walk.
pub fn ashape_entries(seq: &crate::SeqLen, n_init: usize, n_local: usize) -> u64 {
    let (first, last) = (seq.offset() as u64 + 1, (seq.offset() + seq.q_len) as u64);
    if seq.q_len == 0 {
        return 0;
    }
    let cap = (n_init as u64).saturating_add(n_local as u64);
    // Rows with v <= cap keep all v keys; the rest keep cap.
    let ramp_end = last.min(cap);
    let ramp = if ramp_end >= first { (first + ramp_end) * (ramp_end - first + 1) / 2 } else { 0 };
    let flat = last - last.min(cap).max(first - 1);
    ramp + flat * cap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_in_closed_form_equal_the_row_sum() {
        for &(n_init, n_local) in &[(0, 1), (4, 16), (100, 800), (3, 0), (70, 5), (0, 0), (1024, 4096)] {
            for (q_len, kv_len) in
                [(1usize, 1usize), (1, 9), (63, 63), (64, 200), (1000, 1000), (700, 5000), (9000, 9000)]
            {
                let seq = crate::SeqLen { q_len, kv_len };
                let off = kv_len - q_len;
                let walked: u64 = (off..kv_len).map(|p| ashape_row_count(p, n_init, n_local)).sum();
                assert_eq!(ashape_entries(&seq, n_init, n_local), walked, "({n_init}, {n_local}) over {seq:?}");
            }
        }
    }

    #[test]
    fn ranges_contain_every_kept_key_and_are_disjoint() {
        for &(n_init, n_local) in &[(0, 1), (4, 16), (100, 800), (3, 0), (70, 5)] {
            for kv_len in [1usize, 63, 64, 200, 1000] {
                let mut p0 = 0;
                while p0 < kv_len {
                    let p1 = (p0 + 63).min(kv_len - 1);
                    let r = ashape_key_ranges(p0, p1, n_init, n_local, kv_len);
                    assert!(r[0].0 <= r[0].1 && r[0].1 <= r[1].0 && r[1].0 <= r[1].1);
                    for pos in p0..=p1 {
                        let mut count = 0;
                        for key in 0..kv_len {
                            let inside = (r[0].0..r[0].1).contains(&key) || (r[1].0..r[1].1).contains(&key);
                            if ashape_keep(pos, key, n_init, n_local) {
                                assert!(inside, "pos {pos} key {key} init {n_init} local {n_local}");
                                count += 1;
                            }
                        }
                        assert_eq!(count, ashape_row_count(pos, n_init, n_local));
                    }
                    p0 += 64;
                }
            }
        }
    }

    #[test]
    fn window_covering_everything_is_causal() {
        for pos in 0..50 {
            for key in 0..50 {
                assert_eq!(ashape_keep(pos, key, 0, 50), key <= pos);
            }
        }
    }
}
