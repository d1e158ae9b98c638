//! Sparse-index assembly on the GPU for all heads: VS conversion (core's convert_vs_head, one thread
//! per row block) and Block-Sparse estimation (core's estimate_bs_head: real-row block means, f32
//! block scores, block 0 and the diagonal blocks forced, exact top-k), then a CSR count → scan → fill.

use crate::context::{Arg, Gpu};
use crate::error::{CudaError, Result};
use crate::estimate::DeviceVsSelection;
use crate::index::DeviceIndex;
use crate::layout::{check_patterns, check_problem, dtype_suffix, max_kv, max_row_blocks, Meta};
use crate::tensor::DeviceTensor;
use minference_core::{AttnShape, HeadPattern};

struct BsItems {
    packed: Vec<i32>,
    mean_off: Vec<i64>,
    n: usize,
    rows: usize,
    means: usize,
}

/// Items in (sequence, head) order. The query heads of one KV head share that head's K block
/// means (one offset, pooled once: `bs_pool` skips an item whose K offset repeats the previous
/// item's), so GQA pools each key block once per KV head instead of once per query head.
fn bs_items(shape: &AttnShape, patterns: &[HeadPattern]) -> Result<BsItems> {
    let d = shape.head_dim;
    let mut it = BsItems { packed: Vec::new(), mean_off: Vec::new(), n: 0, rows: 0, means: 0 };
    for (b, seq) in shape.seqs.iter().enumerate() {
        let mut k_means: Option<(usize, i64)> = None; // (kv head, offset) of the last pooled K
        for (h, p) in patterns.iter().enumerate() {
            let HeadPattern::BlockSparse { k_b } = *p else {
                continue;
            };
            let k_b = i32::try_from(k_b.min(seq.kv_len.div_ceil(64))).unwrap_or(i32::MAX);
            it.packed.extend([b as i32, h as i32, k_b, it.rows as i32]);
            it.mean_off.push(it.means as i64);
            it.means += seq.row_blocks() * d;
            let kvh = shape.kv_head_of(h);
            let k_off = match k_means {
                Some((kh, off)) if kh == kvh => off,
                _ => {
                    let off = it.means as i64;
                    it.means += seq.kv_len.div_ceil(64) * d;
                    k_means = Some((kvh, off));
                    off
                }
            };
            it.mean_off.push(k_off);
            it.rows += seq.row_blocks();
            it.n += 1;
        }
    }
    if it.rows > i32::MAX as usize {
        return Err(CudaError::Invalid("too many block-sparse row blocks".into()));
    }
    Ok(it)
}

