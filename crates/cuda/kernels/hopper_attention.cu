// Hopper (sm_90a) warp-specialised attention (hopper/fa3_sm90.cuh) as launchable entry points, and
// the index planner that turns the core's per-64-row-block sparse index into per-128-row-tile chunks
// with exact per-block key sets. Launched from src/hopper/mod.rs (384 threads, persistent grid, the
// six CUtensorMaps by value; bf16 and f16), the planner from src/hopper/plan.rs.
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
// The same four for f16 inputs.
MI_HOPPER_ENTRY(hopper_attn_f16_d64_dense, 64, F16Elems<DenseProducer>)
MI_HOPPER_ENTRY(hopper_attn_f16_d128_dense, 128, F16Elems<DenseProducer>)
MI_HOPPER_ENTRY(hopper_attn_f16_d64_mixed, 64, F16Elems<MixedProducer>)
MI_HOPPER_ENTRY(hopper_attn_f16_d128_mixed, 128, F16Elems<MixedProducer>)

// ---------------------------------------------------------------------------------------------
// Index planner: one warp per (head, 128-row tile m) of one sequence. The tile's two 64-row
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
//
// Work split (one thread per tile left most SMs idle and walked global memory serially): the
// warp stages the tile's lists in shared memory when they fit; the union runs and their chunks'
// key ranges are split over the lanes by merge path (plan_runs), and so is the column merge (lists
// in any other order: lane 0 merges them sequentially); the lanes then fill the chunks' ownership
// masks in parallel.
constexpr int PLAN_WARPS = 4;     // warps per CTA
constexpr int PLAN_STAGE = 1024;  // staged list entries per warp (4 KB)
constexpr int PLAN_GCAP = 32;     // gather chunks whose ownership bits one pass accumulates
constexpr u32 FULL_WARP = 0xffffffffu;

struct PlanHalf {
    int t, t_end;  // tiles [t, t_end) of the staged list
    int row_end;   // keys >= row_end are causally masked for every row of the block
};

__device__ __forceinline__ bool plan_tile(const int* tiles, const PlanHalf& h, int j, int& s, int& e) {
    const int ts = tiles[j];
    s = max(ts, 0);
    e = min(ts + 64, h.row_end);
    return e > s;
}

// Ownership bits of keys [a, a + l) placed at columns c0.. for block w; q = first tile of the
// block that may still overlap (advanced monotonically within one chunk).
__device__ __forceinline__ void plan_bits(const int* tiles, const PlanHalf& h, int& q, int a, int l, int c0,
                                          u32 (&m)[4]) {
    int s, e;
    while (q < h.t_end && (!plan_tile(tiles, h, q, s, e) || e <= a)) ++q;
    for (int j = q; j < h.t_end; ++j) {
        if (!plan_tile(tiles, h, j, s, e)) continue;
        if (s >= a + l) break;
        mask_set<true>(m, max(s, a) - a + c0, min(e, a + l) - a + c0);
    }
}

