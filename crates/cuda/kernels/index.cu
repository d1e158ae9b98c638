// Sparse-index assembly on the GPU: VS conversion (one warp per row block, the same result as
// core's convert_vs_head), BS block lists, and the CSR exclusive scan. Count pass -> scan -> fill pass.
#include "common.cuh"
#include "select.cuh"
#include "vs_items.cuh"

// Keys and positions are ints: the host bounds token counts 256 below 2^31 (layout.rs MAX_TOKENS),
// so a row block's end plus a tile cannot overflow, and 32-bit compares halve the searches' cost.
struct CountSink {
    u32 tiles, cols;
    __device__ void tile_range(int rs, int re) { tiles += (u32)((re - rs + 63) / 64); }
    __device__ void cols_from(const int*, int n) { cols += (u32)n; }
};
struct FillSink {
    int* tile_out;
    int* col_out;
    __device__ void tile_range(int rs, int re) {
        for (int t = rs; t < re; t += 64) *tile_out++ = t;
    }
    __device__ void cols_from(const int* v, int n) {
        for (int i = 0; i < n; ++i) col_out[i] = v[i];
        col_out += n;
    }
};

// Tiles rs, rs + 64, ... below re and kv_len.
template <typename Sink>
__device__ __forceinline__ void emit_range(Sink& sink, int rs, int re, int kv_len) {
    const int stop = re < kv_len ? re : kv_len;
    if (stop > rs) sink.tile_range(rs, stop);
}

