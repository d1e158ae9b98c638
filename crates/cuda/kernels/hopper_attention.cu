// Hopper (sm_90a) warp-specialised attention (hopper/fa3_sm90.cuh) as launchable entry points, and
// the index planner that turns the core's per-64-row-block sparse index into per-128-row-tile chunks
// with exact per-block key sets. Launched from src/hopper.rs (384 threads, persistent grid, the six
// CUtensorMaps by value). bf16 only.
#include "hopper/fa3_sm90.cuh"

using namespace mi_hopper;

#define MI_HOPPER_ENTRY(NAME, D, PROD)                                                                          \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 1)                                                  \
        NAME(const __grid_constant__ TmaMap tq, const __grid_constant__ TmaMap tk,                           \
             const __grid_constant__ TmaMap tv, const __grid_constant__ TmaMap to,                           \
             const __grid_constant__ TmaMap tk64, const __grid_constant__ TmaMap tv64, const Params p) {    \
        fa3_fwd_body<D, MI_HOPPER_STAGES, PROD>(tq, tk, tv, to, tk64, tv64, p);                                            \
    }

static_assert(Layout<128, MI_HOPPER_STAGES>::alloc <= 232448, "Hopper mainloop exceeds 227 KiB of shared memory");

// Dense causal (every head dense).
MI_HOPPER_ENTRY(hopper_attn_bf16_d64_dense, 64, DenseProducer)
MI_HOPPER_ENTRY(hopper_attn_bf16_d128_dense, 128, DenseProducer)
// Every head in its own pattern (dense, A-shape, planned VS/BS index).
MI_HOPPER_ENTRY(hopper_attn_bf16_d64_mixed, 64, MixedProducer)
MI_HOPPER_ENTRY(hopper_attn_bf16_d128_mixed, 128, MixedProducer)

// ---------------------------------------------------------------------------------------------
// Index planner: one thread per (head, 128-row tile m) of one sequence. The tile's two 64-row
// blocks are slots s0 = slot_base + h * R + 2m and s0 + 1 (absent when 2m + 1 == R). Their tiles
// (ascending, disjoint 64-key ranges, clamped to [0, end of the block's rows)) are merged into union
// runs, cut into chunks like RangeProducer (128 keys; a <= 64-key remainder paired with the next
// run's first <= 64 keys); each chunk carries, per block, the bit mask of its columns that lie in
// that block's own tiles. The columns of the two blocks are merged (equal keys once, owned by
// both) into mcols and cut into 128-column gather chunks, again with per-block ownership bits.
// The consumers AND these bits with the causal mask, so each block computes exactly its own
// (row, key) pairs: tiles ∪ columns ∩ causal ∩ key < N.
//
// Output: tile_chunks[2 * (h * M + m)] = (first chunk, count); chunks of a tile start at
// 2 * tile_ptr[s0] + col_ptr[s0] / 64 + 2 * s0 (a bound of at most 2 chunks per tile plus one per
// 64 columns plus 2, monotone in s0: the host allocates 2 * n_tiles + n_cols / 64 + 2 * n_slots + 4);
// merged columns of a tile start at col_ptr[s0].
struct PlanHalf {
    int t, t_end;  // tiles [t, t_end) of tile_start
    int row_end;   // keys >= row_end are causally masked for every row of the block
};

__device__ __forceinline__ bool plan_tile(const int* tile_start, const PlanHalf& h, int j, int& s, int& e) {
    const int ts = tile_start[j];
    s = max(ts, 0);
    e = min(ts + 64, h.row_end);
    return e > s;
}

// Ownership bits of keys [a, a + l) placed at columns c0.. for block w; q = first tile of the
// block that may still overlap (advanced monotonically: chunks come in ascending key order).
__device__ __forceinline__ void plan_bits(const int* tile_start, const PlanHalf& h, int& q, int a, int l, int c0,
                                          u32 (&m)[4]) {
    int s, e;
    while (q < h.t_end && (!plan_tile(tile_start, h, q, s, e) || e <= a)) ++q;
    for (int j = q; j < h.t_end; ++j) {
        if (!plan_tile(tile_start, h, j, s, e)) continue;
        if (s >= a + l) break;
        mask_set<true>(m, max(s, a) - a + c0, min(e, a + l) - a + c0);
    }
}

__device__ __forceinline__ void plan_store(ChunkMeta* dst, const ChunkMeta& cm) {
    int4* d = (int4*)dst;
    const int4* s = (const int4*)&cm;
#pragma unroll
    for (int i = 0; i < 4; ++i) d[i] = s[i];
}

struct PlanEmit {
    const int* tile_start;
    PlanHalf half[2];
    int q[2];
    ChunkMeta* out;
    int count;

    __device__ __forceinline__ void range(int a, int la, int b, int lb, bool pair) {
        ChunkMeta cm = pair ? range_meta<true>(a, la, KIND_PAIR, b, lb) : range_meta<true>(a, la, KIND_RANGE, a + 64, la - 64);
        cm.full = 0;
#pragma unroll
        for (int w = 0; w < 2; ++w) {
            u32 m[4] = {0u, 0u, 0u, 0u};
            plan_bits(tile_start, half[w], q[w], a, la, 0, m);
            if (pair) plan_bits(tile_start, half[w], q[w], b, lb, 64, m);
            if ((m[0] & m[1] & m[2] & m[3]) == 0xffffffffu) cm.full |= 1 << w;
#pragma unroll
            for (int i = 0; i < 4; ++i) cm.mask[w][i] = m[i];
        }
        plan_store(out + count++, cm);
    }
};

