//! VS index conversion: spec §8 items 6–12 plus the §1.3.6 fixes (offsets, bounded skip, verticals
//! never dropped, clamping to kv_len).

use minference_core::coverage::pairs_in_range;
use minference_core::mask::{in_columns, in_tiles};
use minference_core::{
    causal_entries, convert_vs_head, head_coverage, CoreError, HeadPattern, RowBlockIndex, SeqLen, VsSelection,
};
use proptest::prelude::*;

const VS: HeadPattern = HeadPattern::VerticalSlash { k_v: 1, k_s: 1 };

/// The reference converter of spec §1.3.5 (offset 0), written from the prose, to check that the
/// fixed converter agrees with it whenever d = 0 is selected.
fn reference_convert(v: &[u32], s: &[u32], n: usize) -> Vec<(Vec<i64>, Vec<i64>)> {
    let mut out = Vec::new();
    for m in 0..n.div_ceil(64) {
        let end = 64 * m as i64 + 64;
        let (mut blocks, mut cols) = (Vec::new(), Vec::new());
        let emit = |b: &mut Vec<i64>, rs: i64, re: i64| {
            let mut t = rs;
            while t < re {
                b.push(t);
                t += 64;
            }
        };
        let mut vi = 0;
        let mut si = 0;
        let mut cur_v = v[0] as i64;
        vi += 1;
        let mut cur_s = s[0] as i64;
        si += 1;
        while cur_s >= end {
            if si == s.len() {
                // The reference reads past the slash array here (§1.3.5 step 2 quirk): undefined.
                break;
            }
            cur_s = s[si] as i64;
            si += 1;
        }
        if cur_s >= end {
            out.push((Vec::new(), Vec::new()));
            continue;
        }
        let e = (end - cur_s).max(64);
        let (mut rs, mut re) = (e - 64, e);
        loop {
            if cur_v < re {
                if cur_v < rs {
                    cols.push(cur_v);
                }
                if vi < v.len() {
                    cur_v = v[vi] as i64;
                    vi += 1;
                } else {
                    cur_v = end + 64;
                }
            } else {
                if si >= s.len() {
                    emit(&mut blocks, rs, re);
                    break;
                }
                let e2 = (end - s[si] as i64).max(64);
                si += 1;
                if e2 > re + 64 {
                    emit(&mut blocks, rs, re);
                    rs = e2 - 64;
                    re = e2;
                } else if e2 > re {
                    re += 64;
                }
            }
        }
        out.push((blocks, cols));
    }
    out
}

/// A random sorted selection: each vertical / slash kept with some probability, plus forced sets.
fn selection(n: usize, pv: f64, ps: f64, forced: bool, seed: u64) -> VsSelection {
    let mut x = seed | 1;
    let mut u = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let verticals: Vec<u32> = (0..n as u32).filter(|&j| (forced && j < 30) || u() < pv).collect();
    let mut slashes: Vec<u32> = (0..n as u32).filter(|&d| (forced && d < 100) || u() < ps).collect();
    slashes.reverse();
    VsSelection { verticals, slashes }
}