// First index i >= lo with vs[i] >= x (vs ascending): exponential then binary search, so that a
// gap holding few verticals costs a few probes.
__device__ __forceinline__ int seek_vertical(const int* vs, int nv, int lo, int x) {
    if (lo >= nv || vs[lo] >= x) return lo;
    int step = 1, hi = lo + 1;  // vs[lo] < x
    while (hi < nv && vs[hi] < x) {
        lo = hi;
        step <<= 1;
        hi = hi + step < nv ? hi + step : nv;
    }
    while (lo + 1 < hi) {  // vs[lo] < x <= vs[hi] (or hi == nv)
        const int mid = (lo + hi) >> 1;
        if (vs[mid] < x)
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

// A VS row block's walk (core's convert_vs_head) takes the slashes in descending order and keeps
// one run of 64-key tiles open: a slash ending inside it changes nothing, one ending at most a
// tile past it extends it by a tile, one ending further starts a new run. Two facts make the walk
// cheap and parallel:
// - A run's end is at most 63 keys past its last slash's end, so a slash whose distance from the
//   previous one exceeds 2 * 64 - 1 (a "break") starts a new run in every walk that reaches both
//   unclamped. The walk splits at breaks into independent segments, which the lanes of a warp take.
// - Slashes at most a tile from the previous one never end a run: each extends it by at most a
//   tile, so a stretch of them ends the run at the first tile boundary past the stretch's last
//   slash. The walk jumps over such stretches to the next wider gap.
// A vertical is a column exactly when it lies in a gap between runs, before the first, or after the
// last and below the block's first row; each run takes the gap after it in one seek (count pass:
// a difference; fill pass: a copy).
constexpr int VS_BREAK = 2 * 64 - 1;
constexpr int VS_GAP = 64;

// Per VS item, for every slash j: next_break[j] = the first j' >= j with ss[j' - 1] - ss[j'] >
// VS_BREAK, next_gap[j] = the first with a distance > VS_GAP (ns if none). grid n_items, 1024
// threads: each warp takes a 32nd of the list (backwards, rounds of 32), then entries with none in
// their own piece take the first of the pieces after it.
extern "C" __global__ void __launch_bounds__(1024)
    vs_breaks(const int* items, const int* sel_s, int* next_break, int* next_gap) {
    __shared__ int piece_first[2][32];
    const int* item = items + IT_STRIDE * blockIdx.x;
    const int ns = item[IT_KS];
    const int* ss = sel_s + item[IT_SELS];
    int* out[2] = {next_break + item[IT_SELS], next_gap + item[IT_SELS]};
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int per = (((ns + 31) / 32) + 31) & ~31;  // a multiple of 32
    const int p0 = min(ns, warp * per), p1 = min(ns, p0 + per);
    int carry[2] = {ns, ns};  // ns inside the piece: none after this entry in the piece
    for (int base = p0 + ((p1 - p0 - 1) & ~31); base >= p0 && p1 > p0; base -= 32) {
        const int j = base + lane;
        const int dist = j < p1 && j > 0 ? ss[j - 1] - ss[j] : 0;
#pragma unroll
        for (int k = 0; k < 2; ++k) {
            const u32 at_or_after = __ballot_sync(0xffffffffu, dist > (k == 0 ? VS_BREAK : VS_GAP)) & (0xffffffffu << lane);
            const int v = at_or_after ? base + __ffs(at_or_after) - 1 : carry[k];
            if (j < p1) out[k][j] = v;
            carry[k] = __shfl_sync(0xffffffffu, v, 0);
        }
    }
    if (lane == 0) {
        piece_first[0][warp] = carry[0];
        piece_first[1][warp] = carry[1];
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 2; ++k) {
        int after = ns;  // the first of the pieces after this one
        for (int w = 31; w > warp; --w) after = piece_first[k][w] < ns ? piece_first[k][w] : after;
        if (after < ns) {
            for (int j = p0 + lane; j < p1; j += 32)
                if (out[k][j] == ns) out[k][j] = after;
        }
    }
}

// The runs of slashes [si, s_end) of one row block (slash si starts a run), their tiles, and the
// columns of the gap after each run: up to the next run's start, or for the last run of the
// segment up to gap_end (gap_end < 0: up to the block's first row). vi: first vertical not yet
// placed, at or past the first run's start; ng: next_gap. Returns the end of the segment's last run.
template <typename Sink>
__device__ int vs_segment(Sink& sink, const int* vs, int nv, int& vi, const int* ss, const int* ng, int si, int s_end,
                          int end, int start, int kv, int gap_end) {
    const int tile = 64;
    auto end_of = [&](int j) {  // the slash's key range ends here, clamped to the first tile
        const int e = end - ss[j];
        return e < tile ? tile : e;
    };
    int re = end_of(si), rs = re - tile;
    ++si;
    auto close_run = [&](int next_rs) {
        vi = seek_vertical(vs, nv, vi, re);  // covered by the run
        emit_range(sink, rs, re, kv);
        const int gap = seek_vertical(vs, nv, vi, next_rs);
        sink.cols_from(vs + vi, gap - vi);
        vi = gap;
    };
    // Slashes [si, next gap) lie at most a tile from their predecessor: the run ends at the first
    // tile boundary (from rs) at or past the last one's end.
    auto jump = [&]() {
        const int g = ng[si] < s_end ? ng[si] : s_end;
        if (g > si) {
            const int e = end_of(g - 1);
            if (e > re) re = rs + (e - rs + tile - 1) / tile * tile;
            si = g;
        }
    };
    if (si < s_end) jump();
    while (si < s_end) {
        const int e2 = end_of(si);
        ++si;
        if (e2 > re + tile) {
            close_run(e2 - tile);
            rs = e2 - tile;
            re = e2;
        } else if (e2 > re) {
            re += tile;
        }  // else: inside the run (only clamped slashes get here after a jump)
        if (si < s_end) jump();
    }
    close_run(gap_end >= 0 ? gap_end : (start > re ? start : re));
    return re;
}

// Row block m of one head, one warp: verticals vs[0..nv) ascending, slashes ss[0..ns) descending,
// nb and ng their breaks and gaps. The same tiles and columns, in the same order, as core's convert_vs_head.
// Count pass (kFill false): every lane's counts go to lane_cnt, the block's totals to the return
// values of lane 31. Fill pass: the lanes write their segments at offsets scanned from lane_cnt.
template <bool kFill>
__device__ void convert_row_block(const int* vs, int nv, const int* ss, const int* nb, const int* ng, int ns,
                                  int q_len, int kv_len,
                                  int m, int lane, uint2* lane_cnt, u32& tiles_out, u32& cols_out, int* tile_dst,
                                  int* col_dst) {
    const int tile = 64;
    const int kv = kv_len;
    const int start = (kv_len - q_len) + tile * m;
    const int end = start + tile;
    const int key_end = end < kv ? end : kv;
    // si0: first slash with ss < end; u: first with ss <= end - 64 (ends unclamped) (ss descending)
    int lo = 0, hi = ns;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (ss[mid] >= end)
            lo = mid + 1;
        else
            hi = mid;
    }
    const int si0 = lo;
    hi = ns;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (ss[mid] > end - tile)
            lo = mid + 1;
        else
            hi = mid;
    }
    const int u = lo;
    // Lane segments: lane 0 from si0, lane l > 0 from the first break at or past its share of the
    // slashes (breaks count only past u: both slashes unclamped). Equal starts: empty segments.
    const int n = ns - si0;
    const int nominal = si0 + (int)((long long)n * lane / 32);
    const int probe = nominal > u + 1 ? nominal : u + 1;
    const int my = lane == 0 ? si0 : (probe < ns ? nb[probe] : ns);
    int nxt = __shfl_down_sync(0xffffffffu, my, 1);
    if (lane == 31) nxt = ns;
    const bool active = my < nxt || (lane == 0 && si0 == ns);
    const bool last = active && nxt == ns;

    auto walk = [&](auto& sink) {
        if (!active) return;
        int vi = 0;
        int last_end = 0;
        if (si0 < ns) {
            int e = end - ss[my];
            if (e < tile) e = tile;
            vi = seek_vertical(vs, nv, 0, e - tile);
            if (lane == 0) sink.cols_from(vs, vi);  // before the first run
            const int gap_end = last ? -1 : end - ss[nxt] - tile;
            last_end = vs_segment(sink, vs, nv, vi, ss, ng, my, nxt, end, start, kv, gap_end);
        } else {
            vi = seek_vertical(vs, nv, 0, start);  // no slash reaches the block
            sink.cols_from(vs, vi);
        }
        // One vertical at or past the block's first row (and inside the block) adds the block's
        // diagonal tile after the last run.
        if (last && vi < nv && vs[vi] < key_end) {
            const int tail = start > last_end ? start : last_end;
            emit_range(sink, tail, tail + tile, kv);
        }
    };
    CountSink c{0, 0};
    if constexpr (kFill) {
        const uint2 own = lane_cnt[lane];
        c.tiles = own.x;
        c.cols = own.y;
    } else {
        walk(c);
        lane_cnt[lane] = make_uint2(c.tiles, c.cols);
    }
    u32 t_incl = c.tiles, c_incl = c.cols;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const u32 t = __shfl_up_sync(0xffffffffu, t_incl, off);
        const u32 k = __shfl_up_sync(0xffffffffu, c_incl, off);
        if (lane >= off) {
            t_incl += t;
            c_incl += k;
        }
    }
    if constexpr (kFill) {
        FillSink f{tile_dst + (t_incl - c.tiles), col_dst + (c_incl - c.cols)};
        walk(f);
    } else {
        tiles_out = __shfl_sync(0xffffffffu, t_incl, 31);
        cols_out = __shfl_sync(0xffffffffu, c_incl, 31);
    }
}

