//! The x86-64 kernels of `QuantMatrix` (AVX-512F, AVX2 + FMA, F16C), chosen at run time by
//! `super::Kernel`.

use super::GgmlType;
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "f16c")]
unsafe fn f16(b: &[u8], i: usize) -> f32 {
    let bits = u16::from_le_bytes([b[i], b[i + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline]
#[target_feature(enable = "f16c")]
unsafe fn f16_ptr(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

pub(super) fn int8_available(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// One row of Q4_0 / Q4_1 / Q8_0 blocks against the 8-bit activation: 32 products per block
/// in two integer instructions (`maddubs`, `madd`), one f32 FMA per block for the scales.
#[target_feature(enable = "avx2,f16c,fma")]
pub(super) unsafe fn row_int8_avx2(ty: GgmlType, row: &[u8], act: &super::Q8Act) -> f32 {
    let (bytes, qs_at) = match ty {
        GgmlType::Q4_0 => (18, 2),
        GgmlType::Q4_1 => (20, 4),
        _ => (34, 2),
    };
    let blocks = row.len() / bytes;
    let (rp, xq, xd, sums) = (row.as_ptr(), act.q.as_ptr(), act.d.as_ptr(), act.sums.as_ptr());
    let m4 = _mm_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (mut off0, mut off1) = (0f32, 0f32);
    // A macro, not a closure, so every intrinsic is compiled inside this AVX2 function.
    macro_rules! block {
        ($b:expr, $acc:ident, $off:ident) => {{
            let b = $b;
            let blk = rp.add(b * bytes);
            let d = f16_ptr(blk);
            let x = _mm256_loadu_si256(xq.add(b * 32) as *const __m256i);
            let p = if ty == GgmlType::Q8_0 {
                let w = _mm256_loadu_si256(blk.add(qs_at) as *const __m256i);
                // maddubs needs an unsigned operand: |w| against x carrying w's sign.
                _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
            } else {
                let v = _mm_loadu_si128(blk.add(qs_at) as *const __m128i);
                let lo = _mm_and_si128(v, m4);
                let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
                let m = if ty == GgmlType::Q4_0 { -8.0 * d } else { f16_ptr(blk.add(2)) };
                $off += m * *sums.add(b);
                _mm256_maddubs_epi16(_mm256_set_m128i(hi, lo), x)
            };
            let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
            $acc = _mm256_fmadd_ps(p, _mm256_set1_ps(d * *xd.add(b)), $acc);
        }};
    }
    let mut b = 0;
    while b + 1 < blocks {
        block!(b, acc0, off0);
        block!(b + 1, acc1, off1);
        b += 2;
    }
    if b < blocks {
        block!(b, acc0, off0);
    }
    hsum256(_mm256_add_ps(acc0, acc1)) + off0 + off1
}

/// One row of Q4_0 / Q4_1 / Q8_0 blocks against `x`, 16 lanes.
#[target_feature(enable = "avx512f,f16c,fma")]
pub(super) unsafe fn row_avx512(ty: GgmlType, row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let mut offset = 0f32;
    let xp = x.as_ptr();
    let mask = _mm512_set1_epi32(0x0F);
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (bytes, qs_at) = if ty == GgmlType::Q4_0 { (18, 2) } else { (20, 4) };
            let blocks = row.len() / bytes;
            let rp = row.as_ptr();
            // Two blocks per iteration into two accumulators (the FMA latency chain halves).
            let mut acc2 = _mm512_setzero_ps();
            let one = |b: usize, acc: &mut __m512, offset: &mut f32| {
                let blk = rp.add(b * bytes);
                let d = f16_ptr(blk);
                // Q4_0: w = d·(q − 8); Q4_1: w = d·q + m.
                let m = if ty == GgmlType::Q4_0 { -8.0 * d } else { f16_ptr(blk.add(2)) };
                *offset += m * *sums.get_unchecked(b);
                let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(blk.add(qs_at) as *const __m128i));
                let lo = _mm512_cvtepi32_ps(_mm512_and_si512(q, mask));
                let hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4));
                let t = _mm512_mul_ps(lo, _mm512_loadu_ps(xp.add(b * 32)));
                let t = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xp.add(b * 32 + 16)), t);
                *acc = _mm512_fmadd_ps(t, _mm512_set1_ps(d), *acc);
            };
            let mut offset2 = 0f32;
            let mut b = 0;
            while b + 1 < blocks {
                _mm_prefetch(rp.add((b + 16) * bytes) as *const i8, _MM_HINT_T0);
                one(b, &mut acc, &mut offset);
                one(b + 1, &mut acc2, &mut offset2);
                b += 2;
            }
            if b < blocks {
                one(b, &mut acc, &mut offset);
            }
            acc = _mm512_add_ps(acc, acc2);
            offset += offset2;
        }
        GgmlType::Q8_0 => {
            for (b, blk) in row.chunks_exact(34).enumerate() {
                let d = f16(blk, 0);
                let p = blk.as_ptr().add(2) as *const __m128i;
                let q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p)));
                let q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(1))));
                let t = _mm512_mul_ps(q0, _mm512_loadu_ps(xp.add(b * 32)));
                let t = _mm512_fmadd_ps(q1, _mm512_loadu_ps(xp.add(b * 32 + 16)), t);
                acc = _mm512_fmadd_ps(t, _mm512_set1_ps(d), acc);
            }
        }
        _ => return super::portable_row(ty, row, x),
    }
    _mm512_reduce_add_ps(acc) + offset
}

