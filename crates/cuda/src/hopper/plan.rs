//! The index planner's launch (`hopper_plan_index`, kernels/hopper_attention.cu) and what tests and
//! benchmarks read back from it: `plan_summary` (chunk kinds, owned vs issued pairs) and
//! `planned_keys` (the keys each 64-row block gets).

use super::{BM, CHUNK_BYTES};
use crate::context::{Arg, Gpu};
use crate::error::{CudaError, Result};
use crate::index::DeviceIndex;
use crate::layout::Meta;
use cudarc::driver::CudaSlice;
use minference_core::{AttnShape, HeadPattern, SeqLen};

/// The planner's output for one launch: chunk descriptors (numbered from the launch's first slot,
/// at a per-slot bound), merged columns at the index's column offsets, per-tile (first, count).
pub(super) struct PlanBuffers {
    pub(super) chunks: CudaSlice<u8>,
    pub(super) mcols: CudaSlice<i32>,
    pub(super) tile_chunks: CudaSlice<i32>,
}

impl PlanBuffers {
    /// Room for `chunk_capacity` chunks (a [`LaunchPlan`]'s bound).
    pub(super) fn new(gpu: &Gpu, shape: &AttnShape, ix: &DeviceIndex, chunk_capacity: usize) -> Result<PlanBuffers> {
        let max_tiles = shape.seqs.iter().map(|s| s.q_len.div_ceil(BM)).max().unwrap_or(0) * shape.heads;
        Ok(PlanBuffers {
            chunks: gpu.alloc::<u8>(chunk_capacity * CHUNK_BYTES)?,
            mcols: gpu.alloc::<i32>(ix.n_cols.max(1))?,
            tile_chunks: gpu.alloc::<i32>(2 * max_tiles.max(1))?,
        })
    }
}

/// The heads of one kernel launch: query heads `h0 .. h0 + heads` of one sequence, reading KV
/// heads `kv0 .. kv0 + kv_heads` (whole GQA groups, or part of one group with `kv_heads == 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HeadGroup {
    pub(super) h0: usize,
    pub(super) heads: usize,
    pub(super) kv0: usize,
    pub(super) kv_heads: usize,
}

/// How a layer's attention is split into launches: per sequence its head groups, and the chunk
/// bound of the largest one (what the planner buffer must hold).
pub(super) struct LaunchPlan {
    pub(super) groups: Vec<Vec<HeadGroup>>,
    pub(super) chunk_capacity: usize,
}

/// Chunks that slot `s` starts at (`chunk_pos` in `hopper_plan_index`): every slot may plan two
/// chunks per tile, one per 64 merged columns and two more.
fn chunk_pos(tile_ptr: &[u32], col_ptr: &[u32], s: usize) -> usize {
    2 * tile_ptr[s] as usize + col_ptr[s] as usize / 64 + 2 * s
}