// fill == 0: writes tile_cnt/col_cnt per slot (and each lane's share in lane_cnt[32 * slot + lane]);
// fill == 1: writes tile_start/col_index at the scanned offsets. One warp per row block; grid (ceil(max R / warps per CTA), n_items).
extern "C" __global__ void vs_convert(const int* seqs, const int* items, const int* sel_v, const int* sel_s,
                                      const int* next_break, const int* next_gap, const u32* slot_base,
                                      int smem_cap, int fill,
                                      uint2* lane_cnt, u32* tile_cnt, u32* col_cnt, const u32* tile_ptr,
                                      const u32* col_ptr, int* tile_start, int* col_index) {
    const int* item = items + IT_STRIDE * blockIdx.y;
    const int b = item[IT_B], h = item[IT_H];
    const int q_len = seqs[4 * b + 2], kv_len = seqs[4 * b + 3];
    const int R = (q_len + 63) / 64;
    const int warps = blockDim.x >> 5, lane = threadIdx.x & 31;
    const int m = blockIdx.x * warps + (threadIdx.x >> 5);
    if ((int)blockIdx.x * warps >= R) return;  // whole CTA idle (keeps the barrier uniform)
    const int nv = item[IT_KV], ns = item[IT_KS];  // clamped (or adaptive) k_v, k_s
    // Every warp of the CTA walks the same selection: stage it and its gaps in shared memory when
    // they fit (the breaks are read once per lane and stay in global memory).
    extern __shared__ __align__(16) int vs_smem[];
    const int* vs = sel_v + item[IT_SELV];
    const int* ss = sel_s + item[IT_SELS];
    const int* nb = next_break + item[IT_SELS];
    const int* ng = next_gap + item[IT_SELS];
    if (nv + 2 * ns <= smem_cap) {
        for (int i = threadIdx.x; i < nv; i += blockDim.x) vs_smem[i] = vs[i];
        for (int i = threadIdx.x; i < ns; i += blockDim.x) {
            vs_smem[nv + i] = ss[i];
            vs_smem[nv + ns + i] = ng[i];
        }
        __syncthreads();
        vs = vs_smem;
        ss = vs_smem + nv;
        ng = vs_smem + nv + ns;
    }
    if (m >= R) return;  // the whole warp
    const u32 slot = slot_base[b] + (u32)h * (u32)R + (u32)m;
    if (!fill) {
        u32 tiles = 0, cols = 0;
        convert_row_block<false>(vs, nv, ss, nb, ng, ns, q_len, kv_len, m, lane, lane_cnt + 32 * (size_t)slot, tiles,
                                 cols, nullptr, nullptr);
        if (lane == 0) {
            tile_cnt[slot] = tiles;
            col_cnt[slot] = cols;
        }
    } else {
        u32 unused_t, unused_c;
        convert_row_block<true>(vs, nv, ss, nb, ng, ns, q_len, kv_len, m, lane, lane_cnt + 32 * (size_t)slot, unused_t,
                                unused_c, tile_start + tile_ptr[slot], col_index + col_ptr[slot]);
    }
}

