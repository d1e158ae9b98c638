//! Matrix-vector products on GGML blocks as stored (decode steps read the packed weights, never an
//! f32 copy): `y[o] = Σ_i W[o, i] · x[i]` with `W` row-major `[rows, cols]` in whole blocks per row.
//!
//! Kernels: AVX-512F and AVX2+FMA (both with F16C) for Q4_0, Q4_1 and Q8_0, chosen at run time;
//! every type (K-quants included, and every CPU) has a portable path that dequantizes one block into
//! a stack buffer and takes an f32 dot product, so no f32 row ever exists in memory.
//!
//! The activation stays f32 (f32 accumulation): the products equal the dequantize-then-f32 path up
//! to summation order, so greedy outputs of the oracle do not move. candle-core's quantized CPU
//! matmul (0.9, `default-features = false`) was evaluated first and is not used: it quantizes the
//! activation to Q8 (Q8_1 for Q4_1) before its integer dot products, which changes the numbers
//! against the f32 oracle, and on this model's Q4_1 weights it measured slower than these kernels
//! (docs/cpu.md, "Decode", has the figures).

use super::dequant;
use super::types::GgmlType;
use rayon::prelude::*;

/// A quantized `[rows, cols]` matrix kept in its GGML blocks.
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// `rows × row_bytes` bytes, one row's blocks after another.
    pub data: Vec<u8>,
}

/// Fewest rows per rayon task.
const ROWS_PER_TASK: usize = 32;

impl QuantMatrix {
    /// `None` when `ty` has no known block geometry or `cols` is not a whole number of blocks.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: Vec<u8>) -> Option<Self> {
        let (elems, bytes) = ty.block()?;
        if !cols.is_multiple_of(elems) || data.len() != rows * cols / elems * bytes || !dequant::supported(ty) {
            return None;
        }
        Some(QuantMatrix { ty, rows, cols, data })
    }

    pub fn row_bytes(&self) -> usize {
        let (elems, bytes) = self.ty.block().unwrap_or((1, 4));
        self.cols / elems * bytes
    }

    /// Reorders whole rows: row `dst` of the result is row `src_of[dst]` of `self`.
    pub fn permute_rows(&self, src_of: &[usize]) -> Self {
        let rb = self.row_bytes();
        let mut data = Vec::with_capacity(self.data.len());
        for &s in src_of {
            data.extend_from_slice(&self.data[s * rb..(s + 1) * rb]);
        }
        QuantMatrix { data, ..self.clone() }
    }

    /// The matrix dequantized to f32 (tests, and the reference the kernels are compared with).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        dequant::dequantize(self.ty, &self.data, &mut out);
        out
    }

    /// `y = W · x` (`x.len() == cols`, `y.len() == rows`), rows split over the rayon pool.
    pub fn matvec(&self, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), self.cols, "matvec input length");
        assert_eq!(y.len(), self.rows, "matvec output length");
        let kernel = Kernel::select(self.ty);
        let sums = block_sums(x);
        let rb = self.row_bytes();
        // Long contiguous runs per task (the prefetcher streams them), a few tasks per thread.
        let per_task = self.rows.div_ceil(4 * rayon::current_num_threads().max(1)).max(ROWS_PER_TASK);
        y.par_chunks_mut(per_task).enumerate().for_each(|(c, ys)| {
            let r0 = c * per_task;
            let rows = &self.data[r0 * rb..(r0 + ys.len()) * rb];
            kernel.rows(self.ty, rows, rb, x, &sums, ys);
        });
    }

    /// The same product on one thread with the portable kernel (tests compare the two).
    pub fn matvec_portable(&self, x: &[f32], y: &mut [f32]) {
        let sums = block_sums(x);
        Kernel::Portable.rows(self.ty, &self.data, self.row_bytes(), x, &sums, y);
    }
}

/// Sums of `x` over each run of 32 (the Q4_1 minimum multiplies them).
fn block_sums(x: &[f32]) -> Vec<f32> {
    x.chunks(32).map(|c| c.iter().sum()).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    fn select(ty: GgmlType) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0) {
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("f16c") {
                return Kernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                return Kernel::Avx2;
            }
        }
        let _ = ty;
        Kernel::Portable
    }

    fn rows(self, ty: GgmlType, data: &[u8], rb: usize, x: &[f32], sums: &[f32], y: &mut [f32]) {
        for (row, yv) in data.chunks_exact(rb).zip(y.iter_mut()) {
            *yv = match self {
                Kernel::Portable => portable_row(ty, row, x),
                // SAFETY: `select` checked the CPU features; rows are whole blocks of `ty` and
                // `x` has 32 values per block (asserted in `matvec`).
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 => unsafe { x86::row_avx512(ty, row, x, sums) },
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => unsafe { x86::row_avx2(ty, row, x, sums) },
            };
        }
    }
}