/// One launch for all heads of a sequence when the index's whole chunk bound fits the budget
/// (the usual case: no readback). Otherwise, from the index's row pointers, heads are grouped by
/// KV head (and a KV head's query heads split further) so that each launch's chunks fit the
/// budget and number below 2^31 (the kernels' `int` chunk offsets). A single head that does not
/// fit is an out-of-memory error with the bytes it needs.
pub(super) fn launch_plan(gpu: &Gpu, shape: &AttnShape, index: Option<&DeviceIndex>) -> Result<LaunchPlan> {
    let (h, hkv) = (shape.heads, shape.kv_heads);
    let all = vec![HeadGroup { h0: 0, heads: h, kv0: 0, kv_heads: hkv }; 1];
    let Some(ix) = index else {
        return Ok(LaunchPlan { groups: vec![all; shape.seqs.len()], chunk_capacity: 0 });
    };
    let whole = whole_chunk_bound(ix);
    let ChunkBudget { chunks: budget, free, total } = chunk_budget(gpu)?;
    if whole <= budget {
        return Ok(LaunchPlan { groups: vec![all; shape.seqs.len()], chunk_capacity: whole });
    }
    let (tile_ptr, col_ptr) = ix.download_row_pointers(gpu)?;
    let base = crate::layout::slot_base(shape);
    let group = h / hkv;
    let mut groups = Vec::with_capacity(shape.seqs.len());
    let mut capacity = 0;
    for (b, seq) in shape.seqs.iter().enumerate() {
        let r = seq.row_blocks();
        // Chunks of query heads [a, e) of this sequence (4 spare, as for the whole bound).
        let cost = |a: usize, e: usize| {
            let s = base[b] as usize;
            chunk_pos(&tile_ptr, &col_ptr, s + e * r) - chunk_pos(&tile_ptr, &col_ptr, s + a * r) + 4
        };
        let mut out: Vec<HeadGroup> = Vec::new();
        let mut kv = 0;
        while kv < hkv {
            // As many whole KV heads as fit, at least one.
            let mut kv_end = kv + 1;
            while kv_end < hkv && cost(kv * group, (kv_end + 1) * group) <= budget {
                kv_end += 1;
            }
            if cost(kv * group, kv_end * group) <= budget {
                out.push(HeadGroup { h0: kv * group, heads: (kv_end - kv) * group, kv0: kv, kv_heads: kv_end - kv });
                capacity = capacity.max(cost(kv * group, kv_end * group));
            } else {
                // One KV head too large for one launch: its query heads in runs that fit.
                let mut a = kv * group;
                while a < (kv + 1) * group {
                    if cost(a, a + 1) > budget {
                        return Err(CudaError::OutOfMemory { asked: cost(a, a + 1) * CHUNK_BYTES, free, total });
                    }
                    let mut e = a + 1;
                    while e < (kv + 1) * group && cost(a, e + 1) <= budget {
                        e += 1;
                    }
                    out.push(HeadGroup { h0: a, heads: e - a, kv0: kv, kv_heads: 1 });
                    capacity = capacity.max(cost(a, e));
                    a = e;
                }
            }
            kv = kv_end;
        }
        groups.push(out);
    }
    Ok(LaunchPlan { groups, chunk_capacity: capacity })
}

/// The chunk bound of one launch over all heads of an index (as `chunk_pos` past its last slot,
/// with 4 spare).
fn whole_chunk_bound(ix: &DeviceIndex) -> usize {
    2 * ix.n_tiles + ix.n_cols / 64 + 2 * ix.n_slots + 4
}

/// Bytes of the planner buffer that one launch over every head of `ix` needs: a plan budget
/// ([`Gpu::set_plan_budget`]) below it splits the launch by head groups, and the plan readbacks
/// decline it.
pub fn one_launch_plan_bytes(ix: &DeviceIndex) -> usize {
    whole_chunk_bound(ix) * CHUNK_BYTES
}

/// How many chunks one launch's planner buffer may hold, with the memory it was judged against.
struct ChunkBudget {
    chunks: usize,
    free: usize,
    total: usize,
}

/// [`Gpu::plan_budget`] if set, else 90% of the free memory, and below 2^31 chunks (the kernels'
/// `int` chunk offsets).
fn chunk_budget(gpu: &Gpu) -> Result<ChunkBudget> {
    let (free, total) = gpu.mem_info()?;
    let bytes = gpu.plan_budget().unwrap_or(free / 10 * 9);
    Ok(ChunkBudget { chunks: (bytes / CHUNK_BYTES).min(i32::MAX as usize), free, total })
}

/// Warps per CTA of `hopper_plan_index` (`PLAN_WARPS` in hopper_attention.cu).
const PLAN_WARPS: usize = 4;

/// Plans `heads` heads of one sequence from slot `slot_base` on (`hopper_plan_index`, one warp
/// per (head, 128-row tile)); `head_kind` is the device address of the first one's kind.
pub(super) fn launch_planner(
    gpu: &Gpu,
    ix: &DeviceIndex,
    head_kind: u64,
    bufs: &PlanBuffers,
    slot_base: u32,
    seq: SeqLen,
    heads: usize,
) -> Result<()> {
    let m_tiles = seq.q_len.div_ceil(BM);
    let tiles = heads * m_tiles;
    gpu.launch(
        "hopper_plan_index",
        (tiles.div_ceil(PLAN_WARPS) as u32, 1, 1),
        32 * PLAN_WARPS as u32,
        0,
        &[
            Arg::P(gpu.ptr(&ix.tile_ptr)),
            Arg::P(gpu.ptr(&ix.tile_start)),
            Arg::P(gpu.ptr(&ix.col_ptr)),
            Arg::P(gpu.ptr(&ix.col_index)),
            Arg::P(head_kind),
            Arg::I(slot_base as i32),
            Arg::I(seq.row_blocks() as i32),
            Arg::I(m_tiles as i32),
            Arg::I(heads as i32),
            Arg::I(seq.q_len as i32),
            Arg::I(seq.offset() as i32),
            Arg::P(gpu.ptr(&bufs.chunks)),
            Arg::P(gpu.ptr(&bufs.tile_chunks)),
            Arg::P(gpu.ptr(&bufs.mcols)),
        ],
    )
}