// BS items int[4]: b, h, k_b, row0. Count or copy the selected block starts of each row block.
extern "C" __global__ void bs_assemble(const int* seqs, const int* items, const int* sel, const int* sel_cnt,
                                       int kcap, const u32* slot_base, int fill, u32* tile_cnt, const u32* tile_ptr,
                                       int* tile_start) {
    const int* item = items + 4 * blockIdx.y;
    const int b = item[0], h = item[1];
    const int q_len = seqs[4 * b + 2];
    const int R = (q_len + 63) / 64;
    const int m = blockIdx.x * blockDim.x + threadIdx.x;
    if (m >= R) return;
    const u32 slot = slot_base[b] + (u32)h * (u32)R + (u32)m;
    const int cnt = sel_cnt[item[3] + m];
    if (!fill) {
        tile_cnt[slot] = (u32)cnt;
    } else {
        const int* src = sel + ((i64)item[3] + m) * kcap;
        int* dst = tile_start + tile_ptr[slot];
        for (int i = 0; i < cnt; ++i) dst[i] = src[i];
    }
}

// Exclusive scan of n counts into n+1 pointers; blockIdx.x selects (cnt0, ptr0) or (cnt1, ptr1).
// Rounds of 4096 counts, four consecutive per thread (coalesced), a block scan per round and a
// running carry: a thread walking n / 1024 counts alone made this latency-bound (0.14 ms at 64K
// slots, ~1 ms at 512K).
extern "C" __global__ void __launch_bounds__(1024) scan_counts(const u32* cnt0, u32* ptr0, const u32* cnt1, u32* ptr1,
                                                                int n) {
    __shared__ u32 scan[32];
    __shared__ u32 round_total;
    const u32* cnt = blockIdx.x == 0 ? cnt0 : cnt1;
    u32* ptr = blockIdx.x == 0 ? ptr0 : ptr1;
    const int tid = threadIdx.x;
    u32 carry = 0;
    for (int base = 0; base < n; base += 4096) {
        const int i0 = base + 4 * tid;
        u32 c[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) c[j] = i0 + j < n ? cnt[i0 + j] : 0u;
        const u32 mine = c[0] + c[1] + c[2] + c[3];
        u32 acc = carry + block_exclusive_sum<1024>(mine, scan);
        if (tid == 1023) round_total = acc + mine - carry;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            if (i0 + j < n) ptr[i0 + j] = acc;
            acc += c[j];
        }
        __syncthreads();  // round_total is written; scan may be reused
        carry += round_total;
        __syncthreads();
    }
    if (tid == 0) ptr[n] = carry;
}