/// One row: each block dequantized into a stack buffer, then an f32 dot product.
fn portable_row(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    let Some((elems, bytes)) = ty.block() else { return f32::NAN };
    let mut buf = [0f32; 256];
    let mut acc = 0f32;
    for (b, xs) in row.chunks_exact(bytes).zip(x.chunks_exact(elems)) {
        let w = &mut buf[..elems];
        dequant::dequantize_block(ty, b, w);
        acc += dot(w, xs);
    }
    acc
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (u, v) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += u[l] * v[l];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(u, v)| u * v).sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::GgmlType;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn f16(b: &[u8], i: usize) -> f32 {
        let bits = u16::from_le_bytes([b[i], b[i + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    #[inline(always)]
    unsafe fn f16_ptr(p: *const u8) -> f32 {
        let bits = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
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

    #[inline(always)]
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Random blocks of `ty` with finite f16 scales (the byte patterns of the quants are arbitrary).
    fn random_blocks(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> QuantMatrix {
        let (elems, bytes) = ty.block().unwrap_or((32, 18));
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let blocks = rows * cols / elems;
        let mut data = vec![0u8; blocks * bytes];
        for b in data.chunks_exact_mut(bytes) {
            for v in b.iter_mut() {
                *v = next() as u8;
            }
            // Scales (f16) at the positions each type keeps them, set to values in ±[0.001, 0.1].
            let scale =
                |v: u64| half::f16::from_f32(((v % 1000) as f32 + 1.0) * 1e-4 * if v & 1 == 0 { 1.0 } else { -1.0 });
            let at: &[usize] = match ty {
                GgmlType::Q4_0 | GgmlType::Q8_0 => &[0],
                GgmlType::Q4_1 | GgmlType::Q4_K => &[0, 2],
                GgmlType::Q6_K => &[208],
                _ => &[],
            };
            for &i in at {
                b[i..i + 2].copy_from_slice(&scale(next()).to_le_bytes());
            }
        }
        QuantMatrix::new(ty, rows, cols, data).unwrap_or_else(|| panic!("geometry of {ty:?}"))
    }

    fn reference(m: &QuantMatrix, x: &[f32]) -> Vec<f32> {
        let w = m.dequantize();
        (0..m.rows)
            .map(|r| w[r * m.cols..(r + 1) * m.cols].iter().zip(x).map(|(a, b)| (a * b) as f64).sum::<f64>() as f32)
            .collect()
    }

    fn check(ty: GgmlType, rows: usize, blocks: usize, seed: u64) {
        let elems = ty.block().map_or(32, |b| b.0);
        let cols = blocks * elems;
        let m = random_blocks(ty, rows, cols, seed);
        let x: Vec<f32> = (0..cols).map(|i| ((i as u64 * 2654435761 + seed) % 2001) as f32 / 1000.0 - 1.0).collect();
        let want = reference(&m, &x);
        let scale: f32 = want.iter().fold(1.0f32, |a, v| a.max(v.abs()));
        let (mut fast, mut port) = (vec![0f32; rows], vec![0f32; rows]);
        m.matvec(&x, &mut fast);
        m.matvec_portable(&x, &mut port);
        for r in 0..rows {
            assert!((fast[r] - want[r]).abs() <= 1e-4 * scale, "{ty:?} row {r}: {} vs {}", fast[r], want[r]);
            assert!((port[r] - want[r]).abs() <= 1e-4 * scale, "{ty:?} portable row {r}: {} vs {}", port[r], want[r]);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn kernels_match_dequantize_then_f32(rows in 1usize..70, blocks in 1usize..6, seed in any::<u64>(), t in 0usize..5) {
            let ty = [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K][t];
            check(ty, rows, blocks, seed);
        }
    }

    #[test]
    fn permuted_rows_follow_the_map() {
        let m = random_blocks(GgmlType::Q4_1, 4, 64, 3);
        let p = m.permute_rows(&[2, 0, 3, 1]);
        let (a, b) = (m.dequantize(), p.dequantize());
        assert_eq!(&b[..64], &a[128..192]);
        assert_eq!(&b[192..], &a[64..128]);
    }
}