// First tile of h that may overlap keys >= a: tiles ascend, so those before it end at or before a.
__device__ __forceinline__ int plan_seek(const int* tiles, const PlanHalf& h, int a) {
    int lo = h.t, hi = h.t_end;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (tiles[mid] + 64 <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

__device__ __forceinline__ void plan_store(ChunkMeta* dst, const ChunkMeta& cm) {
    int4* d = (int4*)dst;
    const int4* s = (const int4*)&cm;
#pragma unroll
    for (int i = 0; i < 4; ++i) d[i] = s[i];
}

// The warp's copy of n list entries at src: shared memory when they fit, else src itself.
__device__ __forceinline__ const int* plan_stage(int* stage, const int* src, int n, int lane) {
    if (n > PLAN_STAGE) return src;
    for (int i = lane; i < n; i += 32) stage[i] = src[i];
    __syncwarp();
    return stage;
}

// Tiles [begin, end) of h that are not empty after clipping to [0, row_end): the list ascends, so
// the empty ones are a prefix (ending at or before key 0) and a suffix (starting at or past row_end).
__device__ __forceinline__ int2 plan_valid(const int* tiles, const PlanHalf& h) {
    int lo = h.t, hi = h.t_end;
    while (lo < hi) {  // first tile ending past key 0
        const int mid = (lo + hi) >> 1;
        if (tiles[mid] + 64 <= 0) lo = mid + 1; else hi = mid;
    }
    const int b = lo;
    hi = h.t_end;
    while (lo < hi) {  // first tile starting at or past row_end
        const int mid = (lo + hi) >> 1;
        if (tiles[mid] < h.row_end) lo = mid + 1; else hi = mid;
    }
    return make_int2(b, h.row_end > 0 ? lo : b);
}

// Merge-path split: how many of the first d elements of merge(A, B) come from A (ties: A first).
__device__ __forceinline__ int plan_diagonal(const int* A, int na, const int* B, int nb, int d) {
    int lo = max(0, d - nb), hi = min(d, na);
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (A[mid] <= B[d - 1 - mid])
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

// How one union run of L keys is cut, as a map of the state between runs: p = 1 when a <= 64-key
// remainder of an earlier run waits to be paired with this run's first <= 64 keys. out: that state
// after the run; cnt: the chunks it emits (the pair included). Maps compose in run order, so a
// warp scan gives every lane its first chunk and its incoming state.
struct PlanCut {
    int out0, out1, cnt0, cnt1;  // by incoming state 0 / 1
};

__device__ __forceinline__ PlanCut plan_cut_identity() { return PlanCut{0, 1, 0, 0}; }

__device__ __forceinline__ PlanCut plan_cut_run(int L) {
    const int lb = min(64, L), r0 = L & (BN - 1), r1 = (L - lb) & (BN - 1);
    return PlanCut{r0 > 0 && r0 <= 64, r1 > 0 && r1 <= 64, L / BN + (r0 > 64), 1 + (L - lb) / BN + (r1 > 64)};
}

// f, then g.
__device__ __forceinline__ PlanCut plan_cut_then(const PlanCut& f, const PlanCut& g) {
    return PlanCut{f.out0 ? g.out1 : g.out0, f.out1 ? g.out1 : g.out0, f.cnt0 + (f.out0 ? g.cnt1 : g.cnt0),
                   f.cnt1 + (f.out1 ? g.cnt1 : g.cnt0)};
}

__device__ __forceinline__ PlanCut plan_cut_shfl_up(const PlanCut& f, int off) {
    return PlanCut{__shfl_up_sync(FULL_WARP, f.out0, off), __shfl_up_sync(FULL_WARP, f.out1, off),
                   __shfl_up_sync(FULL_WARP, f.cnt0, off), __shfl_up_sync(FULL_WARP, f.cnt1, off)};
}

// The union runs of both blocks' valid tiles, cut into chunks (128 keys; a <= 64-key remainder
// paired with the next run's first <= 64 keys, or alone at the end): chunk c gets its key ranges
// (a, la, b, lb; lb == 0: a RANGE chunk, else a PAIR) in its first 16 bytes, and the lanes turn
// them into ChunkMetas afterwards. Returns the chunk count (the same in every lane).
//
// Lane-parallel: each lane takes a 32nd of the two tile lists merged by start (merge path). Ends
// ascend with starts within a block, so the largest end before a merged position is the larger of
// the two blocks' ends just before it, and a tile starts a union run exactly when its start lies
// past that (touching tiles join, as in a sequential merge). Three walks of the lane's stretch:
// where its runs start (a run that starts in one lane ends where the next run starts, maybe in a
// later lane), the run lengths' cut maps (a warp scan of them places every lane's chunks), and the
// chunks themselves. A pair whose remainder comes from an earlier lane is written in two halves:
// (a, la) by the lane holding the remainder, (b, lb) by the lane whose run completes it.
__device__ int plan_runs(const int* tiles, const PlanHalf (&half)[2], ChunkMeta* out, int lane) {
    const int2 v0 = plan_valid(tiles, half[0]), v1 = plan_valid(tiles, half[1]);
    const int *A = tiles + v0.x, *B = tiles + v1.x;
    const int na = v0.y - v0.x, nb = v1.y - v1.x, ra = half[0].row_end, rb = half[1].row_end;
    const int total = na + nb, per = (total + 31) / 32;
    const int d0 = min(total, lane * per), d1 = min(total, d0 + per);
    const int i0 = plan_diagonal(A, na, B, nb, d0);
    // Calls head(start, largest end before it) at each union run that starts in the stretch.
    auto walk = [&](auto&& head) {
        int i = i0, j = d0 - i0;
        int M = max(i > 0 ? min(A[i - 1] + 64, ra) : -1, j > 0 ? min(B[j - 1] + 64, rb) : -1);
        for (int d = d0; d < d1; ++d) {
            int t, e;
            if (j >= nb || (i < na && A[i] <= B[j])) {
                t = A[i++];
                e = min(t + 64, ra);
            } else {
                t = B[j++];
                e = min(t + 64, rb);
            }
            const int s = max(t, 0);
            if (s > M) head(s, M);
            M = max(M, e);
        }
    };
    const int last_end = max(na > 0 ? min(A[na - 1] + 64, ra) : -1, nb > 0 ? min(B[nb - 1] + 64, rb) : -1);

    // 1. The end of this lane's last run: the largest end before the next lane's first run start.
    int close = last_end, has = 0;
    walk([&](int, int m) {
        if (!has) close = m;
        has = 1;
    });
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {  // nearest lane at or after this one with a run start
        const int c2 = __shfl_down_sync(FULL_WARP, close, off), h2 = __shfl_down_sync(FULL_WARP, has, off);
        if (!has && lane + off < 32) {
            close = c2;
            has = h2;
        }
    }
    const int after_c = __shfl_down_sync(FULL_WARP, close, 1), after_h = __shfl_down_sync(FULL_WARP, has, 1);
    const int run_close = lane < 31 && after_h ? after_c : last_end;

    // 2. Cut maps of the lane's runs, scanned over the lanes.
    PlanCut f = plan_cut_identity();
    int rs = -1;
    walk([&](int s, int m) {
        if (rs >= 0) f = plan_cut_then(f, plan_cut_run(m - rs));
        rs = s;
    });
    if (rs >= 0) f = plan_cut_then(f, plan_cut_run(run_close - rs));
    PlanCut inc = f;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const PlanCut g = plan_cut_shfl_up(inc, off);
        if (lane >= off) inc = plan_cut_then(g, inc);
    }
    PlanCut ex = plan_cut_shfl_up(inc, 1);
    if (lane == 0) ex = plan_cut_identity();
    const int n_cut = __shfl_sync(FULL_WARP, inc.cnt0, 31), last_pend = __shfl_sync(FULL_WARP, inc.out0, 31);

    // 3. The chunks.
    int idx = ex.cnt0, pend = ex.out0, own_pend = 0, pa = 0, pl = 0;
    auto cut = [&](int a, int b) {
        while (a < b) {
            if (pend) {
                const int lb = min(64, b - a);
                if (own_pend)
                    *(int4*)(out + idx) = make_int4(pa, pl, a, lb);
                else
                    *((int2*)(out + idx) + 1) = make_int2(a, lb);
                pend = own_pend = 0;
                ++idx;
                a += lb;
                continue;
            }
            const int l = min(BN, b - a);
            if (l <= 64) {
                pend = own_pend = 1;
                pa = a;
                pl = l;
            } else {
                *(int4*)(out + idx++) = make_int4(a, l, 0, 0);
            }
            a += l;
        }
    };
    rs = -1;
    walk([&](int s, int m) {
        if (rs >= 0) cut(rs, m);
        rs = s;
    });
    if (rs >= 0) cut(rs, run_close);
    if (own_pend) {  // its partner comes from a later lane, or it ends the list alone
        *(int2*)(out + idx) = make_int2(pa, pl);
        if (idx == n_cut) *((int2*)(out + idx) + 1) = make_int2(0, 0);
    }
    return n_cut + last_pend;
}

// Lanes: chunk c's ranges -> its ChunkMeta with both blocks' ownership masks. Each lane takes a
// 32nd of the chunks in a row: their keys ascend, so one binary search per block places the lane's
// tile cursors and each chunk only moves them on (one search per chunk and block cost a chain of
// dependent loads each).
__device__ __forceinline__ void plan_range_masks(const int* tiles, const PlanHalf (&half)[2], ChunkMeta* out,
                                                 int count, int lane) {
    const int per = (count + 31) / 32, c0 = min(count, lane * per), c1 = min(count, c0 + per);
    if (c0 >= c1) return;
    int q[2];
#pragma unroll
    for (int w = 0; w < 2; ++w) q[w] = plan_seek(tiles, half[w], ((const int4*)(out + c0))->x);
    for (int c = c0; c < c1; ++c) {
        const int4 r = *(const int4*)(out + c);
        const bool pair = r.w > 0;
        ChunkMeta cm = pair ? range_meta<true>(r.x, r.y, KIND_PAIR, r.z, r.w)
                            : range_meta<true>(r.x, r.y, KIND_RANGE, r.x + 64, r.y - 64);
        cm.full = 0;
#pragma unroll
        for (int w = 0; w < 2; ++w) {
            u32 m[4] = {0u, 0u, 0u, 0u};
            plan_bits(tiles, half[w], q[w], r.x, r.y, 0, m);
            if (pair) plan_bits(tiles, half[w], q[w], r.z, r.w, 64, m);
            if ((m[0] & m[1] & m[2] & m[3]) == 0xffffffffu) cm.full |= 1 << w;
#pragma unroll
            for (int i = 0; i < 4; ++i) cm.mask[w][i] = m[i];
        }
        plan_store(out + c, cm);
    }
}

// Ownership bits of merged column `rank` for block bits `who`, if its chunk is in this pass.
__device__ __forceinline__ void plan_own(u32 (*gmask)[2][4], int g0, int rank, int who) {
    const int g = (rank >> 7) - g0;
    if (g < 0 || g >= PLAN_GCAP) return;
    const int c = rank & 127;
    const u32 bit = 1u << mask_bit(c);
    if (who & 1) atomicOr(&gmask[g][0][mask_word(c)], bit);
    if (who & 2) atomicOr(&gmask[g][1][mask_word(c)], bit);
}

// One lane's stretch [d, d_end) of merge(A, B): calls f(key, who) for each merged column (who: bit 0
// in A, bit 1 in B; a key in both comes once, as A's, and its B copy right after is dropped) and
// returns how many B copies it dropped.
template <typename F>
__device__ __forceinline__ int plan_merge_walk(const int* A, int na, const int* B, int nb, int d, int d_end, F&& f) {
    int i = plan_diagonal(A, na, B, nb, d), j = d - i, dropped = 0;
    for (; d < d_end; ++d) {
        if (j >= nb || (i < na && A[i] <= B[j])) {
            const int key = A[i++];
            f(key, j < nb && B[j] == key ? 3 : 1);
        } else {
            const int key = B[j++];
            if (i > 0 && A[i - 1] == key)
                ++dropped;
            else
                f(key, 2);
        }
    }
    return dropped;
}

// Merged columns of both blocks (ascending lists A, B) into mcols[0..K) and gather chunks
// out[0..ceil(K / 128)). Each lane merges one 32nd of merge(A, B) (found by a merge-path search);
// a first walk counts the dropped duplicates, whose warp scan gives every lane its first rank.
// Returns the chunk count.
__device__ int plan_columns(const int* A, int na, const int* B, int nb, int cbase, int* mcols,
                            u32 (*gmask)[2][4], ChunkMeta* out, int lane) {
    const int total = na + nb, per = (total + 31) / 32;
    const int d = min(total, lane * per), d_end = min(total, d + per);
    const int dropped = plan_merge_walk(A, na, B, nb, d, d_end, [](int, int) {});
    int before = dropped;  // inclusive scan over lanes
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const int v = __shfl_up_sync(FULL_WARP, before, off);
        if (lane >= off) before += v;
    }
    const int K = total - __shfl_sync(FULL_WARP, before, 31);
    const int first_rank = d - (before - dropped);
    const int n_chunks = (K + BN - 1) / BN;
    for (int g0 = 0; g0 < n_chunks; g0 += PLAN_GCAP) {
        for (int i = lane; i < PLAN_GCAP * 8; i += 32) (&gmask[0][0][0])[i] = 0u;
        __syncwarp();
        int rank = first_rank;
        plan_merge_walk(A, na, B, nb, d, d_end, [&](int key, int who) {
            if (g0 == 0) mcols[cbase + rank] = key;
            plan_own(gmask, g0, rank, who);
            ++rank;
        });
        __syncwarp();  // mcols and the bits of this pass are complete
        for (int g = g0 + lane; g < min(n_chunks, g0 + PLAN_GCAP); g += 32) {
            const int kc = g * BN, len = min(BN, K - kc);
            ChunkMeta cm = range_meta<true>(cbase + kc, len, KIND_GATHER, 0, 0);
            cm.maxkey = mcols[cbase + kc + len - 1];
            cm.full = 0;
#pragma unroll
            for (int w = 0; w < 2; ++w) {
                const u32* own = gmask[g - g0][w];
                if ((own[0] & own[1] & own[2] & own[3]) == 0xffffffffu) cm.full |= 1 << w;
#pragma unroll
                for (int i = 0; i < 4; ++i) cm.mask[w][i] = own[i];
            }
            plan_store(out + g, cm);
        }
        __syncwarp();  // every lane has read this pass's bits before they are cleared
    }
    return n_chunks;
}

// Whether v[0..n) strictly ascends (the warp's vote).
__device__ __forceinline__ bool plan_ascending(const int* v, int n, int lane) {
    bool bad = false;
    for (int i = lane; i + 1 < n; i += 32) bad |= v[i] >= v[i + 1];
    return !__any_sync(FULL_WARP, bad);
}

// The same for column lists in any order (an index handed in from outside; the order of a slot's
// columns does not change which pairs it computes): lane 0 merges them the sequential way, taking
// a key once when both heads hold it, and tracks each chunk's largest key. Returns the chunk count.
__device__ int plan_columns_unordered(const int* A, int na, const int* B, int nb, int cbase, int* mcols,
                                      ChunkMeta* out) {
    int i = 0, j = 0, k = 0, kc = 0, maxkey = -1, count = 0;
    u32 own[2][4] = {{0u, 0u, 0u, 0u}, {0u, 0u, 0u, 0u}};
    auto flush = [&]() {
        ChunkMeta cm = range_meta<true>(cbase + kc, k - kc, KIND_GATHER, 0, 0);
        cm.maxkey = maxkey;
        cm.full = 0;
#pragma unroll
        for (int w = 0; w < 2; ++w) {
            if ((own[w][0] & own[w][1] & own[w][2] & own[w][3]) == 0xffffffffu) cm.full |= 1 << w;
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                cm.mask[w][q] = own[w][q];
                own[w][q] = 0u;
            }
        }
        plan_store(out + count++, cm);
        kc = k;
        maxkey = -1;
    };
    while (i < na || j < nb) {
        const int a = i < na ? A[i] : 0x7fffffff, b = j < nb ? B[j] : 0x7fffffff;
        int key, who;
        if (j >= nb || (i < na && a < b)) {
            key = a;
            who = 1;
            ++i;
        } else if (i >= na || b < a) {
            key = b;
            who = 2;
            ++j;
        } else {
            key = a;
            who = 3;
            ++i;
            ++j;
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
        if (++k - kc == BN) flush();
    }
    if (k > kc) flush();
    return count;
}

extern "C" __global__ void __launch_bounds__(32 * PLAN_WARPS, 8)
    hopper_plan_index(const unsigned* tile_ptr, const int* tile_start, const unsigned* col_ptr, const int* col_index,
                      const int* head_kind, unsigned slot_base, int R, int M, int heads, int n, int off,
                      ChunkMeta* chunks,
                      int* tile_chunks, int* mcols) {
    __shared__ int stage_all[PLAN_WARPS][PLAN_STAGE];
    __shared__ u32 gmask_all[PLAN_WARPS][PLAN_GCAP][2][4];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int t = blockIdx.x * PLAN_WARPS + warp;
    if (t >= heads * M) return;  // the whole warp
    // Longest tiles first, all heads of a row band together (a tile's lists grow with its rows,
    // causally): the last wave's warps are then the short ones, not one head's long ones.
    const int h = t % heads, m = M - 1 - t / heads;
    if (head_kind[h] != HEAD_INDEX) {
        if (lane == 0) {
            tile_chunks[2 * (h * M + m)] = 0;
            tile_chunks[2 * (h * M + m) + 1] = 0;
        }
        return;
    }
    int* stage = stage_all[warp];
    const unsigned s0 = slot_base + (unsigned)h * (unsigned)R + 2u * (unsigned)m;
    const bool has1 = 2 * m + 1 < R;
    // Chunks are numbered from this launch's first slot (the host bounds that count below 2^31 per
    // launch and splits a layer's heads over launches when its index is larger; plan.rs).
    auto chunk_pos = [&](unsigned s) { return 2ll * tile_ptr[s] + col_ptr[s] / 64u + 2ll * s; };
    const int first = (int)(chunk_pos(s0) - chunk_pos(slot_base));
    ChunkMeta* out = chunks + first;

    // Tiles of both blocks, indexed from the first block's first tile.
    const int t_base = (int)tile_ptr[s0];
    const int t_mid = (int)tile_ptr[s0 + 1] - t_base;
    const int t_end = (has1 ? (int)tile_ptr[s0 + 2] : (int)tile_ptr[s0 + 1]) - t_base;
    const int* tiles = plan_stage(stage, tile_start + t_base, t_end, lane);
    // Keys at or past a block's last row position + 1 are causally masked for all its rows.
    const PlanHalf half[2] = {PlanHalf{0, t_mid, min(128 * m + 64, n) + off},
                              has1 ? PlanHalf{t_mid, t_end, min(128 * m + 128, n) + off} : PlanHalf{0, 0, 0}};
    int count = plan_runs(tiles, half, out, lane);
    __syncwarp();  // every lane's chunk ranges are visible to every lane
    plan_range_masks(tiles, half, out, count, lane);
    __syncwarp();  // every lane is done with the staged tiles

    // Merged columns of both blocks.
    const int cbase = (int)col_ptr[s0];
    const int na = (int)col_ptr[s0 + 1] - cbase;
    const int nb = has1 ? (int)col_ptr[s0 + 2] - (int)col_ptr[s0 + 1] : 0;
    const int* cols = plan_stage(stage, col_index + cbase, na + nb, lane);
    if (plan_ascending(cols, na, lane) && plan_ascending(cols + na, nb, lane)) {
        count += plan_columns(cols, na, cols + na, nb, cbase, mcols, gmask_all[warp], out + count, lane);
    } else {
        int n_gather = 0;
        if (lane == 0) n_gather = plan_columns_unordered(cols, na, cols + na, nb, cbase, mcols, out + count);
        count += __shfl_sync(FULL_WARP, n_gather, 0);
    }
    if (lane == 0) {
        tile_chunks[2 * (h * M + m)] = first;
        tile_chunks[2 * (h * M + m) + 1] = count;
    }
}
