//! The three inner steps of the mainloop, on one tile, in the transposed score layout
//! `st[j * 64 + r]` (key `j`, query row `r`), which lets every step read K, V and the accumulator
//! as contiguous rows without packing:
//!
//! * [`scores_t`]: `st = K_tile · Qᵀ` (Qᵀ staged once per query block, `[D, 64]`);
//! * [`softmax_update`]: base-2 online softmax, vectorised across the 64 query rows;
//! * [`accumulate_pv`]: `acc[r] = α[r]·acc[r] + Σ_j st[j, r] · V[j]`.
//!
//! Each has an AVX-512 version (explicit FMA micro-kernels, register-blocked 4 × 64) and a portable
//! one (`matrixmultiply` sgemm / plain loops), chosen once per call by [`Isa::detect`].

use crate::exp2::exp2_nonpositive;
use crate::gemm::{sgemm, Mat};
use minference_core::TILE;

/// Instruction set of the micro-kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Only chosen when the CPU reports avx512f and `head_dim % 16 == 0`.
    Avx512,
    Portable,
}

impl Isa {
    /// The fastest kernels this CPU runs for `head_dim` (`portable_only` forces the fallback).
    pub fn detect(head_dim: usize, portable_only: bool) -> Isa {
        if portable_only {
            return Isa::Portable;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if head_dim.is_multiple_of(16) && std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
        }
        let _ = head_dim;
        Isa::Portable
    }
}

/// `st[j * 64 + r] = Σ_x k[j * d + x] · qt[x * 64 + r]` for `j < nk`, all 64 `r`.
pub(crate) fn scores_t(isa: Isa, k: &[f32], nk: usize, d: usize, qt: &[f32], st: &mut [f32]) {
    assert!(nk <= TILE && k.len() >= nk * d && qt.len() >= d * TILE && st.len() >= TILE * TILE);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx512 is only detected when the CPU supports avx512f; the assert above bounds
        // every access the kernel makes.
        Isa::Avx512 => unsafe { avx512::scores_t(k, nk, d, qt, st) },
        _ => sgemm(nk, d, TILE, 1.0, Mat { data: k, rs: d, cs: 1 }, Mat { data: qt, rs: TILE, cs: 1 }, 0.0, st, TILE),
    }
}

/// `acc[r * d + c] = alpha[r] · acc[r * d + c] + Σ_j pt[j * 64 + r] · v[j * d + c]` for `r < rows`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn accumulate_pv(
    isa: Isa,
    pt: &[f32],
    nk: usize,
    v: &[f32],
    d: usize,
    alpha: &[f32; TILE],
    acc: &mut [f32],
    rows: usize,
) {
    assert!(nk <= TILE && rows <= TILE && pt.len() >= TILE * TILE && v.len() >= nk * d && acc.len() >= TILE * d);
    assert!(isa != Isa::Avx512 || d.is_multiple_of(16));
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `scores_t`; rows are processed in groups of 4 within the 64 rows of `acc`.
        Isa::Avx512 => unsafe { avx512::accumulate_pv(pt, nk, v, d, alpha, acc, rows) },
        _ => {
            for (r, &a) in alpha.iter().enumerate().take(rows) {
                acc[r * d..(r + 1) * d].iter_mut().for_each(|x| *x *= a);
            }
            sgemm(rows, nk, d, 1.0, Mat { data: pt, rs: 1, cs: TILE }, Mat { data: v, rs: d, cs: 1 }, 1.0, acc, d);
        }
    }
}

/// Online-softmax state of the 64 rows of a query block.
pub(crate) struct SoftmaxState {
    pub row_max: [f32; TILE],
    pub row_sum: [f32; TILE],
    /// Rescale factor of the accumulator computed by the last update.
    pub alpha: [f32; TILE],
}

impl SoftmaxState {
    pub fn new() -> Self {
        SoftmaxState { row_max: [f32::NEG_INFINITY; TILE], row_sum: [0.0; TILE], alpha: [1.0; TILE] }
    }
    pub fn reset(&mut self) {
        *self = SoftmaxState::new();
    }
}