/// Builds the index of every VS and BS head (dense and A-shape slots stay empty).
pub fn build_index(
    gpu: &Gpu,
    shape: &AttnShape,
    q: &DeviceTensor,
    k: &DeviceTensor,
    patterns: &[HeadPattern],
    vs: &DeviceVsSelection,
) -> Result<DeviceIndex> {
    check_problem(shape, (q.dtype, q.len), (k.dtype, k.len), None)?;
    check_patterns(shape, patterns)?;
    let may_overflow = entry_bound(shape, patterns, vs) > u32::MAX as u64;
    let meta = Meta::new(gpu, shape, patterns)?;
    let n_slots = meta.n_slots;
    let tile_cnt = gpu.alloc_zeros::<u32>(n_slots)?;
    let col_cnt = gpu.alloc_zeros::<u32>(n_slots)?;
    let tile_ptr = gpu.alloc::<u32>(n_slots + 1)?;
    let col_ptr = gpu.alloc::<u32>(n_slots + 1)?;
    let r_max = max_row_blocks(shape);
    let d = shape.head_dim;
    let n_vs = vs.items.len();

    // One warp per row block, up to 16 per CTA; each CTA stages its head's selection and slash
    // gaps in shared memory when they fit, so wide CTAs stage them fewer times. First the breaks
    // and gaps of every slash list (where a walk may split, and what it may jump over: index.cu).
    let convert_warps = r_max.clamp(1, 16);
    let max_sel = vs.items.iter().map(|i| i.k_v + 2 * i.k_s).max().unwrap_or(0);
    let smem_cap = max_sel.min(gpu.smem_limit() / 4);
    let next_break = gpu.alloc::<i32>(vs.sel_s.len())?;
    let next_gap = gpu.alloc::<i32>(vs.sel_s.len())?;
    gpu.launch(
        "vs_breaks",
        (n_vs as u32, 1, 1),
        1024,
        0,
        &[
            Arg::P(gpu.ptr(&vs.items_dev)),
            Arg::P(gpu.ptr(&vs.sel_s)),
            Arg::P(gpu.ptr(&next_break)),
            Arg::P(gpu.ptr(&next_gap)),
        ],
    )?;
    // Each lane's (tiles, columns) of the count pass, where the fill pass writes its share.
    let lane_cnt = gpu.alloc::<u32>(if n_vs > 0 { 64 * n_slots } else { 1 })?;
    let convert = |fill: i32, tile_start: u64, col_index: u64| -> Result<()> {
        gpu.launch(
            "vs_convert",
            (r_max.div_ceil(convert_warps) as u32, n_vs as u32, 1),
            32 * convert_warps as u32,
            smem_cap * 4,
            &[
                Arg::P(meta.seqs(gpu)),
                Arg::P(gpu.ptr(&vs.items_dev)),
                Arg::P(gpu.ptr(&vs.sel_v)),
                Arg::P(gpu.ptr(&vs.sel_s)),
                Arg::P(gpu.ptr(&next_break)),
                Arg::P(gpu.ptr(&next_gap)),
                Arg::P(meta.slot_base(gpu)),
                Arg::I(smem_cap as i32),
                Arg::I(fill),
                Arg::P(gpu.ptr(&lane_cnt)),
                Arg::P(gpu.ptr(&tile_cnt)),
                Arg::P(gpu.ptr(&col_cnt)),
                Arg::P(gpu.ptr(&tile_ptr)),
                Arg::P(gpu.ptr(&col_ptr)),
                Arg::P(tile_start),
                Arg::P(col_index),
            ],
        )
    };
    convert(0, 0, 0)?;

    // Block-sparse heads: pooled means, per-row-block selection.
    let bs = bs_items(shape, patterns)?;
    let kcap = patterns
        .iter()
        .filter_map(|p| if let HeadPattern::BlockSparse { k_b } = p { Some(*k_b) } else { None })
        .max()
        .unwrap_or(0)
        .min(max_kv(shape).div_ceil(64))
        + 3;
    let bs_dev = gpu.upload(&bs.packed)?;
    let mean_off = gpu.upload(&bs.mean_off)?;
    let sel = gpu.alloc::<i32>(bs.rows * kcap)?;
    let sel_cnt = gpu.alloc::<i32>(bs.rows)?;
    if bs.n > 0 {
        let means = gpu.alloc::<f32>(bs.means)?;
        let blocks = r_max.max(max_kv(shape).div_ceil(64));
        gpu.launch(
            &format!("bs_pool_{}", dtype_suffix(q.dtype)),
            (blocks as u32, bs.n as u32, 2),
            d as u32,
            0,
            &[
                Arg::P(q.ptr(gpu)),
                Arg::P(k.ptr(gpu)),
                Arg::P(meta.seqs(gpu)),
                Arg::P(gpu.ptr(&bs_dev)),
                Arg::I(shape.heads as i32),
                Arg::I(shape.kv_heads as i32),
                Arg::I(shape.total_q() as i32),
                Arg::I(shape.total_kv() as i32),
                Arg::I(d as i32),
                Arg::P(gpu.ptr(&mean_off)),
                Arg::P(gpu.ptr(&means)),
            ],
        )?;
        // Block scores for a chunk of query-block rows at a time (at most ~1 GiB), then the
        // per-row selection; never the whole R x R matrix.
        let rk_max = max_kv(shape).div_ceil(64);
        let smem = rk_max * 4;
        if smem > gpu.smem_limit() {
            return Err(CudaError::Invalid(format!(
                "block-sparse selection needs {smem} bytes of shared memory per row block; the device allows {} (kv_len too long)",
                gpu.smem_limit()
            )));
        }
        // Rows of scores are padded to an even length: bs_scores stores pairs of floats.
        let row_stride = rk_max.next_multiple_of(2);
        let rows_chunk = ((1usize << 30) / (4 * row_stride * bs.n)).clamp(64, r_max.div_ceil(64) * 64) / 64 * 64;
        let scores = gpu.alloc::<f32>(bs.n * rows_chunk * row_stride)?;
        let (bs_rows, bs_span) = (crate::kernels::BS_ROWS, crate::kernels::BS_SPAN);
        let mut m0 = 0;
        while m0 < r_max {
            gpu.launch(
                "bs_scores",
                (rk_max.div_ceil(bs_span) as u32, rows_chunk.div_ceil(bs_rows) as u32, bs.n as u32),
                256,
                0,
                &[
                    Arg::P(meta.seqs(gpu)),
                    Arg::P(gpu.ptr(&bs_dev)),
                    Arg::I(d as i32),
                    Arg::P(gpu.ptr(&mean_off)),
                    Arg::P(gpu.ptr(&means)),
                    Arg::I(m0 as i32),
                    Arg::I(rows_chunk as i32),
                    Arg::I(row_stride as i32),
                    Arg::P(gpu.ptr(&scores)),
                ],
            )?;
            gpu.launch(
                "bs_select",
                (rows_chunk as u32, bs.n as u32, 1),
                256,
                smem,
                &[
                    Arg::P(meta.seqs(gpu)),
                    Arg::P(gpu.ptr(&bs_dev)),
                    Arg::P(gpu.ptr(&scores)),
                    Arg::I(m0 as i32),
                    Arg::I(rows_chunk as i32),
                    Arg::I(row_stride as i32),
                    Arg::I(kcap as i32),
                    Arg::P(gpu.ptr(&sel)),
                    Arg::P(gpu.ptr(&sel_cnt)),
                ],
            )?;
            m0 += rows_chunk;
        }
    }
    let assemble = |fill: i32, tile_start: u64| -> Result<()> {
        gpu.launch(
            "bs_assemble",
            (r_max.div_ceil(128) as u32, bs.n as u32, 1),
            128,
            0,
            &[
                Arg::P(meta.seqs(gpu)),
                Arg::P(gpu.ptr(&bs_dev)),
                Arg::P(gpu.ptr(&sel)),
                Arg::P(gpu.ptr(&sel_cnt)),
                Arg::I(kcap as i32),
                Arg::P(meta.slot_base(gpu)),
                Arg::I(fill),
                Arg::P(gpu.ptr(&tile_cnt)),
                Arg::P(gpu.ptr(&tile_ptr)),
                Arg::P(tile_start),
            ],
        )
    };
    assemble(0, 0)?;

    if may_overflow {
        check_counts(gpu, &tile_cnt, &col_cnt, n_slots)?;
    }
    gpu.launch(
        "scan_counts",
        (2, 1, 1),
        1024,
        0,
        &[
            Arg::P(gpu.ptr(&tile_cnt)),
            Arg::P(gpu.ptr(&tile_ptr)),
            Arg::P(gpu.ptr(&col_cnt)),
            Arg::P(gpu.ptr(&col_ptr)),
            Arg::I(n_slots as i32),
        ],
    )?;
    let n_tiles = download_at(gpu, &tile_ptr, n_slots)? as usize;
    let n_cols = download_at(gpu, &col_ptr, n_slots)? as usize;
    let tile_start = gpu.alloc::<i32>(n_tiles)?;
    let col_index = gpu.alloc::<i32>(n_cols)?;
    convert(1, gpu.ptr(&tile_start), gpu.ptr(&col_index))?;
    assemble(1, gpu.ptr(&tile_start))?;
    Ok(DeviceIndex { tile_ptr, tile_start, col_ptr, col_index, n_slots, n_tiles, n_cols })
}

