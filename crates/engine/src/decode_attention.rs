//! Dense attention of one new token over the f16 KV cache (a decode step), split across KV heads
//! and key blocks (split-K): each task streams one block of one KV head's keys and values once for
//! all query heads of its GQA group and returns its running max, softmax denominator and
//! unnormalised output; a final merge rescales the partials by `exp(m_b − M)`. f32 accumulation.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Keys per split-K task.
const KEY_BLOCK: usize = 256;
/// Keys converted from f16 at a time (stays in L1).
const SUB_BLOCK: usize = 32;

/// One task's result for the `group` query heads of a KV head over one block of keys.
struct Partial {
    max: Vec<f32>,
    denom: Vec<f32>,
    /// `[group, head_dim]`, not yet divided by `denom`.
    acc: Vec<f32>,
}

/// `out[h] = softmax(q_h · Kᵀ / √d) · V` for every query head `h` (`q`, `out`: `[heads, d]`);
/// `heads[g]` is KV head `g`'s `(keys, values)`, `[len, d]` each, f16.
pub fn decode_attention(q: &[f32], kv: &[(&[f16], &[f16])], head_dim: usize, out: &mut [f32]) {
    let d = head_dim;
    let kv_heads = kv.len();
    let heads = q.len() / d;
    let group = heads / kv_heads.max(1);
    let len = kv.first().map_or(0, |(k, _)| k.len() / d);
    let blocks = len.div_ceil(KEY_BLOCK).max(1);
    let scale = 1.0 / (d as f32).sqrt();
    let parts: Vec<Partial> = (0..kv_heads * blocks)
        .into_par_iter()
        .map(|task| {
            let (g, b) = (task / blocks, task % blocks);
            let (r0, r1) = (b * KEY_BLOCK, ((b + 1) * KEY_BLOCK).min(len));
            let (k, v) = kv[g];
            let qg = &q[g * group * d..(g + 1) * group * d];
            block_partial(qg, &k[r0 * d..r1 * d], &v[r0 * d..r1 * d], d, scale)
        })
        .collect();
    for g in 0..kv_heads {
        for h in 0..group {
            let ps = &parts[g * blocks..(g + 1) * blocks];
            let m = ps.iter().map(|p| p.max[h]).fold(f32::NEG_INFINITY, f32::max);
            let o = &mut out[(g * group + h) * d..(g * group + h + 1) * d];
            o.fill(0.0);
            let mut denom = 0f32;
            for p in ps {
                if p.denom[h] == 0.0 {
                    continue;
                }
                let w = (p.max[h] - m).exp();
                denom += w * p.denom[h];
                for (o, a) in o.iter_mut().zip(&p.acc[h * d..(h + 1) * d]) {
                    *o += w * a;
                }
            }
            let inv = if denom > 0.0 { 1.0 / denom } else { 0.0 };
            o.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

fn block_partial(q: &[f32], k: &[f16], v: &[f16], d: usize, scale: f32) -> Partial {
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("f16c");
        if avx512 && d.is_multiple_of(16) && d <= 256 && q.len() / d <= 8 {
            // SAFETY: the features were just detected; d is a multiple of 16 and at most 256, the
            // group at most 8 heads (the kernel's register tiles).
            return unsafe { x86::block_partial(q, k, v, d, scale) };
        }
        if avx512 && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected.
            return unsafe { block_partial_avx512(q, k, v, d, scale) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected.
            return unsafe { block_partial_avx2(q, k, v, d, scale) };
        }
    }
    block_partial_impl(q, k, v, d, scale)
}

/// The portable body compiled for AVX-512 (the compiler vectorises the dot and axpy loops).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,fma")]
unsafe fn block_partial_avx512(q: &[f32], k: &[f16], v: &[f16], d: usize, scale: f32) -> Partial {
    block_partial_impl(q, k, v, d, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_partial_avx2(q: &[f32], k: &[f16], v: &[f16], d: usize, scale: f32) -> Partial {
    block_partial_impl(q, k, v, d, scale)
}

#[inline(always)]
fn block_partial_impl(q: &[f32], k: &[f16], v: &[f16], d: usize, scale: f32) -> Partial {
    let group = q.len() / d;
    let rows = k.len() / d;
    let mut scores = vec![0f32; group * rows];
    let mut buf = [0f32; SUB_BLOCK * 128];
    let sub = if d <= 128 { SUB_BLOCK } else { 1 };
    let mut wide = Vec::new();
    let buf: &mut [f32] = if d <= 128 {
        &mut buf
    } else {
        wide.resize(d, 0.0);
        &mut wide
    };
    for s0 in (0..rows).step_by(sub) {
        let n = sub.min(rows - s0);
        let kf = &mut buf[..n * d];
        k[s0 * d..(s0 + n) * d].convert_to_f32_slice(kf);
        for h in 0..group {
            let qh = &q[h * d..(h + 1) * d];
            for r in 0..n {
                scores[h * rows + s0 + r] = dot(qh, &kf[r * d..(r + 1) * d]) * scale;
            }
        }
    }
    let mut max = vec![f32::NEG_INFINITY; group];
    let mut denom = vec![0f32; group];
    for h in 0..group {
        let s = &mut scores[h * rows..(h + 1) * rows];
        let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut l = 0f32;
        for x in s.iter_mut() {
            *x = exp_nonpositive(*x - m);
            l += *x;
        }
        max[h] = m;
        denom[h] = l;
    }
    let mut acc = vec![0f32; group * d];
    for s0 in (0..rows).step_by(sub) {
        let n = sub.min(rows - s0);
        let vf = &mut buf[..n * d];
        v[s0 * d..(s0 + n) * d].convert_to_f32_slice(vf);
        for h in 0..group {
            let a = &mut acc[h * d..(h + 1) * d];
            for r in 0..n {
                let p = scores[h * rows + s0 + r];
                for (a, x) in a.iter_mut().zip(&vf[r * d..(r + 1) * d]) {
                    *a += p * x;
                }
            }
        }
    }
    Partial { max, denom, acc }
}

/// AVX-512 with F16C: each key and value row is widened from f16 once, in registers, for every
/// query head of the group.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{exp_nonpositive, lanes16, Partial};
    use half::f16;
    use std::arch::x86_64::*;

    /// The sums of four vectors' lanes, `[Σa0, Σa1, Σa2, Σa3]`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn reduce4(a: &[__m512; 4]) -> __m128 {
        // Per 128-bit lane: s01 = [a0₀₂, a1₀₂, a0₁₃, a1₁₃] (pairwise sums of lanes 0+2 and 1+3).
        let s01 = _mm512_add_ps(_mm512_unpacklo_ps(a[0], a[1]), _mm512_unpackhi_ps(a[0], a[1]));
        let s23 = _mm512_add_ps(_mm512_unpacklo_ps(a[2], a[3]), _mm512_unpackhi_ps(a[2], a[3]));
        // Per 128-bit lane: [a0, a1, a2, a3] partial sums; then the four 128-bit lanes added.
        let t =
            _mm512_add_ps(_mm512_shuffle_ps::<0b01_00_01_00>(s01, s23), _mm512_shuffle_ps::<0b11_10_11_10>(s01, s23));
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(t)));
        let h = _mm256_add_ps(_mm512_castps512_ps256(t), hi);
        _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h))
    }

    #[target_feature(enable = "avx512f,f16c,fma")]
    pub(super) unsafe fn block_partial(q: &[f32], k: &[f16], v: &[f16], d: usize, scale: f32) -> Partial {
        let group = q.len() / d;
        let rows = k.len() / d;
        let lanes = d / 16;
        let mut scores = vec![0f32; group * rows];
        let (kp, vp, qp) = (k.as_ptr() as *const u16, v.as_ptr() as *const u16, q.as_ptr());
        // Lines a row of K (or V) spans; rows are prefetched `AHEAD` rows early, V's into L2 for the
        // second pass (the hardware prefetcher alone left the loop waiting on the cache's lines).
        const AHEAD: usize = 8;
        let lines = (2 * d).div_ceil(64);
        let mut r0 = 0;
        if group <= 4 {
            // Four keys at a time: 4 × group accumulators, then one shuffle tree sums four of them
            // at once (a quarter of the per-key horizontal reductions of the loop below).
            while r0 + 4 <= rows {
                for j in 0..4 {
                    for l in 0..lines {
                        let at = (r0 + j + AHEAD) * d + 32 * l;
                        _mm_prefetch(kp.wrapping_add(at) as *const i8, _MM_HINT_T0);
                        _mm_prefetch(vp.wrapping_add(at) as *const i8, _MM_HINT_T1);
                    }
                }
                let mut acc = [[_mm512_setzero_ps(); 4]; 4];
                for c in 0..lanes {
                    let kr =
                        |j: usize| _mm512_cvtph_ps(_mm256_loadu_si256(kp.add((r0 + j) * d + 16 * c) as *const __m256i));
                    let ks = [kr(0), kr(1), kr(2), kr(3)];
                    for (h, a) in acc.iter_mut().enumerate().take(group) {
                        let qv = _mm512_loadu_ps(qp.add(h * d + 16 * c));
                        for (a, k) in a.iter_mut().zip(&ks) {
                            *a = _mm512_fmadd_ps(qv, *k, *a);
                        }
                    }
                }
                for (h, a) in acc.iter().enumerate().take(group) {
                    let sum = _mm_mul_ps(reduce4(a), _mm_set1_ps(scale));
                    _mm_storeu_ps(scores.as_mut_ptr().add(h * rows + r0), sum);
                }
                r0 += 4;
            }
        }
        for r in r0..rows {
            let row = kp.add(r * d);
            for l in 0..lines {
                // `wrapping_add`: past the block the address may be outside `k`; prefetches never fault.
                _mm_prefetch(kp.wrapping_add((r + AHEAD) * d + 32 * l) as *const i8, _MM_HINT_T0);
                _mm_prefetch(vp.wrapping_add((r + AHEAD) * d + 32 * l) as *const i8, _MM_HINT_T1);
            }
            let mut acc = [_mm512_setzero_ps(); 8];
            for c in 0..lanes {
                let kv = _mm512_cvtph_ps(_mm256_loadu_si256(row.add(16 * c) as *const __m256i));
                for (h, a) in acc.iter_mut().enumerate().take(group) {
                    *a = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(h * d + 16 * c)), kv, *a);
                }
            }
            for (h, a) in acc.iter().enumerate().take(group) {
                *scores.get_unchecked_mut(h * rows + r) = _mm512_reduce_add_ps(*a) * scale;
            }
        }
        let mut max = vec![f32::NEG_INFINITY; group];
        let mut denom = vec![0f32; group];
        for h in 0..group {
            let s = &mut scores[h * rows..(h + 1) * rows];
            // Max, exponentials and sum as separate loops with 16 lanes: a running scalar sum
            // (or max) in the exp loop would keep it from vectorising (f32 order is kept).
            let m = lanes16(s, f32::NEG_INFINITY, f32::max);
            for x in s.iter_mut() {
                *x = exp_nonpositive(*x - m);
            }
            max[h] = m;
            denom[h] = lanes16(s, 0.0, |a, b| a + b);
        }
        let mut acc = vec![0f32; group * d];
        let ap = acc.as_mut_ptr();
        // Output tiles of 16 columns for all heads stay in registers across the rows.
        for c in 0..lanes {
            let mut o = [_mm512_setzero_ps(); 8];
            for r in 0..rows {
                let vv = _mm512_cvtph_ps(_mm256_loadu_si256(vp.add(r * d + 16 * c) as *const __m256i));
                for (h, o) in o.iter_mut().enumerate().take(group) {
                    *o = _mm512_fmadd_ps(_mm512_set1_ps(*scores.get_unchecked(h * rows + r)), vv, *o);
                }
            }
            for (h, o) in o.iter().enumerate().take(group) {
                _mm512_storeu_ps(ap.add(h * d + 16 * c), *o);
            }
        }
        Partial { max, denom, acc }
    }
}