/// Rows of Q4_0 / Q4_1 / Q8_0 four at a time (the x loads, the block sums and the loop are
/// shared; four independent accumulator chains), the remainder one row at a time.
///
/// Per block and row: one 64-bit `vcvtph2ps` widens the f16 scale and (Q4_1) minimum together;
/// the nibbles are widened to 32-bit lanes with a mask and a shift (no table), converted to f32
/// and multiplied with x: `d·Σ(q·x) + m·Σx`, where `Σx` per block is computed once per input
/// (`sums`) and reused by every row. Q4_0 is `m = −8·d`. Exact in f32 up to summation order.
#[target_feature(enable = "avx512f,f16c,fma")]
pub(super) unsafe fn rows_avx512(ty: GgmlType, data: &[u8], rb: usize, x: &[f32], sums: &[f32], y: &mut [f32]) {
    let n = y.len().min(data.len() / rb.max(1));
    let mut r = 0;
    if matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0) {
        while r + 4 <= n {
            let out = rows4_avx512(ty, data.as_ptr().add(r * rb), rb, x.as_ptr(), sums.as_ptr());
            y[r..r + 4].copy_from_slice(&out);
            r += 4;
        }
    }
    for (row, yv) in data[r * rb..n * rb].chunks_exact(rb).zip(y[r..n].iter_mut()) {
        *yv = row_avx512(ty, row, x, sums);
    }
}

