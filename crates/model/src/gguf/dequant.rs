//! Dequantization of GGML blocks into f32, written from the GGML block-format description.
//! Callers guarantee `src.len() == blocks * type_size` and `dst.len() == blocks * block_elems`.

use super::types::GgmlType;
use half::{bf16, f16};
use rayon::prelude::*;

/// Blocks per rayon task: large enough that task overhead vanishes.
const BLOCKS_PER_TASK: usize = 4096;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes one block: its bytes into its elements.
type BlockFn = fn(&[u8], &mut [f32]);

/// The per-block kernel of `ty`, if supported.
fn block_kernel(ty: GgmlType) -> Option<BlockFn> {
    let kernel: BlockFn = match ty {
        GgmlType::F32 => |s, d| d[0] = f32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        GgmlType::F16 => |s, d| d[0] = f16_at(s, 0),
        GgmlType::BF16 => |s, d| d[0] = bf16::from_le_bytes([s[0], s[1]]).to_f32(),
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q4_K => q4_k,
        GgmlType::Q6_K => q6_k,
        _ => return None,
    };
    Some(kernel)
}

/// Whether `dequantize` handles `ty`.
pub fn supported(ty: GgmlType) -> bool {
    block_kernel(ty).is_some()
}

/// Dequantizes one block of `ty` (`src.len()` = its bytes, `dst.len()` = its elements); leaves
/// `dst` alone for an unsupported type.
#[inline]
pub fn dequantize_block(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    if let Some(kernel) = block_kernel(ty) {
        kernel(src, dst);
    }
}

/// Dequantizes `src` (whole blocks of `ty`) into `dst`. Returns false for an unsupported type.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    let (Some((elems, bytes)), Some(kernel)) = (ty.block(), block_kernel(ty)) else { return false };
    src.par_chunks(bytes * BLOCKS_PER_TASK).zip(dst.par_chunks_mut(elems * BLOCKS_PER_TASK)).for_each(|(s, d)| {
        for (sb, db) in s.chunks_exact(bytes).zip(d.chunks_exact_mut(elems)) {
            kernel(sb, db);
        }
    });
    true
}

/// 32 values: f16 scale, 16 bytes of 4-bit quants (low nibbles = first half), offset 8.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// 32 values: f16 scale, f16 minimum, 16 bytes of 4-bit quants.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0F) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

/// 32 values: f16 scale, 32 signed bytes.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..32 {
        y[j] = (b[2 + j] as i8) as f32 * d;
    }
}

/// Scale and minimum (6 bits each) of sub-block `j` from the 12 packed bytes of a Q4_K block.
fn k4_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// 256 values: f16 super-scale d, f16 super-min dmin, 12 bytes of packed 6-bit (scale, min) for 8
/// sub-blocks of 32, then 128 bytes of 4-bit quants; each 32-byte group holds two sub-blocks
/// (low nibbles, then high nibbles).
fn q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for group in 0..4 {
        let q = &qs[group * 32..group * 32 + 32];
        let (sc0, m0) = k4_scale_min(2 * group, scales);
        let (sc1, m1) = k4_scale_min(2 * group + 1, scales);
        let (d0, min0) = (d * sc0 as f32, dmin * m0 as f32);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let out = &mut y[group * 64..group * 64 + 64];
        for l in 0..32 {
            out[l] = d0 * (q[l] & 0x0F) as f32 - min0;
            out[l + 32] = d1 * (q[l] >> 4) as f32 - min1;
        }
    }
}

/// 256 values: 128 bytes low 4 bits, 64 bytes high 2 bits, 16 signed 8-bit sub-block scales,
/// f16 super-scale; quants are 6-bit with offset 32, in two halves of 128.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[half * 64..half * 64 + 64];
        let qh = &b[128 + half * 32..128 + half * 32 + 32];
        let sc = &b[192 + half * 8..192 + half * 8 + 8];
        let out = &mut y[half * 128..half * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}
