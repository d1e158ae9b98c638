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
mod x86;

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