/// What the planner made of one sequence's index heads: chunk kinds, and per (chunk, consumer
/// warpgroup) which halves of the 128 columns hold that warpgroup's keys (the causal rule as the
/// kernel applies it). `owned_pairs / issued_pairs` is the fraction of the full-width GEMM work
/// that computes pairs of the index (before the causal mask inside diagonal chunks).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PlanSummary {
    /// Chunks by kind: contiguous range, gathered columns, two 64-key boxes.
    pub range: u64,
    pub gather: u64,
    pub pair: u64,
    /// (chunk, consumer) pairs by the columns they need: none, 0..63 only, 64..127 only, both.
    pub skip: u64,
    pub lo: u64,
    pub hi: u64,
    pub full: u64,
    /// (row, key) pairs of the consumers' own key sets (64 rows per consumer and owned column).
    pub owned_pairs: f64,
    /// 64 x 128 per (chunk, consumer): what full-width chunks compute.
    pub issued_pairs: f64,
}

impl std::fmt::Display for PlanSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let halves = (self.lo + self.hi) as f64 / (self.skip + self.lo + self.hi + self.full).max(1) as f64;
        write!(
            f,
            "chunks range {} pair {} gather {}; consumer-chunks skip {} lo {} hi {} full {} ({:.1}% half); owned/issued {:.3}",
            self.range,
            self.pair,
            self.gather,
            self.skip,
            self.lo,
            self.hi,
            self.full,
            100.0 * halves,
            self.owned_pairs / self.issued_pairs.max(1.0)
        )
    }
}

/// The planner's output on the host: `tile_chunks[2t..2t+2]` = (first, count) of tile
/// t = h * m_tiles + m, the 64-byte `ChunkMeta`s, the merged columns.
struct HostPlan {
    tile_chunks: Vec<i32>,
    chunks: Vec<u8>,
    mcols: Vec<i32>,
    m_tiles: usize,
    /// Position of query row 0 (kv_len - q_len).
    offset: usize,
}

/// Runs the planner on a one-sequence problem and copies its output back; `None` when the planned
/// chunks exceed [`MAX_SUMMARY_BYTES`], or when one launch's planner buffer would not fit (the
/// attention itself then plans by head groups, which a readback of the whole layer cannot).
fn run_planner(gpu: &Gpu, shape: &AttnShape, patterns: &[HeadPattern], ix: &DeviceIndex) -> Result<Option<HostPlan>> {
    if shape.seqs.len() != 1 {
        return Err(CudaError::Invalid("the planner readback takes one sequence".into()));
    }
    let seq = shape.seqs[0];
    let h = shape.heads;
    let m_tiles = seq.q_len.div_ceil(BM);
    let whole = whole_chunk_bound(ix);
    if whole > chunk_budget(gpu)?.chunks {
        return Ok(None);
    }
    let meta = Meta::new(gpu, shape, patterns)?;
    let bufs = PlanBuffers::new(gpu, shape, ix, whole)?;
    launch_planner(gpu, ix, meta.head_kind(gpu), &bufs, 0, seq, h)?;
    let tile_chunks = gpu.download(&bufs.tile_chunks, 2 * h * m_tiles)?;
    // Only the chunks the planner wrote come back, and not beyond MAX_SUMMARY_BYTES (a 1M-token
    // index can plan tens of millions of chunks): a benchmark and test aid, not worth GBs.
    let used = tile_chunks.chunks_exact(2).map(|tc| (tc[0] + tc[1]).max(0) as usize).max().unwrap_or(0);
    if used * CHUNK_BYTES > MAX_SUMMARY_BYTES {
        return Ok(None);
    }
    let chunks = gpu.download(&bufs.chunks, used * CHUNK_BYTES)?;
    let mcols = gpu.download(&bufs.mcols, ix.n_cols)?;
    Ok(Some(HostPlan { tile_chunks, chunks, mcols, m_tiles, offset: seq.offset() }))
}