/// `s` folded with `f` in 16 independent lanes, then across them (vectorises inside a
/// `target_feature` function, unlike one running value).
#[inline(always)]
fn lanes16(s: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 16];
    let c = s.chunks_exact(16);
    let tail = c.remainder().iter().fold(init, |a, &b| f(a, b));
    for v in c {
        for l in 0..16 {
            acc[l] = f(acc[l], v[l]);
        }
    }
    acc.iter().fold(tail, |a, &b| f(a, b))
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (u, v) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += u[l] * v[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

const LOG2_E: f32 = std::f32::consts::LOG2_E;
const LN2: f32 = std::f32::consts::LN_2;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Adding 1.5·2^23 rounds an f32 of magnitude < 2^22 to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// `e^x` for `x <= 0`, branch-free so loops over it vectorise (libm's `expf` is a scalar call);
/// ~3e-7 relative error, exactly 0 below about e^-88.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    let x = x.clamp(-127.0 * LN2, 0.0);
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    // Cody–Waite: x − n·ln2 with ln2 split in two, so the reduction loses no bits for large |x|.
    let f = (x - n * LN2_HI) - n * LN2_LO;
    let biased = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32) + 127;
    let scale = f32::from_bits((biased as u32) << 23);
    // Taylor series of e^f for |f| <= ln2 / 2.
    let p = 1.0 + f * (1.0 + f * (0.5 + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0))))));
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(q: &[f32], k: &[Vec<f32>], v: &[Vec<f32>], d: usize) -> Vec<f32> {
        let heads = q.len() / d;
        let group = heads / k.len();
        let mut out = vec![0f32; q.len()];
        for h in 0..heads {
            let (kh, vh) = (&k[h / group], &v[h / group]);
            let len = kh.len() / d;
            let s: Vec<f64> = (0..len)
                .map(|j| (0..d).map(|i| (q[h * d + i] * kh[j * d + i]) as f64).sum::<f64>() / (d as f64).sqrt())
                .collect();
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let p: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = p.iter().sum();
            for i in 0..d {
                out[h * d + i] = ((0..len).map(|j| p[j] * vh[j * d + i] as f64).sum::<f64>() / z) as f32;
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn split_k_matches_one_pass_softmax(len in 1usize..700, kv_heads in 1usize..4, group in 1usize..4, seed in any::<u32>()) {
            let d = 64;
            let mut s = seed as u64 | 1;
            let mut r = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 33) as f32 / (1u64 << 31) as f32) * 4.0 - 2.0 };
            let q: Vec<f32> = (0..kv_heads * group * d).map(|_| r()).collect();
            let k: Vec<Vec<f32>> = (0..kv_heads).map(|_| (0..len * d).map(|_| f16::from_f32(r()).to_f32()).collect()).collect();
            let v: Vec<Vec<f32>> = (0..kv_heads).map(|_| (0..len * d).map(|_| f16::from_f32(r()).to_f32()).collect()).collect();
            let kh: Vec<Vec<f16>> = k.iter().map(|x| x.iter().map(|&y| f16::from_f32(y)).collect()).collect();
            let vh: Vec<Vec<f16>> = v.iter().map(|x| x.iter().map(|&y| f16::from_f32(y)).collect()).collect();
            let pairs: Vec<(&[f16], &[f16])> = kh.iter().zip(&vh).map(|(a, b)| (a.as_slice(), b.as_slice())).collect();
            let mut out = vec![0f32; q.len()];
            decode_attention(&q, &pairs, d, &mut out);
            let want = reference(&q, &k, &v, d);
            for (a, b) in out.iter().zip(&want) {
                prop_assert!((a - b).abs() < 1e-4, "{} vs {}", a, b);
            }
        }
    }

    #[test]
    fn exp_matches_std() {
        let mut x = 0.0f32;
        while x > -90.0 {
            let (got, want) = (exp_nonpositive(x), x.exp());
            assert!((got - want).abs() <= 5e-7 * want + 1e-38, "x={x} {got} vs {want}");
            x -= 0.0173;
        }
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }
}
