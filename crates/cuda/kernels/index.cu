// Sparse-index assembly on the GPU: VS conversion (one thread per row block, the same result as
// core's convert_vs_head), BS block lists, and the CSR exclusive scan. Count pass -> scan -> fill pass.
#include "common.cuh"
#include "vs_items.cuh"

struct CountSink {
    u32 tiles, cols;
    __device__ void tile(long long) { ++tiles; }
    __device__ void cols_from(const int*, int n) { cols += (u32)n; }
};
struct FillSink {
    int* tile_out;
    int* col_out;
    __device__ void tile(long long t) { *tile_out++ = (int)t; }
    __device__ void cols_from(const int* v, int n) {
        for (int i = 0; i < n; ++i) col_out[i] = v[i];
        col_out += n;
    }
};

template <typename Sink>
__device__ __forceinline__ void emit_range(Sink& sink, long long rs, long long re, long long kv_len) {
    for (long long t = rs; t < re && t < kv_len; t += 64) sink.tile(t);
}

// First index i >= lo with vs[i] >= x (vs ascending): exponential then binary search, so that a
// gap holding few verticals costs a few probes.
__device__ __forceinline__ int seek_vertical(const int* vs, int nv, int lo, long long x) {
    if (lo >= nv || (long long)vs[lo] >= x) return lo;
    int step = 1, hi = lo + 1;  // vs[lo] < x
    while (hi < nv && (long long)vs[hi] < x) {
        lo = hi;
        step <<= 1;
        hi = hi + step < nv ? hi + step : nv;
    }
    while (lo + 1 < hi) {  // vs[lo] < x <= vs[hi] (or hi == nv)
        const int mid = (lo + hi) >> 1;
        if ((long long)vs[mid] < x)
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

// Row block m of one head: verticals vs[0..nv) ascending, slashes ss[0..ns) descending. The same
// tiles and columns as core's convert_vs_head, whose walk visits the verticals one by one between
// slash steps. A vertical is a column exactly when it lies in a gap before a run of slash tiles,
// or after the last run and below the block's first row; so each closed run takes the gap's
// verticals in one seek (count pass: a difference; fill pass: a copy) and skips the covered ones
// with another.
template <typename Sink>
__device__ void convert_row_block(Sink& sink, const int* vs, int nv, const int* ss, int ns, int q_len, int kv_len,
                                  int m) {
    const long long tile = 64;
    const long long kv = kv_len;
    const long long start = (long long)(kv_len - q_len) + tile * m;
    const long long end = start + tile;
    const long long key_end = end < kv ? end : kv;
    // first slash index with ss[si] < end (ss descending)
    int lo = 0, hi = ns;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if ((long long)ss[mid] >= end)
            lo = mid + 1;
        else
            hi = mid;
    }
    int si = lo, vi = 0;
    long long last_end = 0;
    auto close_run = [&](long long rs, long long re) {
        const int gap_end = seek_vertical(vs, nv, vi, rs);
        sink.cols_from(vs + vi, gap_end - vi);
        vi = seek_vertical(vs, nv, gap_end, re);
        emit_range(sink, rs, re, kv);
    };
    if (si < ns) {
        long long e = end - ss[si];
        if (e < tile) e = tile;
        ++si;
        long long rs = e - tile, re = e;
        while (si < ns) {
            long long e2 = end - ss[si];
            if (e2 < tile) e2 = tile;
            if (e2 <= re) {
                // Slashes ending inside the run change nothing: gallop to the first one ending
                // past re (ss descending: end - ss[j] ascending), so a band of thousands of
                // adjacent diagonals costs a few probes per 64-key tile, not one step each.
                int step = 1, lo2 = si, hi2 = si + 1;  // slash si is inside: probe from si + 1
                while (hi2 < ns && end - (long long)ss[hi2] <= re) {
                    lo2 = hi2;
                    step <<= 1;
                    hi2 = hi2 + step < ns ? hi2 + step : ns;
                }
                while (lo2 + 1 < hi2) {  // end - ss[lo2] <= re < end - ss[hi2] (or hi2 == ns)
                    const int mid = (lo2 + hi2) >> 1;
                    if (end - (long long)ss[mid] <= re)
                        lo2 = mid;
                    else
                        hi2 = mid;
                }
                si = hi2;
                continue;
            }
            ++si;
            if (e2 > re + tile) {
                close_run(rs, re);
                rs = e2 - tile;
                re = e2;
            } else {
                re += tile;
            }
        }
        close_run(rs, re);
        last_end = re;
    }
    // After the last run: verticals below the block's first row are columns; one at or past it
    // (inside the block) adds the block's diagonal tile.
    const int below = seek_vertical(vs, nv, vi, start);
    sink.cols_from(vs + vi, below - vi);
    if (below < nv && (long long)vs[below] < key_end) {
        const long long tail = start > last_end ? start : last_end;
        emit_range(sink, tail, tail + tile, kv);
    }
}

// fill == 0: writes tile_cnt/col_cnt per slot; fill == 1: writes tile_start/col_index at the
// scanned offsets. grid (ceil(max R / blockDim.x), n_items).
extern "C" __global__ void vs_convert(const int* seqs, const int* items, const int* sel_v, const int* sel_s,
                                      const u32* slot_base, int smem_cap, int fill, u32* tile_cnt,
                                      u32* col_cnt, const u32* tile_ptr, const u32* col_ptr, int* tile_start,
                                      int* col_index) {
    const int* item = items + IT_STRIDE * blockIdx.y;
    const int b = item[IT_B], h = item[IT_H];
    const int q_len = seqs[4 * b + 2], kv_len = seqs[4 * b + 3];
    const int R = (q_len + 63) / 64;
    const int m = blockIdx.x * blockDim.x + threadIdx.x;
    if ((int)(blockIdx.x * blockDim.x) >= R) return;  // whole CTA idle (keeps the barrier uniform)
    const int nv = item[IT_KV], ns = item[IT_KS];  // clamped (or adaptive) k_v, k_s
    // Every thread of the CTA walks the same selection: stage it in shared memory when it fits.
    extern __shared__ __align__(16) int vs_smem[];
    const int* vs = sel_v + item[IT_SELV];
    const int* ss = sel_s + item[IT_SELS];
    if (nv + ns <= smem_cap) {
        for (int i = threadIdx.x; i < nv; i += blockDim.x) vs_smem[i] = vs[i];
        for (int i = threadIdx.x; i < ns; i += blockDim.x) vs_smem[nv + i] = ss[i];
        __syncthreads();
        vs = vs_smem;
        ss = vs_smem + nv;
    }
    if (m >= R) return;
    const u32 slot = slot_base[b] + (u32)h * (u32)R + (u32)m;
    if (!fill) {
        CountSink c{0, 0};
        convert_row_block(c, vs, nv, ss, ns, q_len, kv_len, m);
        tile_cnt[slot] = c.tiles;
        col_cnt[slot] = c.cols;
    } else {
        FillSink f{tile_start + tile_ptr[slot], col_index + col_ptr[slot]};
        convert_row_block(f, vs, nv, ss, ns, q_len, kv_len, m);
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
extern "C" __global__ void __launch_bounds__(1024) scan_counts(const u32* cnt0, u32* ptr0, const u32* cnt1, u32* ptr1,
                                                                int n) {
    __shared__ u32 part[1024];
    const u32* cnt = blockIdx.x == 0 ? cnt0 : cnt1;
    u32* ptr = blockIdx.x == 0 ? ptr0 : ptr1;
    const int tid = threadIdx.x;
    const int per = (n + 1023) / 1024;
    const int begin = min(n, tid * per), end = min(n, begin + per);
    u32 s = 0;
    for (int i = begin; i < end; ++i) s += cnt[i];
    part[tid] = s;
    __syncthreads();
    // Hillis-Steele inclusive scan over the 1024 partial sums.
    for (int off = 1; off < 1024; off <<= 1) {
        u32 v = tid >= off ? part[tid - off] : 0u;
        __syncthreads();
        part[tid] += v;
        __syncthreads();
    }
    u32 acc = tid == 0 ? 0u : part[tid - 1];
    for (int i = begin; i < end; ++i) {
        ptr[i] = acc;
        acc += cnt[i];
    }
    if (tid == 1023) ptr[n] = part[1023];
}