#[inline]
#[target_feature(enable = "avx512f,f16c,fma")]
unsafe fn rows4_avx512(ty: GgmlType, p: *const u8, rb: usize, xp: *const f32, sums: *const f32) -> [f32; 4] {
    let (bytes, qs_at) = match ty {
        GgmlType::Q4_0 => (18, 2),
        GgmlType::Q4_1 => (20, 4),
        _ => (34, 2),
    };
    let blocks = rb / bytes;
    let mask = _mm512_set1_epi32(0x0F);
    let (mut a0, mut a1, mut a2, mut a3) =
        (_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps());
    // Lane 0: Σ d·s (Q4_0's offset is −8 times it); lane 1: Σ m·s (Q4_1's).
    let (mut o0, mut o1, mut o2, mut o3) = (_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps());
    // A macro, not a closure, so the four rows stay in registers inside this AVX-512 function.
    macro_rules! row {
        ($r:expr, $b:expr, $x0:expr, $x1:expr, $s:expr, $acc:ident, $off:ident) => {{
            let blk = p.add($r * rb + $b * bytes);
            // d and m (and two bytes of quants, ignored) in one conversion.
            let dm = _mm_cvtph_ps(_mm_loadl_epi64(blk as *const __m128i));
            let t = if ty == GgmlType::Q8_0 {
                let q = blk.add(qs_at) as *const __m128i;
                let q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q)));
                let q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q.add(1))));
                _mm512_fmadd_ps(q1, $x1, _mm512_mul_ps(q0, $x0))
            } else {
                $off = _mm_fmadd_ps(dm, $s, $off);
                let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(blk.add(qs_at) as *const __m128i));
                let lo = _mm512_cvtepi32_ps(_mm512_and_si512(q, mask));
                let hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4));
                _mm512_fmadd_ps(hi, $x1, _mm512_mul_ps(lo, $x0))
            };
            $acc = _mm512_fmadd_ps(t, _mm512_broadcastss_ps(dm), $acc);
        }};
    }
    for b in 0..blocks {
        // The row group after next, 4·`bytes` per block: its lines arrive from L3 / DRAM while
        // this group computes (the hardware prefetcher alone left the kernel waiting).
        // (`wrapping_add`: past the last row the address is outside the matrix, and a prefetch
        // never faults.)
        _mm_prefetch(p.wrapping_add(8 * rb + 4 * b * bytes) as *const i8, _MM_HINT_T0);
        _mm_prefetch(p.wrapping_add(8 * rb + 4 * b * bytes + 64) as *const i8, _MM_HINT_T0);
        let x0 = _mm512_loadu_ps(xp.add(b * 32));
        let x1 = _mm512_loadu_ps(xp.add(b * 32 + 16));
        let s = _mm_set1_ps(*sums.add(b));
        row!(0, b, x0, x1, s, a0, o0);
        row!(1, b, x0, x1, s, a1, o1);
        row!(2, b, x0, x1, s, a2, o2);
        row!(3, b, x0, x1, s, a3, o3);
    }
    let off = |o: __m128| -> f32 {
        let mut v = [0f32; 4];
        _mm_storeu_ps(v.as_mut_ptr(), o);
        match ty {
            GgmlType::Q4_0 => -8.0 * v[0],
            GgmlType::Q4_1 => v[1],
            _ => 0.0,
        }
    };
    [
        _mm512_reduce_add_ps(a0) + off(o0),
        _mm512_reduce_add_ps(a1) + off(o1),
        _mm512_reduce_add_ps(a2) + off(o2),
        _mm512_reduce_add_ps(a3) + off(o3),
    ]
}

#[inline]
#[target_feature(enable = "avx")]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// The AVX2 form of `row_avx512`, 8 lanes.
#[target_feature(enable = "avx2,f16c,fma")]
pub(super) unsafe fn row_avx2(ty: GgmlType, row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut offset = 0f32;
    let xp = x.as_ptr();
    let mask = _mm256_set1_epi32(0x0F);
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (bytes, qs_at) = if ty == GgmlType::Q4_0 { (18, 2) } else { (20, 4) };
            for (b, blk) in row.chunks_exact(bytes).enumerate() {
                let d = f16(blk, 0);
                let m = if ty == GgmlType::Q4_0 { -8.0 * d } else { f16(blk, 2) };
                offset += m * sums[b];
                let p = blk.as_ptr().add(qs_at);
                let mut t = _mm256_setzero_ps();
                for half in 0..2 {
                    let q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(8 * half) as *const __m128i));
                    let lo = _mm256_cvtepi32_ps(_mm256_and_si256(q, mask));
                    let hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(q, 4));
                    t = _mm256_fmadd_ps(lo, _mm256_loadu_ps(xp.add(b * 32 + 8 * half)), t);
                    t = _mm256_fmadd_ps(hi, _mm256_loadu_ps(xp.add(b * 32 + 16 + 8 * half)), t);
                }
                acc = _mm256_fmadd_ps(t, _mm256_set1_ps(d), acc);
            }
        }
        GgmlType::Q8_0 => {
            for (b, blk) in row.chunks_exact(34).enumerate() {
                let d = f16(blk, 0);
                let p = blk.as_ptr().add(2);
                let mut t = _mm256_setzero_ps();
                for part in 0..4 {
                    let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(8 * part) as *const __m128i));
                    t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), _mm256_loadu_ps(xp.add(b * 32 + 8 * part)), t);
                }
                acc = _mm256_fmadd_ps(t, _mm256_set1_ps(d), acc);
            }
        }
        _ => return super::portable_row(ty, row, x),
    }
    hsum256(acc) + offset
}