/// An upper bound of the index's tiles or columns: at most one range per slash (and the local
/// band) and one column per vertical in each row block, one tile per chosen block for BS. The
/// index counts them in `u32` (`tile_ptr`, `col_ptr`); only past this bound are the exact counts
/// checked (adaptive heads' maxima make it loose).
fn entry_bound(shape: &AttnShape, patterns: &[HeadPattern], vs: &DeviceVsSelection) -> u64 {
    let rows = |b: usize| shape.seqs[b].row_blocks() as u64;
    let vs_tiles: u64 = vs.items.iter().map(|i| rows(i.b) * (i.k_s as u64 + 2)).sum();
    let cols: u64 = vs.items.iter().map(|i| rows(i.b) * i.k_v as u64).sum();
    let bs_tiles: u64 = shape
        .seqs
        .iter()
        .map(|s| {
            let blocks = s.kv_len.div_ceil(64) as u64;
            let per_row: u64 = patterns
                .iter()
                .map(|p| match *p {
                    HeadPattern::BlockSparse { k_b } => (k_b as u64).min(blocks),
                    _ => 0,
                })
                .sum();
            s.row_blocks() as u64 * per_row
        })
        .sum();
    (vs_tiles + bs_tiles).max(cols)
}

/// Refuses an index whose counted tiles or columns do not fit the `u32` offsets (rather than
/// letting the scan wrap).
fn check_counts(
    gpu: &Gpu,
    tile_cnt: &cudarc::driver::CudaSlice<u32>,
    col_cnt: &cudarc::driver::CudaSlice<u32>,
    n: usize,
) -> Result<()> {
    let sum = |v: Vec<u32>| v.into_iter().map(u64::from).sum::<u64>();
    let (tiles, cols) = (sum(gpu.download(tile_cnt, n)?), sum(gpu.download(col_cnt, n)?));
    if tiles > u32::MAX as u64 || cols > u32::MAX as u64 {
        return Err(CudaError::Invalid(format!(
            "the layer's sparse index holds {tiles} key ranges and {cols} columns, more than its 32-bit offsets \
             count: run it over fewer heads at a time or a shorter prompt"
        )));
    }
    Ok(())
}