/// Checks invariants 6–10 for every row block, and returns the kernel-covered causal pair count.
fn check_invariants(sel: &VsSelection, seq: SeqLen, rows: &[RowBlockIndex]) -> Result<u64, TestCaseError> {
    prop_assert_eq!(rows.len(), seq.row_blocks());
    let n = seq.kv_len;
    let mut covered = 0u64;
    for (m, r) in rows.iter().enumerate() {
        let start = seq.offset() + 64 * m;
        let end = start + 64;
        let last_pos = (start + 63).min(n - 1);
        prop_assert!(r.tiles.len() <= sel.slashes.len() + 1);
        prop_assert!(r.columns.len() <= sel.verticals.len());
        prop_assert!(r.tiles.windows(2).all(|w| w[1] - w[0] >= 64), "tiles overlap {:?}", r.tiles);
        prop_assert!(r.columns.windows(2).all(|w| w[0] < w[1]));
        if let Some(&t0) = r.tiles.first() {
            prop_assert!(t0 as i64 <= start as i64, "first tile {} after block start {}", t0, start);
        }
        prop_assert!(r.tiles.iter().all(|&t| t >= 0 && (t as usize) < end && (t as usize) < n));
        prop_assert!(r.columns.iter().all(|&c| c >= 0 && (c as usize) < start));
        prop_assert!(r.columns.iter().all(|&c| !in_tiles(&r.tiles, c as usize)));
        // Coverage of the ideal mask, brute force over the rows of the block.
        for pos in start..=last_pos {
            for &v in &sel.verticals {
                let v = v as usize;
                if v <= pos {
                    prop_assert!(in_tiles(&r.tiles, v) || in_columns(&r.columns, v), "vertical {} row {}", v, pos);
                }
            }
            for &dist in &sel.slashes {
                if let Some(j) = pos.checked_sub(dist as usize) {
                    prop_assert!(in_tiles(&r.tiles, j) || in_columns(&r.columns, j), "slash {} row {}", dist, pos);
                }
            }
        }
        for &t in &r.tiles {
            covered += pairs_in_range(start as i64, last_pos as i64, t as i64, (t as i64 + 64).min(n as i64));
        }
        // Columns lie before the block, so every row of it sees each of them.
        covered += (r.columns.len() * (last_pos + 1 - start)) as u64;
    }
    Ok(covered)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn invariants_hold_with_offsets(
        q_len in 1usize..700,
        off in 0usize..300,
        pv in 0.0f64..0.3,
        ps in 0.0f64..0.3,
        forced in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let seq = SeqLen { q_len, kv_len: q_len + off };
        let mut sel = selection(seq.kv_len, pv, ps, forced, seed);
        if sel.verticals.first() != Some(&0) {
            sel.verticals.insert(0, 0);
        }
        let rows = convert_vs_head(&sel, seq).unwrap();
        let covered = check_invariants(&sel, seq, &rows)?;
        let cov = head_coverage(&VS, &rows, seq).unwrap();
        prop_assert_eq!(cov.entries, covered);
        prop_assert!(cov.entries <= causal_entries(&seq));
    }

    /// With d = 0 selected and no offset, the fixed converter equals the reference (spec §1.3.5);
    /// only tiles past kv_len are clamped away.
    #[test]
    fn matches_reference_when_diagonal_is_selected(n in 1usize..900, pv in 0.0f64..0.3, ps in 0.0f64..0.3, seed in any::<u64>()) {
        let mut sel = selection(n, pv, ps, true, seed);
        if sel.slashes.last() != Some(&0) {
            sel.slashes.push(0);
        }
        if sel.verticals.is_empty() {
            sel.verticals.push(0);
        }
        let rows = convert_vs_head(&sel, SeqLen::prefill(n)).unwrap();
        let reference = reference_convert(&sel.verticals, &sel.slashes, n);
        for (r, (blocks, cols)) in rows.iter().zip(reference) {
            let blocks: Vec<i32> = blocks.into_iter().filter(|&b| (b as usize) < n).map(|b| b as i32).collect();
            let cols: Vec<i32> = cols.into_iter().map(|c| c as i32).collect();
            prop_assert_eq!(&r.tiles, &blocks);
            prop_assert_eq!(&r.columns, &cols);
        }
    }
}

/// Item 11: full budget covers exactly the causal mask (also for N mod 64 != 0, N < 64, N = 1 and
/// with offsets).
#[test]
fn full_budget_equals_causal() {
    for (q_len, kv_len) in
        [(1, 1), (5, 5), (63, 63), (64, 64), (65, 65), (500, 500), (4133, 4133), (1, 300), (70, 200), (130, 194)]
    {
        let seq = SeqLen { q_len, kv_len };
        let sel = VsSelection { verticals: (0..kv_len as u32).collect(), slashes: (0..kv_len as u32).rev().collect() };
        let rows = convert_vs_head(&sel, seq).unwrap();
        let cov = head_coverage(&VS, &rows, seq).unwrap();
        assert_eq!(cov.entries, causal_entries(&seq), "q_len {q_len} kv_len {kv_len}");
        assert_eq!(cov.density(), 1.0);
    }
}