// Σ_{p = p0..=p1} |{key in [a, b) : key <= p}| (core's pairs_in_range).
__device__ __forceinline__ u64 pairs_in_range(long long p0, long long p1, long long a, long long b) {
    if (a >= b || p1 < p0 || p1 < a) return 0;
    u64 total = 0;
    const long long lo = p0 > a ? p0 : a, hi = p1 < b - 1 ? p1 : b - 1;
    if (lo <= hi) total += (u64)((lo + 1 - a) + (hi + 1 - a)) * (u64)(hi - lo + 1) / 2;
    const long long lo2 = p0 > b ? p0 : b;
    if (lo2 <= p1) total += (u64)(p1 - lo2 + 1) * (u64)(b - a);
    return total;
}

// Causal (row, key) pairs the index makes the kernels compute, per head (core's
// index_head_coverage entries), added into entries[h]. One warp per row block: grid (row blocks / 8,
// heads, sequences), 256 threads. Heads whose slots are empty add nothing.
extern "C" __global__ void __launch_bounds__(256) index_entries(const int* seqs, const u32* slot_base,
                                                                  const u32* tile_ptr, const int* tile_start,
                                                                  const u32* col_ptr, const int* col_index,
                                                                  u64* entries) {
    const int b = blockIdx.z, h = blockIdx.y, lane = threadIdx.x & 31;
    const int m = blockIdx.x * 8 + (threadIdx.x >> 5);
    const int q_len = seqs[4 * b + 2], kv_len = seqs[4 * b + 3];
    const int R = (q_len + 63) / 64;
    if (m >= R) return;
    const long long off = kv_len - q_len;
    const long long p0 = off + 64ll * m, p1 = off + min(64 * m + 64, q_len) - 1;
    const u32 slot = slot_base[b] + (u32)h * (u32)R + (u32)m;
    u64 sum = 0;
    for (u32 i = tile_ptr[slot] + lane; i < tile_ptr[slot + 1]; i += 32) {
        const long long t = tile_start[i];
        sum += pairs_in_range(p0, p1, t > 0 ? t : 0, t + 64 < kv_len ? t + 64 : kv_len);
    }
    for (u32 i = col_ptr[slot] + lane; i < col_ptr[slot + 1]; i += 32) {
        const long long c = col_index[i];
        sum += pairs_in_range(p0, p1, c, c + 1 < kv_len ? c + 1 : kv_len);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0 && sum) atomicAdd(&entries[h], sum);
}