extern "C" __global__ void hopper_plan_index(const unsigned* tile_ptr, const int* tile_start, const unsigned* col_ptr,
                                             const int* col_index, const int* head_kind, unsigned slot_base, int R,
                                             int M, int heads, int n, ChunkMeta* chunks, int* tile_chunks,
                                             int* mcols) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= heads * M) return;
    const int h = t / M, m = t % M;
    if (head_kind[h] != HEAD_INDEX) {
        tile_chunks[2 * t] = 0;
        tile_chunks[2 * t + 1] = 0;
        return;
    }
    const unsigned s0 = slot_base + (unsigned)h * (unsigned)R + 2u * (unsigned)m;
    const bool has1 = 2 * m + 1 < R;
    const int first = (int)(2u * tile_ptr[s0] + col_ptr[s0] / 64u + 2u * s0);
    PlanEmit em;
    em.tile_start = tile_start;
    em.half[0] = PlanHalf{(int)tile_ptr[s0], (int)tile_ptr[s0 + 1], min(128 * m + 64, n)};
    em.half[1] = has1 ? PlanHalf{(int)tile_ptr[s0 + 1], (int)tile_ptr[s0 + 2], min(128 * m + 128, n)}
                      : PlanHalf{0, 0, 0};
    em.q[0] = em.half[0].t;
    em.q[1] = em.half[1].t;
    em.out = chunks + first;
    em.count = 0;

    // Union runs of the two blocks' tiles (both ascending), cut into chunks as they close.
    int i0 = em.half[0].t, i1 = em.half[1].t;
    int rs = 0, re = -1;  // current run [rs, re); re < 0: none
    int pend_a = 0, pend_l = 0;
    auto flush = [&](int a, int b) {
        while (a < b) {
            if (pend_l > 0) {
                const int lb = min(64, b - a);
                em.range(pend_a, pend_l, a, lb, true);
                pend_l = 0;
                a += lb;
                continue;
            }
            const int l = min(BN, b - a);
            if (l <= 64) {
                pend_a = a;
                pend_l = l;
                a += l;
            } else {
                em.range(a, l, 0, 0, false);
                a += l;
            }
        }
    };
    while (true) {
        int s = 0, e = 0, w = -1;
        int s0v, e0v, s1v, e1v;
        while (i0 < em.half[0].t_end && !plan_tile(tile_start, em.half[0], i0, s0v, e0v)) ++i0;
        while (i1 < em.half[1].t_end && !plan_tile(tile_start, em.half[1], i1, s1v, e1v)) ++i1;
        const bool ok0 = i0 < em.half[0].t_end, ok1 = i1 < em.half[1].t_end;
        if (ok0 && (!ok1 || s0v <= s1v)) {
            s = s0v;
            e = e0v;
            w = 0;
        } else if (ok1) {
            s = s1v;
            e = e1v;
            w = 1;
        }
        if (w < 0) break;
        if (w == 0) ++i0; else ++i1;
        if (re >= 0 && s <= re) {
            re = max(re, e);
        } else {
            if (re >= 0) flush(rs, re);
            rs = s;
            re = e;
        }
    }
    if (re >= 0) flush(rs, re);
    if (pend_l > 0) em.range(pend_a, pend_l, 0, 0, false);

    // Merged columns of both blocks.
    int c0 = (int)col_ptr[s0], c0_end = (int)col_ptr[s0 + 1];
    int c1 = has1 ? (int)col_ptr[s0 + 1] : 0, c1_end = has1 ? (int)col_ptr[s0 + 2] : 0;
    const int cbase = (int)col_ptr[s0];
    int k = 0, kc = 0, maxkey = -1;
    u32 own[2][4] = {{0u, 0u, 0u, 0u}, {0u, 0u, 0u, 0u}};
    auto gflush = [&]() {
        const int len = k - kc;
        ChunkMeta cm = range_meta<true>(cbase + kc, len, KIND_GATHER, 0, 0);
        cm.maxkey = maxkey;
        cm.full = 0;
#pragma unroll
        for (int w = 0; w < 2; ++w) {
            if ((own[w][0] & own[w][1] & own[w][2] & own[w][3]) == 0xffffffffu) cm.full |= 1 << w;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                cm.mask[w][i] = own[w][i];
                own[w][i] = 0u;
            }
        }
        plan_store(em.out + em.count++, cm);
        kc = k;
        maxkey = -1;
    };
    while (c0 < c0_end || c1 < c1_end) {
        int key, who;
        const int a = c0 < c0_end ? col_index[c0] : 0x7fffffff;
        const int b = c1 < c1_end ? col_index[c1] : 0x7fffffff;
        if (c1 >= c1_end || (c0 < c0_end && a < b)) {
            key = a;
            who = 1;
            ++c0;
        } else if (c0 >= c0_end || b < a) {
            key = b;
            who = 2;
            ++c1;
        } else {
            key = a;
            who = 3;
            ++c0;
            ++c1;
        }
        const int c = k - kc;
        mcols[cbase + k] = key;
#pragma unroll
        for (int q = 0; q < 4; ++q) {  // constant indices: own stays in registers
            const u32 bit = mask_word(c) == q ? 1u << mask_bit(c) : 0u;
            if (who & 1) own[0][q] |= bit;
            if (who & 2) own[1][q] |= bit;
        }
        maxkey = max(maxkey, key);
        ++k;
        if (k - kc == BN) gflush();
    }
    if (k > kc) gflush();
    tile_chunks[2 * t] = first;
    tile_chunks[2 * t + 1] = em.count;
}