/// Item 10 regression: without d = 0 the reference drops verticals right of the last slash
/// window; the fixed converter keeps them (as columns before the block, or as a diagonal tile).
#[test]
fn missing_diagonal_keeps_verticals() {
    let n = 256;
    let seq = SeqLen::prefill(n);
    // Slashes far from the diagonal only; verticals everywhere.
    let sel = VsSelection { verticals: (0..n as u32).step_by(3).collect(), slashes: vec![200, 150] };
    let rows = convert_vs_head(&sel, seq).unwrap();
    let reference = reference_convert(&sel.verticals, &sel.slashes, n);
    let mut reference_drops = false;
    for (m, r) in rows.iter().enumerate() {
        // Row blocks where no slash crosses are undefined in the reference; check ours only.
        let reference_defined = sel.slashes.iter().any(|&d| (d as usize) < 64 * m + 64);
        for pos in 64 * m..(64 * m + 64).min(n) {
            for &v in sel.verticals.iter().filter(|&&v| v as usize <= pos) {
                let v = v as usize;
                assert!(in_tiles(&r.tiles, v) || in_columns(&r.columns, v), "row {pos} lost vertical {v}");
                let (blocks, cols) = &reference[m];
                let ref_has = cols.contains(&(v as i64)) || blocks.iter().any(|&b| (b..b + 64).contains(&(v as i64)));
                reference_drops |= reference_defined && !ref_has;
            }
        }
    }
    assert!(reference_drops, "the reference should drop some vertical here");
}

/// Item 12: one entry per row block, R = ceil(q_len / 64); rows past the end do not exist.
#[test]
fn row_block_count_and_small_sequences() {
    for n in [1usize, 2, 63, 64, 65, 128, 129] {
        let sel = VsSelection { verticals: vec![0], slashes: vec![0] };
        let rows = convert_vs_head(&sel, SeqLen::prefill(n)).unwrap();
        assert_eq!(rows.len(), n.div_ceil(64));
        for (m, r) in rows.iter().enumerate() {
            assert_eq!(r.tiles, vec![64 * m as i32]);
            assert_eq!(r.columns, if m == 0 { vec![] } else { vec![0] });
        }
    }
}

#[test]
fn unsorted_or_out_of_range_inputs_are_errors() {
    let seq = SeqLen::prefill(100);
    let bad = [
        VsSelection { verticals: vec![0, 5, 5], slashes: vec![0] },
        VsSelection { verticals: vec![5, 0], slashes: vec![0] },
        VsSelection { verticals: vec![0], slashes: vec![0, 3] },
        VsSelection { verticals: vec![0, 100], slashes: vec![0] },
        VsSelection { verticals: vec![0], slashes: vec![100, 0] },
        VsSelection { verticals: vec![1], slashes: vec![3] },
        VsSelection { verticals: vec![], slashes: vec![] },
    ];
    for sel in bad {
        assert!(matches!(convert_vs_head(&sel, seq), Err(CoreError::Budget(_))), "{sel:?}");
    }
    let ok = VsSelection { verticals: vec![0], slashes: vec![] };
    assert!(convert_vs_head(&ok, seq).is_ok());
    assert!(convert_vs_head(&ok, SeqLen { q_len: 0, kv_len: 5 }).is_err());
    assert!(convert_vs_head(&ok, SeqLen { q_len: 6, kv_len: 5 }).is_err());
}

/// Spec §1.3.5 example: the forced local diagonals d = 0..99 form one range [start-99, end+29)
/// of three tiles.
#[test]
fn local_window_is_three_tiles() {
    let n = 1024;
    let sel = VsSelection { verticals: (0..30).collect(), slashes: (0..100).rev().collect() };
    let rows = convert_vs_head(&sel, SeqLen::prefill(n)).unwrap();
    let m = 5;
    let start = 64 * m as i32;
    assert_eq!(rows[m].tiles, vec![start - 99, start - 35, start + 29]);
    assert_eq!(rows[m].columns, (0..30).collect::<Vec<i32>>());
}
