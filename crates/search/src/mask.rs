//! The mask a kernel computes for one head, evaluated against exact probabilities: kept mass per
//! row (from prefix sums, `O(tiles + columns)` per row) and the masked attention numerator
//! `Σ_kept p_ij · v_j` per row block (small GEMMs over the kept key ranges).

use crate::dense::ProbBlock;
use minference_core::{
    ashape_keep, ashape_key_ranges, head_coverage, mask::kernel_mask_keep, Coverage, HeadPattern, Result,
    RowBlockIndex, SeqLen, TILE,
};
use minference_cpu::gemm::{sgemm, Mat as View};

/// What a head's kernel computes: analytic masks carry no index.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadMask {
    Dense,
    AShape {
        n_init: usize,
        n_local: usize,
    },
    /// VS or BS: one entry per 64-row block (tiles and gathered columns).
    Index(Vec<RowBlockIndex>),
}

impl HeadMask {
    /// Kernel accounting for this mask (core coverage), `pattern` being the head's pattern.
    pub fn coverage(&self, pattern: &HeadPattern, n: usize) -> Result<Coverage> {
        let rows = match self {
            HeadMask::Index(rows) => &rows[..],
            _ => &[],
        };
        head_coverage(pattern, rows, SeqLen::prefill(n))
    }

    /// Whether the kernel computes `(pos, key)` (prefill: positions are row indices).
    pub fn keep(&self, pos: usize, key: usize, n: usize) -> bool {
        match self {
            HeadMask::Dense => kernel_mask_keep(&HeadPattern::Dense, &[], &[], pos, key, n),
            HeadMask::AShape { n_init, n_local } => key < n && ashape_keep(pos, key, *n_init, *n_local),
            HeadMask::Index(rows) => rows
                .get(pos / TILE)
                .is_some_and(|r| kernel_mask_keep(&HeadPattern::DEFAULT, &r.tiles, &r.columns, pos, key, n)),
        }
    }

    /// Kept probability mass of row `pos`; `prefix[j] = Σ_{j' < j} p[j']`, `row` the probabilities.
    pub fn row_mass(&self, pos: usize, prefix: &[f64], row: &[f32]) -> f64 {
        let end = pos + 1;
        match self {
            HeadMask::Dense => prefix[end],
            HeadMask::AShape { n_init, n_local } => {
                let window = end.saturating_sub(*n_local);
                prefix[(*n_init).min(window)] + prefix[end] - prefix[window]
            }
            HeadMask::Index(rows) => {
                let Some(r) = rows.get(pos / TILE) else { return 0.0 };
                let tiles: f64 = r
                    .tiles
                    .iter()
                    .map(|&t| {
                        let a = (t.max(0) as usize).min(end);
                        let b = (t as i64 + TILE as i64).clamp(0, end as i64) as usize;
                        if a < b {
                            prefix[b] - prefix[a]
                        } else {
                            0.0
                        }
                    })
                    .sum();
                let cols: f64 =
                    r.columns.iter().filter(|&&c| (c as usize) < end).map(|&c| row[c as usize] as f64).sum();
                tiles + cols
            }
        }
    }

    /// `acc[rows × D] = Σ_kept p_ij · v_j` for the rows of `p`. Dense is not handled here (the
    /// caller has the dense output already); it writes the full product for completeness.
    pub fn block_numerator(&self, p: &ProbBlock, v: &[f32], d: usize, acc: &mut [f32], scratch: &mut Vec<f32>) {
        let acc = &mut acc[..p.rows * d];
        acc.iter_mut().for_each(|x| *x = 0.0);
        // Adds P[:, a..b] · V[a..b] to acc (P is zero right of the diagonal).
        let add_range = |a: usize, b: usize, acc: &mut [f32]| {
            if a < b {
                let pv = View { data: &p.probs[a..], rs: p.width, cs: 1 };
                let vv = View { data: &v[a * d..], rs: d, cs: 1 };
                sgemm(p.rows, b - a, d, 1.0, pv, vv, 1.0, acc, d);
            }
        };
        match self {
            HeadMask::Dense => add_range(0, p.width, acc),
            HeadMask::AShape { n_init, n_local } => {
                let [sinks, window] = ashape_key_ranges(p.row0, p.row0 + p.rows - 1, *n_init, *n_local, p.width);
                add_range(sinks.0, sinks.1, acc);
                // The window's left edge differs per row: copy it with the per-row predicate applied.
                let (a, b) = window;
                if a < b {
                    let w = b - a;
                    scratch.clear();
                    scratch.resize(p.rows * w, 0.0);
                    for r in 0..p.rows {
                        let pos = p.row0 + r;
                        for (j, s) in (a..b).zip(&mut scratch[r * w..(r + 1) * w]) {
                            if ashape_keep(pos, j, *n_init, *n_local) {
                                *s = p.probs[r * p.width + j];
                            }
                        }
                    }
                    let pv = View { data: scratch, rs: w, cs: 1 };
                    let vv = View { data: &v[a * d..], rs: d, cs: 1 };
                    sgemm(p.rows, w, d, 1.0, pv, vv, 1.0, acc, d);
                }
            }
            HeadMask::Index(rows) => {
                let Some(r) = rows.get(p.block) else { return };
                for &t in &r.tiles {
                    let a = (t.max(0) as usize).min(p.width);
                    let b = (t as i64 + TILE as i64).clamp(0, p.width as i64) as usize;
                    add_range(a, b, acc);
                }
                let cols: Vec<usize> = r.columns.iter().map(|&c| c as usize).filter(|&c| c < p.width).collect();
                if !cols.is_empty() {
                    // Gather the columns' probabilities and value rows, then one GEMM.
                    let nc = cols.len();
                    scratch.clear();
                    scratch.resize(p.rows * nc + nc * d, 0.0);
                    let (pc, vc) = scratch.split_at_mut(p.rows * nc);
                    for r in 0..p.rows {
                        for (x, &c) in pc[r * nc..(r + 1) * nc].iter_mut().zip(&cols) {
                            *x = p.probs[r * p.width + c];
                        }
                    }
                    for (dst, &c) in vc.chunks_exact_mut(d).zip(&cols) {
                        dst.copy_from_slice(&v[c * d..(c + 1) * d]);
                    }
                    sgemm(
                        p.rows,
                        nc,
                        d,
                        1.0,
                        View { data: pc, rs: nc, cs: 1 },
                        View { data: vc, rs: d, cs: 1 },
                        1.0,
                        acc,
                        d,
                    );
                }
            }
        }
    }
}

/// `prefix[j] = Σ_{j' < j} row[j']` in f64, `prefix.len() = row.len() + 1`.
pub fn prefix_sums(row: &[f32], prefix: &mut Vec<f64>) {
    prefix.clear();
    prefix.reserve(row.len() + 1);
    prefix.push(0.0);
    let mut acc = 0f64;
    for &x in row {
        acc += x as f64;
        prefix.push(acc);
    }
}
