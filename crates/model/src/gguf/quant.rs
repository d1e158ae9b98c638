//! Matrix-vector products on GGML blocks as stored (decode steps read the packed weights, never an
//! f32 copy): `y[o] = Σ_i W[o, i] · x[i]` with `W` row-major `[rows, cols]` in whole blocks per row.
//!
//! Kernels: AVX-512F and AVX2+FMA (both with F16C) for Q4_0, Q4_1 and Q8_0, chosen at run time;
//! every type (K-quants included, and every CPU) has a portable path that dequantizes one block into
//! a stack buffer and takes an f32 dot product, so no f32 row ever exists in memory.
//!
//! `matvec` (= `matvec_f32`) keeps the activation in f32 and equals the dequantize-then-f32 path up
//! to summation order. `matvec_int8` (AVX2) multiplies Q4_0/Q4_1/Q8_0 rows against the activation
//! quantized to 8 bits per run of 32, as llama.cpp does (integer products, f32 accumulation; the
//! Q4_0 offset and Q4_1 minimum use exact f32 sums); it is tested but not the default (see
//! `matvec`).
//!
//! candle-core's quantized CPU matmul (0.9.2, `default-features = false`) was evaluated first and
//! is not used: its Q4_1 dot product (this default model's type) has no SIMD form at all, and it
//! picks its AVX2 kernels for the other types at compile time (`cfg(target_feature = "avx2")`),
//! so in our portable build (no `-C target-cpu`) it runs scalar code: 384 µs for a 1536×576 Q4_1
//! matvec on 2 threads here against 72–95 µs for the f32-activation kernel below (docs/cpu.md).

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

    /// `y = W · x` (`x.len() == cols`, `y.len() == rows`), rows split over the rayon pool, with
    /// the activation in f32 (`matvec_f32`). The 8-bit-activation product (`matvec_int8`) is not
    /// the default: on the HF fixture it moved logits by up to 8% (a one-token forward, whose
    /// activations have outliers), against the oracle's 1% bound.
    pub fn matvec(&self, x: &[f32], y: &mut [f32]) {
        self.matvec_f32(x, y);
    }

    /// `y = W · x` with `x` quantized to 8 bits per run of 32 first (as llama.cpp does) and the
    /// Q4_0/Q4_1/Q8_0 blocks multiplied in integers (AVX2); other types and CPUs use `matvec_f32`.
    pub fn matvec_int8(&self, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), self.cols, "matvec input length");
        assert_eq!(y.len(), self.rows, "matvec output length");
        #[cfg(target_arch = "x86_64")]
        if x86::int8_available(self.ty) {
            let act = Q8Act::new(x);
            let rb = self.row_bytes();
            let per_task = self.rows.div_ceil(4 * rayon::current_num_threads().max(1)).max(ROWS_PER_TASK);
            y.par_chunks_mut(per_task).enumerate().for_each(|(c, ys)| {
                let r0 = c * per_task;
                for (row, yv) in self.data[r0 * rb..(r0 + ys.len()) * rb].chunks_exact(rb).zip(ys.iter_mut()) {
                    // SAFETY: `int8_available` checked AVX2/FMA/F16C and the type; rows are whole
                    // blocks and `act` holds 32 values per block.
                    *yv = unsafe { x86::row_int8_avx2(self.ty, row, &act) };
                }
            });
            return;
        }
        self.matvec_f32(x, y);
    }

    /// `y = W · x` with `x` kept in f32 (every type; the reference the int8 path is held to).
    pub fn matvec_f32(&self, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), self.cols, "matvec input length");
        assert_eq!(y.len(), self.rows, "matvec output length");
        let kernel = Kernel::select(self.ty);
        let sums = block_sums(x);
        let rb = self.row_bytes();
        let per_task = task_rows(self.rows);
        y.par_chunks_mut(per_task).enumerate().for_each(|(c, ys)| {
            let r0 = c * per_task;
            let rows = &self.data[r0 * rb..(r0 + ys.len()) * rb];
            kernel.rows(self.ty, rows, rb, x, &sums, ys);
        });
    }

    /// `ys[i] = mats[i] · x` for several matrices over the same input (Q/K/V, gate/up) in one
    /// parallel pass: one hand-off to the pool instead of one per matrix, the block sums of `x`
    /// computed once, and the tasks of all matrices balanced together.
    pub fn matvec_many(mats: &[&QuantMatrix], x: &[f32], ys: &mut [&mut [f32]]) {
        assert_eq!(mats.len(), ys.len(), "one output per matrix");
        let sums = block_sums(x);
        let total: usize = mats.iter().map(|m| m.rows).sum();
        let per_task = task_rows(total);
        let mut tasks = Vec::new();
        for (m, y) in mats.iter().zip(ys.iter_mut()) {
            assert_eq!(x.len(), m.cols, "matvec input length");
            assert_eq!(y.len(), m.rows, "matvec output length");
            let kernel = Kernel::select(m.ty);
            for (c, ys) in y.chunks_mut(per_task).enumerate() {
                tasks.push((*m, kernel, c * per_task, ys));
            }
        }
        tasks.into_par_iter().for_each(|(m, kernel, r0, ys)| {
            let rb = m.row_bytes();
            kernel.rows(m.ty, &m.data[r0 * rb..(r0 + ys.len()) * rb], rb, x, &sums, ys);
        });
    }

    /// The same product on one thread with the portable kernel (tests compare the two).
    pub fn matvec_portable(&self, x: &[f32], y: &mut [f32]) {
        let sums = block_sums(x);
        Kernel::Portable.rows(self.ty, &self.data, self.row_bytes(), x, &sums, y);
    }
}