/// Runs the planner on a one-sequence problem and summarises its chunks (benchmarks: how much of
/// the computed work the 128-row union costs). `None` when no head reads the index, or when the
/// planned chunks exceed 1 GiB or one launch's memory.
pub fn plan_summary(
    gpu: &Gpu,
    shape: &AttnShape,
    patterns: &[HeadPattern],
    index: Option<&DeviceIndex>,
) -> Result<Option<PlanSummary>> {
    let Some(ix) = index else { return Ok(None) };
    Ok(run_planner(gpu, shape, patterns, ix)?.map(|p| summarize_plan(&p.tile_chunks, &p.chunks, p.m_tiles, p.offset)))
}

/// The keys the planned chunks give each 64-row block of a one-sequence problem (ownership bits
/// only, before the kernel's per-row causal mask), sorted, a key as often as it is planned: slot
/// `h * row_blocks + b`. Index heads only; other heads' blocks are empty. `None` as for
/// [`plan_summary`]. For tests: each block must get exactly its tiles and columns, once each.
pub fn planned_keys(
    gpu: &Gpu,
    shape: &AttnShape,
    patterns: &[HeadPattern],
    index: &DeviceIndex,
) -> Result<Option<Vec<Vec<u32>>>> {
    let row_blocks = shape.seqs.first().map_or(0, |s| s.row_blocks());
    let Some(plan) = run_planner(gpu, shape, patterns, index)? else { return Ok(None) };
    let word = |c: usize, i: usize| chunk_word(&plan.chunks, c, i);
    let mut keys = vec![Vec::new(); shape.heads * row_blocks];
    for (t, tc) in plan.tile_chunks.chunks_exact(2).enumerate() {
        let (h, m) = (t / plan.m_tiles, t % plan.m_tiles);
        for c in tc[0] as usize..(tc[0] + tc[1]) as usize {
            let (start, len, kind, start2, len2) =
                (word(c, 0) as i32, word(c, 1) as i32, word(c, 2), word(c, 4) as i32, word(c, 5) as i32);
            for w in 0..2 {
                let block = 2 * m + w;
                if block >= row_blocks {
                    continue;
                }
                for col in 0..128i32 {
                    // Thread order (kernels/hopper/chunks.cuh): column c is bit 2 * (c / 8) + c % 2
                    // of word (c / 2) % 4.
                    let bit = word(c, 8 + 4 * w + ((col >> 1) & 3) as usize) >> (2 * (col >> 3) + (col & 1)) & 1;
                    if bit == 0 {
                        continue;
                    }
                    let key = match kind {
                        1 if col < len => plan.mcols[(start + col) as usize],
                        2 if col < 64 && col < len => start + col,
                        2 if col >= 64 && col - 64 < len2 => start2 + col - 64,
                        0 if col < len => start + col,
                        // An owned column past the chunk's loaded keys: reported as an impossible
                        // key, so that a test sees it.
                        _ => -1,
                    };
                    keys[h * row_blocks + block].push(key as u32);
                }
            }
        }
    }
    for k in &mut keys {
        k.sort_unstable();
    }
    Ok(Some(keys))
}

/// Little-endian word `i` of planned chunk `c` (`ChunkMeta`: start, len, kind, maxkey, start2,
/// len2, minkey, full, then the two consumers' thread-order masks).
fn chunk_word(chunks: &[u8], c: usize, i: usize) -> u32 {
    let o = c * CHUNK_BYTES + 4 * i;
    u32::from_le_bytes([chunks[o], chunks[o + 1], chunks[o + 2], chunks[o + 3]])
}

/// Largest chunk list [`plan_summary`] copies to the host.
const MAX_SUMMARY_BYTES: usize = 1 << 30;