/// Turns the logits `st[j * 64 + r]` (`j < nk`) into probabilities relative to the updated running
/// max and updates max / sum / alpha. Rows with nothing visible yet keep zero mass.
pub(crate) fn softmax_update(isa: Isa, st: &mut [f32], nk: usize, state: &mut SoftmaxState) {
    assert!(nk <= TILE && st.len() >= TILE * TILE);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: avx512f is present (Isa::Avx512 is only detected then); the body is safe code.
        Isa::Avx512 => unsafe { avx512::softmax_update(st, nk, state) },
        _ => softmax_body(st, nk, state),
    }
}

#[inline(always)]
fn softmax_body(st: &mut [f32], nk: usize, state: &mut SoftmaxState) {
    let mut tile_max = [f32::NEG_INFINITY; TILE];
    for row in st[..nk * TILE].chunks_exact(TILE) {
        for (m, &x) in tile_max.iter_mut().zip(row) {
            *m = m.max(x);
        }
    }
    // A row whose max is still -inf has seen only masked keys: shift by 0 so 2^(-inf) = 0, not NaN.
    let mut shift = [0.0f32; TILE];
    for r in 0..TILE {
        let new_max = state.row_max[r].max(tile_max[r]);
        shift[r] = if new_max == f32::NEG_INFINITY { 0.0 } else { new_max };
        state.alpha[r] = exp2_nonpositive(state.row_max[r] - shift[r]);
        state.row_max[r] = new_max;
    }
    let mut tile_sum = [0.0f32; TILE];
    for row in st[..nk * TILE].chunks_exact_mut(TILE) {
        for ((x, s), sum) in row.iter_mut().zip(&shift).zip(tile_sum.iter_mut()) {
            *x = exp2_nonpositive(*x - s);
            *sum += *x;
        }
    }
    for ((sum, alpha), tile) in state.row_sum.iter_mut().zip(&state.alpha).zip(&tile_sum) {
        *sum = *sum * alpha + tile;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{softmax_body, SoftmaxState, TILE};
    use std::arch::x86_64::*;

    /// Key rows per register block of `scores_t`, query-row vectors per block (4 × 16 = 64 rows).
    const JB: usize = 4;
    const RV: usize = TILE / 16;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn softmax_update(st: &mut [f32], nk: usize, state: &mut SoftmaxState) {
        softmax_body(st, nk, state)
    }

    /// See `super::scores_t`; the caller checked the slice bounds.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores_t(k: &[f32], nk: usize, d: usize, qt: &[f32], st: &mut [f32]) {
        let (kp, qp, sp) = (k.as_ptr(), qt.as_ptr(), st.as_mut_ptr());
        let mut j = 0;
        while j + JB <= nk {
            let mut acc = [[_mm512_setzero_ps(); RV]; JB];
            for x in 0..d {
                let q = qp.add(x * TILE);
                let qv = [
                    _mm512_loadu_ps(q),
                    _mm512_loadu_ps(q.add(16)),
                    _mm512_loadu_ps(q.add(32)),
                    _mm512_loadu_ps(q.add(48)),
                ];
                for (jj, row) in acc.iter_mut().enumerate() {
                    let kb = _mm512_set1_ps(*kp.add((j + jj) * d + x));
                    for (a, &qv) in row.iter_mut().zip(&qv) {
                        *a = _mm512_fmadd_ps(kb, qv, *a);
                    }
                }
            }
            for (jj, row) in acc.iter().enumerate() {
                for (c, &a) in row.iter().enumerate() {
                    _mm512_storeu_ps(sp.add((j + jj) * TILE + 16 * c), a);
                }
            }
            j += JB;
        }
        while j < nk {
            let mut acc = [_mm512_setzero_ps(); RV];
            for x in 0..d {
                let q = qp.add(x * TILE);
                let kb = _mm512_set1_ps(*kp.add(j * d + x));
                for (c, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(kb, _mm512_loadu_ps(q.add(16 * c)), *a);
                }
            }
            for (c, &a) in acc.iter().enumerate() {
                _mm512_storeu_ps(sp.add(j * TILE + 16 * c), a);
            }
            j += 1;
        }
    }

    /// See `super::accumulate_pv`; the caller checked the slice bounds and `d % 16 == 0`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn accumulate_pv(
        pt: &[f32],
        nk: usize,
        v: &[f32],
        d: usize,
        alpha: &[f32; TILE],
        acc: &mut [f32],
        rows: usize,
    ) {
        let mut r0 = 0;
        while r0 < rows {
            let mut c0 = 0;
            while c0 + 64 <= d {
                pv_block::<4>(pt, nk, v, d, alpha, acc, r0, c0);
                c0 += 64;
            }
            while c0 < d {
                pv_block::<1>(pt, nk, v, d, alpha, acc, r0, c0);
                c0 += 16;
            }
            r0 += 4;
        }
    }

    /// Rows `r0..r0 + 4` × columns `c0..c0 + 16·CV` of the accumulator.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pv_block<const CV: usize>(
        pt: &[f32],
        nk: usize,
        v: &[f32],
        d: usize,
        alpha: &[f32; TILE],
        acc: &mut [f32],
        r0: usize,
        c0: usize,
    ) {
        let (pp, vp, ap) = (pt.as_ptr(), v.as_ptr(), acc.as_mut_ptr());
        let mut regs = [[_mm512_setzero_ps(); CV]; 4];
        for (rr, row) in regs.iter_mut().enumerate() {
            let scale = _mm512_set1_ps(alpha[r0 + rr]);
            for (c, a) in row.iter_mut().enumerate() {
                *a = _mm512_mul_ps(scale, _mm512_loadu_ps(ap.add((r0 + rr) * d + c0 + 16 * c)));
            }
        }
        for j in 0..nk {
            let mut vv = [_mm512_setzero_ps(); CV];
            for (c, x) in vv.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(vp.add(j * d + c0 + 16 * c));
            }
            for (rr, row) in regs.iter_mut().enumerate() {
                let p = _mm512_set1_ps(*pp.add(j * TILE + r0 + rr));
                for (a, &x) in row.iter_mut().zip(&vv) {
                    *a = _mm512_fmadd_ps(p, x, *a);
                }
            }
        }
        for (rr, row) in regs.iter().enumerate() {
            for (c, &a) in row.iter().enumerate() {
                _mm512_storeu_ps(ap.add((r0 + rr) * d + c0 + 16 * c), a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::TestRng;

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// The AVX-512 kernels agree with the portable ones, including key-count and row-count tails.
    #[test]
    fn isas_agree_on_every_step() {
        let fast = Isa::detect(16, false);
        let mut rng = TestRng::new(3);
        for d in [16usize, 48, 64, 80, 128] {
            for (nk, rows) in [(64usize, 64usize), (1, 1), (7, 13), (33, 64), (64, 3)] {
                let k = rng.normals(nk * d);
                let v = rng.normals(nk * d);
                let qt = rng.normals(d * TILE);
                let acc0 = rng.normals(TILE * d);
                let mut results = Vec::new();
                for isa in [fast, Isa::Portable] {
                    let mut st = vec![0.0; TILE * TILE];
                    scores_t(isa, &k, nk, d, &qt, &mut st);
                    // Mask a few entries, as the mainloop does.
                    st[5] = f32::NEG_INFINITY;
                    let mut state = SoftmaxState::new();
                    state.row_max[1] = 3.0;
                    state.row_sum[1] = 2.0;
                    softmax_update(isa, &mut st, nk, &mut state);
                    let mut acc = acc0.clone();
                    accumulate_pv(isa, &st, nk, &v, d, &state.alpha, &mut acc, rows);
                    results.push((st, state.row_sum, acc));
                }
                let (a, b) = (&results[0], &results[1]);
                assert!(max_diff(&a.0[..nk * TILE], &b.0[..nk * TILE]) < 1e-5, "probabilities d={d} nk={nk}");
                assert!(max_diff(&a.1, &b.1) < 1e-4, "row sums d={d} nk={nk}");
                assert!(max_diff(&a.2[..rows * d], &b.2[..rows * d]) < 1e-4, "accumulator d={d} nk={nk} rows={rows}");
            }
        }
    }
}