fn download_at(gpu: &Gpu, s: &cudarc::driver::CudaSlice<u32>, i: usize) -> Result<u32> {
    let mut out = [0u32; 1];
    gpu.stream()
        .memcpy_dtoh(&s.slice(i..i + 1), &mut out)
        .map_err(|e| CudaError::Driver { context: "reading the index size".into(), message: format!("{e:?}") })?;
    gpu.sync()?;
    Ok(out[0])
}

#[cfg(test)]
mod tests {
    use super::bs_items;
    use minference_core::{AttnShape, HeadPattern, SeqLen};

    #[test]
    fn query_heads_of_one_kv_head_share_its_k_means() {
        // 6 query heads over 2 KV heads (group 3); head 1 is not block-sparse; two sequences.
        let mut shape = AttnShape::single(6, 2, 64, 130);
        shape.seqs.push(SeqLen::prefill(70));
        let bs = HeadPattern::BlockSparse { k_b: 2 };
        let patterns = [bs, HeadPattern::Dense, bs, bs, bs, bs];
        let it = bs_items(&shape, &patterns).expect("items");
        assert_eq!(it.n, 10);
        let (q_off, k_off): (Vec<i64>, Vec<i64>) = it.mean_off.chunks(2).map(|p| (p[0], p[1])).unzip();
        // Sequence 0 items are heads 0, 2 (KV head 0) and 3, 4, 5 (KV head 1); then sequence 1.
        assert_eq!(k_off[0], k_off[1]);
        assert_eq!(k_off[2], k_off[3]);
        assert_eq!(k_off[3], k_off[4]);
        assert_ne!(k_off[1], k_off[2]);
        assert_ne!(k_off[4], k_off[5]);
        // Every query head keeps its own means; all regions are disjoint and fill `means`.
        let mut regions: Vec<(i64, usize)> = Vec::new();
        for (i, &q) in q_off.iter().enumerate() {
            let seq = &shape.seqs[if i < 5 { 0 } else { 1 }];
            regions.push((q, seq.row_blocks() * 64));
            if i == 0 || k_off[i] != k_off[i - 1] {
                regions.push((k_off[i], seq.kv_len.div_ceil(64) * 64));
            }
        }
        regions.sort();
        let mut end = 0i64;
        for (start, len) in regions {
            assert_eq!(start, end, "regions are contiguous and disjoint");
            end = start + len as i64;
        }
        assert_eq!(end as usize, it.means);
    }
}