/// Counts the planner's output: `tile_chunks[2t..2t+2]` = (first, count) of tile t = h * m_tiles + m,
/// `chunks` the 64-byte `ChunkMeta`s (little-endian words: start, len, kind, maxkey, start2, len2,
/// minkey, full, then the two consumers' thread-order masks).
fn summarize_plan(tile_chunks: &[i32], chunks: &[u8], m_tiles: usize, offset: usize) -> PlanSummary {
    let word = |c: usize, i: usize| chunk_word(chunks, c, i);
    let mut sum = PlanSummary::default();
    for (t, tc) in tile_chunks.chunks_exact(2).enumerate() {
        let (first, count) = (tc[0] as usize, tc[1] as usize);
        let m = t % m_tiles;
        for c in first..first + count {
            let (start, kind, start2) = (word(c, 0) as i32, word(c, 2), word(c, 4) as i32);
            match kind {
                0 => sum.range += 1,
                1 => sum.gather += 1,
                _ => sum.pair += 1,
            }
            for w in 0..2 {
                // Thread-order masks (kernels/hopper/chunks.cuh): bits 0..15 of each word are
                // columns 0..63.
                let mask: Vec<u32> = (0..4).map(|i| word(c, 8 + 4 * w + i)).collect();
                let row_last = (offset + m * BM + 64 * w + 63) as i32; // last row position
                let mut lo = mask.iter().any(|x| x & 0xffff != 0);
                let mut hi = mask.iter().any(|x| x >> 16 != 0);
                if kind != 1 {
                    lo &= start <= row_last;
                    hi &= start2 <= row_last;
                }
                match (lo, hi) {
                    (false, false) => sum.skip += 1,
                    (true, false) => sum.lo += 1,
                    (false, true) => sum.hi += 1,
                    (true, true) => sum.full += 1,
                }
                sum.owned_pairs += 64.0 * mask.iter().map(|x| x.count_ones() as f64).sum::<f64>();
                sum.issued_pairs += 64.0 * 128.0;
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One chunk as the kernel lays it out: (start, kind, start2) and each consumer's four mask words.
    fn chunk(start: i32, kind: u32, start2: i32, masks: [[u32; 4]; 2]) -> Vec<u8> {
        let mut words = [0u32; 16];
        words[0] = start as u32;
        words[2] = kind;
        words[4] = start2 as u32;
        for (w, m) in masks.iter().enumerate() {
            words[8 + 4 * w..12 + 4 * w].copy_from_slice(m);
        }
        words.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn summary_counts_kinds_halves_causal_cut_and_owned_pairs() {
        const LOW: u32 = 0x0000_ffff; // columns 0..63 of one quad position
        const ALL: u32 = u32::MAX;
        let mut bytes = Vec::new();
        // Tile m = 0: a range chunk [0, 128): consumer 0 owns the low half, consumer 1 everything.
        bytes.extend(chunk(0, 0, 64, [[LOW; 4], [ALL; 4]]));
        // A gather chunk: consumer 0 owns nothing, consumer 1 only the high half.
        bytes.extend(chunk(0, 1, 0, [[0; 4], [!LOW; 4]]));
        // Tile m = 0 again: a pair chunk at keys 128.. and 192..: past every row of consumer 0 and of
        // consumer 1 (rows 0..127), so both are skipped although their masks are full.
        bytes.extend(chunk(128, 2, 192, [[ALL; 4], [ALL; 4]]));
        // Tile m = 1 (rows 128..255): the same pair chunk; consumer 0 (rows 128..191) needs only its
        // low box (keys 128..191), consumer 1 both.
        bytes.extend(chunk(128, 2, 192, [[ALL; 4], [ALL; 4]]));
        // Two tiles of one head: tile 0 has chunks 0..3, tile 1 chunk 3.
        let s = summarize_plan(&[0, 3, 3, 1], &bytes, 2, 0);
        assert_eq!((s.range, s.gather, s.pair), (1, 1, 2));
        assert_eq!((s.skip, s.lo, s.hi, s.full), (3, 2, 1, 2));
        // With query row 0 at position 128 (chunked prefill), tile 0's pair chunk is visible: to
        // consumer 0 (positions 128..191) its low box only, to consumer 1 both; tile 1 sees all.
        let t = summarize_plan(&[0, 3, 3, 1], &bytes, 2, 128);
        assert_eq!((t.skip, t.lo, t.hi, t.full), (1, 2, 1, 4));
        assert_eq!(t.owned_pairs, s.owned_pairs);
        // Owned columns: 64 + 128 + 0 + 64 + 128 + 128 + 128 + 128 = 768, times 64 rows.
        assert_eq!(s.owned_pairs, 64.0 * 768.0);
        assert_eq!(s.issued_pairs, 8.0 * 64.0 * 128.0);
    }
}