/// Rows per rayon task for `rows` output rows: long contiguous runs (the prefetch streams them), a
/// few tasks per thread (work stealing evens out a shared machine), whole groups of four (the
/// AVX-512 kernel's unit).
fn task_rows(rows: usize) -> usize {
    rows.div_ceil(4 * rayon::current_num_threads().max(1)).max(ROWS_PER_TASK).next_multiple_of(4)
}

/// The activation quantized per run of 32: `x ≈ d_b · q`, with the exact f32 sums of each run
/// (the Q4_0 offset and the Q4_1 minimum multiply those, so they add no error).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Q8Act {
    q: Vec<i8>,
    d: Vec<f32>,
    sums: Vec<f32>,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl Q8Act {
    fn new(x: &[f32]) -> Self {
        let mut q = vec![0i8; x.len()];
        let mut d = Vec::with_capacity(x.len() / 32);
        for (xs, qs) in x.chunks(32).zip(q.chunks_mut(32)) {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for (qv, xv) in qs.iter_mut().zip(xs) {
                // Round half away from zero without a libm call (`as` saturates).
                *qv = (xv * inv + 0.5f32.copysign(*xv)) as i8;
            }
            d.push(scale);
        }
        Q8Act { q, d, sums: block_sums(x) }
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
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx512 {
            // SAFETY: as below; `rows4_avx512` reads whole rows of `data` for four outputs at once.
            unsafe { x86::rows_avx512(ty, data, rb, x, sums, y) };
            return;
        }
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
        let (mut fast, mut port, mut int8) = (vec![0f32; rows], vec![0f32; rows], vec![0f32; rows]);
        m.matvec_f32(&x, &mut fast);
        m.matvec_portable(&x, &mut port);
        m.matvec_int8(&x, &mut int8);
        // Every x86 kernel this CPU can run, called directly (`select` only ever picks the widest).
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let mut kernels = Vec::new();
            if has!("avx512f") && has!("f16c") && has!("fma") {
                kernels.push(Kernel::Avx512);
            }
            if has!("avx2") && has!("f16c") && has!("fma") {
                kernels.push(Kernel::Avx2);
            }
            let sums = block_sums(&x);
            for k in kernels {
                let mut y = vec![0f32; rows];
                k.rows(ty, &m.data, m.row_bytes(), &x, &sums, &mut y);
                for r in 0..rows {
                    assert!((y[r] - want[r]).abs() <= 1e-4 * scale, "{ty:?} {k:?} row {r}: {} vs {}", y[r], want[r]);
                }
            }
        }
        // The 8-bit activation moves each x by at most half its run's step (max|x| / 254).
        let w = m.dequantize();
        let step: Vec<f32> = x.chunks(32).map(|c| c.iter().fold(0f32, |a, v| a.max(v.abs())) / 254.0).collect();
        for r in 0..rows {
            assert!((fast[r] - want[r]).abs() <= 1e-4 * scale, "{ty:?} row {r}: {} vs {}", fast[r], want[r]);
            assert!((port[r] - want[r]).abs() <= 1e-4 * scale, "{ty:?} portable row {r}: {} vs {}", port[r], want[r]);
            let bound: f32 = w[r * cols..(r + 1) * cols].iter().enumerate().map(|(i, v)| v.abs() * step[i / 32]).sum();
            assert!(
                (int8[r] - want[r]).abs() <= bound * 1.01 + 1e-4 * scale,
                "{ty:?} int8 row {r}: {} vs {}",
                int8[r],
                want[r]
            );
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
    fn matvec_many_equals_one_matvec_per_matrix() {
        let mats = [
            random_blocks(GgmlType::Q4_1, 70, 64, 1),
            random_blocks(GgmlType::Q4_1, 9, 64, 2),
            random_blocks(GgmlType::Q8_0, 33, 64, 3),
        ];
        let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0f32; m.rows]).collect();
        let mut ys: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
        QuantMatrix::matvec_many(&mats.iter().collect::<Vec<_>>(), &x, &mut ys);
        for (m, got) in mats.iter().zip(&outs) {
            let mut want = vec![0f32; m.rows];
            m.matvec(&x, &mut want);
            assert_eq!(got, &want);
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
