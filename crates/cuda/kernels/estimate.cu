// Online index estimation on the GPU: Vertical-Slash (last-64 softmax, vertical and diagonal sums,
// forcing, exact top-k) and Block-Sparse (block means, block scores, top-k with forced blocks),
// all heads of a layer per launch. Semantics follow crates/core (vs_estimate.rs, bs_estimate.rs).
#include "abi.cuh"
#include "flash.cuh"
#include "select.cuh"
#include "vs_items.cuh"
#include "est_logits.cuh"

// Adds x (a log2-domain logit, -inf allowed) to a running (max, sum of exp2). The exponentials flush
// results below 2^-126 to zero (fast_exp2): every sum here holds its maximum's 1, so what is flushed
// lies far below a float's precision of it.
__device__ __forceinline__ void online_add(float& m, float& l, float x_max, float x_sum_at_max) {
    const float mm = fmaxf(m, x_max);
    if (mm == MI_NEG_INF) return;
    l = (m == MI_NEG_INF ? 0.f : l * fast_exp2(m - mm)) + (x_max == MI_NEG_INF ? 0.f : x_sum_at_max * fast_exp2(x_max - mm));
    m = mm;
}

// Pass 1: per-row partial (max, sum of exp2) over a chunk of key tiles. stats: float2[item][chunk][64].
// Half inputs reduce in registers: each thread keeps (max, sum) of its two fragment rows over its
// 16 columns of every tile, and the four threads of a row combine once at the end. f32 inputs
// (the reference path) go through the logits in shared memory.
template <int D, typename T>
__device__ void vs_rowstats(const void* q, const void* k, const int* seqs, const int* items, int heads, int kv_heads,
                            int total_q, int total_kv, float scale_log2, int chunk_tiles, int n_chunks,
                            float2* stats) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    float* S = (float*)(smem_raw + EstLogits<D, T>::SMEM);
    const int* item = items + IT_STRIDE * blockIdx.y;
    EstGeom g = est_geom<T>(item, seqs, q, k, heads, kv_heads, total_q, total_kv, D);
    const int chunk = blockIdx.x;
    const int t_begin = chunk * chunk_tiles;
    const int n_tiles = (g.kv_len + 63) / 64;
    float2* out = stats + ((i64)blockIdx.y * n_chunks + chunk) * 64;
    if constexpr (ElemBytes<T>::v == 2) {
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
        float m[2] = {MI_NEG_INF, MI_NEG_INF}, l[2] = {0.f, 0.f};
        if (t_begin < n_tiles) {
            EstLogits<D, T> lg;
            lg.init(smem_raw, g, t_begin * 64);
            const int t_end = min(n_tiles, t_begin + chunk_tiles);
            for (int t = t_begin; t < t_end; ++t) {
                float s[8][4];
                lg.frag(s, g, t * 64, t + 1 < t_end ? (t + 1) * 64 : -1, scale_log2);
#pragma unroll
                for (int r = 0; r < 2; ++r) {
                    float mx = MI_NEG_INF;
#pragma unroll
                    for (int j = 0; j < 8; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * r], s[j][2 * r + 1]));
                    if (mx == MI_NEG_INF) continue;
                    float sum = 0.f;
#pragma unroll
                    for (int j = 0; j < 8; ++j) sum += fast_exp2(s[j][2 * r] - mx) + fast_exp2(s[j][2 * r + 1] - mx);
                    online_add(m[r], l[r], mx, sum);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
#pragma unroll
            for (int o = 1; o < 4; o <<= 1) {
                const float om = __shfl_xor_sync(0xffffffffu, m[r], o);
                const float ol = __shfl_xor_sync(0xffffffffu, l[r], o);
                online_add(m[r], l[r], om, ol);
            }
            if ((lane & 3) == 0) out[warp * 16 + (lane >> 2) + 8 * r] = make_float2(m[r], l[r]);
        }
        return;
    }
    // All 128 threads reduce: thread tid keeps a running (max, sum) of row tid & 63 over the 32
    // columns of its half (tid >> 6) of every tile; the halves are combined once at the end.
    const int a = threadIdx.x & 63, half = threadIdx.x >> 6;
    float m = MI_NEG_INF, l = 0.f;
    if (t_begin < n_tiles) {
        EstLogits<D, T> lg;
        lg.init(smem_raw, g, t_begin * 64);
        const int t_end = min(n_tiles, t_begin + chunk_tiles);
        for (int t = t_begin; t < t_end; ++t) {
            lg.tile(S, g, t * 64, t + 1 < t_end ? (t + 1) * 64 : -1, scale_log2);
            const float* row = S + a * 65 + half * 32;
            float mx = MI_NEG_INF;
            for (int c = 0; c < 32; ++c) mx = fmaxf(mx, row[c]);
            if (mx == MI_NEG_INF) continue;
            float sum = 0.f;
            for (int c = 0; c < 32; ++c) sum += exp2f(row[c] - mx);
            online_add(m, l, mx, sum);
        }
    }
    __syncthreads();  // S is free: it takes the upper half's partials
    float2* part = (float2*)S;
    if (half == 1) part[a] = make_float2(m, l);
    __syncthreads();
    if (half == 0) {
        const float2 o = part[a];
        online_add(m, l, o.x, o.y);
        out[a] = make_float2(m, l);
    }
}

// Pass 1b: combine chunk partials into per-row (max, 1/sum). rowfin: float2[item][64].
extern "C" __global__ void vs_combine(const float2* stats, int n_chunks, float2* rowfin) {
    const int a = threadIdx.x;
    const float2* st = stats + (i64)blockIdx.x * n_chunks * 64;
    float m = MI_NEG_INF;
    for (int c = 0; c < n_chunks; ++c) m = fmaxf(m, st[c * 64 + a].x);
    float l = 0.f;
    if (m != MI_NEG_INF)
        for (int c = 0; c < n_chunks; ++c) {
            float2 v = st[c * 64 + a];
            if (v.x != MI_NEG_INF) l += v.y * exp2f(v.x - m);
        }
    rowfin[blockIdx.x * 64 + a] = make_float2(m, l > 0.f ? 1.f / l : 0.f);
}

// Pass 2: probabilities of the 64-key tiles of one chunk (chunk_tiles tiles, the rows' Q loaded
// once per CTA); raw vertical sums (core's VsScores) and the 127 diagonal partial sums of each tile
// (diag[item][tile][e], diagonal d = kv_len - L - 64*tile - 63 + e).
// Each warp normalises its 16 rows and sums them into its own partials (64 columns, then 127
// diagonals; VS_RED_STRIDE floats per warp), so no thread walks a column or a diagonal alone; the
// four warps' partials are then added in a fixed order (deterministic).
constexpr int VS_RED_STRIDE = MI_VS_RED_STRIDE;  // abi.cuh: the host sizes shared memory from it

// The end of a vs_scores tile: the four warps' column and diagonal partials added in a fixed
// order (deterministic) and stored. Starts with the barrier that makes every warp's partials visible.
__device__ __forceinline__ void vs_scores_flush(const float* red_all, const EstGeom& g, const int* item, int t, int j0,
                                                float* vscore, float* diag) {
    const int tid = threadIdx.x;
    __syncthreads();
    if (tid < 64) {
        const int key = j0 + tid;
        if (key < g.kv_len) {
            float acc = 0.f;
#pragma unroll
            for (int w = 0; w < 4; ++w) acc += red_all[w * VS_RED_STRIDE + tid];
            vscore[item[IT_SCORE] + key] = acc;  // raw: vs_topk forces the first 30
        }
    }
    if (tid < 127) {
        // Warp w's rows reach only diagonals [16w, 16w + 79); its other entries are not written.
        float acc = 0.f;
#pragma unroll
        for (int w = 0; w < 4; ++w)
            if (tid >= 16 * w && tid < 16 * w + 79) acc += red_all[w * VS_RED_STRIDE + 64 + tid];
        diag[(i64)item[IT_DIAG] + (i64)t * 127 + tid] = acc;
    }
}

// Half inputs keep the normalised tile P as [64][64] floats with the column swizzled by the row
// (vs_p_at): the fragment stores and the row reads both hit 32 distinct banks without the 65-float
// pitch, so at D = 128 P fits in the Q tile's buffer, dead once the Q fragments are in registers,
// and four CTAs fit an SM instead of three.
__device__ __forceinline__ int vs_p_at(int row, int col) { return row * 64 + (col ^ (((row & 3) << 3) | ((row >> 2) & 1))); }

// Whether vs_scores' P lives in the Q tile's buffer (EstLogits: Q first, 64 * D halves).
template <int D, typename T>
struct VsPInQ {
    static constexpr bool v = ElemBytes<T>::v == 2 && 64 * D * 2 >= 64 * 64 * 4;
};

template <int D, typename T>
__device__ void vs_scores(const void* q, const void* k, const int* seqs, const int* items, int heads, int kv_heads,
                          int total_q, int total_kv, float scale_log2, int chunk_tiles, const float2* rowfin,
                          float* vscore, float* diag) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    constexpr bool kInQ = VsPInQ<D, T>::v;
    // [64][64] swizzled (half inputs) or [64][65] (f32, whose Q tile stays live)
    float* P = kInQ ? (float*)smem_raw : (float*)(smem_raw + EstLogits<D, T>::SMEM);
    float* red_all = (float*)(smem_raw + EstLogits<D, T>::SMEM + (kInQ ? 0 : 64 * 65 * 4));  // [4][VS_RED_STRIDE]
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    float* red = red_all + warp * VS_RED_STRIDE;
    const int* item = items + IT_STRIDE * blockIdx.y;
    EstGeom g = est_geom<T>(item, seqs, q, k, heads, kv_heads, total_q, total_kv, D);
    const int n_tiles = (g.kv_len + 63) / 64;
    const int t_begin = blockIdx.x * chunk_tiles;
    if (t_begin >= n_tiles) return;
    const int t_end = min(n_tiles, t_begin + chunk_tiles);
    EstLogits<D, T> lg;
    lg.init(smem_raw, g, t_begin * 64);
    const float2* rf = rowfin + blockIdx.y * 64;
    const int a_end = min(warp * 16 + 16, g.L);
    if constexpr (ElemBytes<T>::v == 2) {
        // Half inputs normalise in registers: the thread's two fragment rows' (max, 1/sum) are
        // loaded once; the column sums are reduced by shuffles; P goes to shared memory already
        // normalised, for the diagonal walk only (each warp writes and reads its own 16 rows).
        const int r0 = warp * 16 + (lane >> 2);
        const float2 st0 = rf[r0], st1 = rf[r0 + 8];
        for (int t = t_begin; t < t_end; ++t) {
            const int j0 = t * 64;
            float s[8][4];
            lg.frag(s, g, j0, t + 1 < t_end ? (t + 1) * 64 : -1, scale_log2);
            float col[8][2];
#pragma unroll
            for (int j = 0; j < 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const float2 st = e < 2 ? st0 : st1;
                    s[j][e] = s[j][e] == MI_NEG_INF ? 0.f : fast_exp2(s[j][e] - st.x) * st.y;
                }
#pragma unroll
            for (int j = 0; j < 8; ++j)
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    float v = s[j][c] + s[j][c + 2];
                    v += __shfl_xor_sync(0xffffffffu, v, 4);
                    v += __shfl_xor_sync(0xffffffffu, v, 8);
                    v += __shfl_xor_sync(0xffffffffu, v, 16);
                    col[j][c] = v;
                }
            // The previous tile's partials have been read (frag starts with a barrier).
#pragma unroll
            for (int j = 0; j < 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) P[vs_p_at(r0 + (e >> 1) * 8, j * 8 + (lane & 3) * 2 + (e & 1))] = s[j][e];
            __syncwarp();
            if (lane < 4) {
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    red[j * 8 + lane * 2] = col[j][0];
                    red[j * 8 + lane * 2 + 1] = col[j][1];
                }
            }
            // The warp's rows 16w + ar touch the 79 diagonals e = a - c + 63 in [16w, 16w + 79); lane
            // sums e = 16w + lane + 32i over its rows in registers, reading column
            // c = 63 + ar - lane - 32i (32 consecutive columns per row: no bank conflict). Rows
            // past L hold zeros. vs_scores_flush reads only each warp's range, so nothing is cleared.
#pragma unroll
            for (int i = 0; i < 3; ++i) {
                if (i == 2 && lane >= 15) break;
                float acc = 0.f;
#pragma unroll
                for (int ar = 0; ar < 16; ++ar) {
                    const int c = 63 + ar - lane - 32 * i;
                    if (c >= 0 && c < 64) acc += P[vs_p_at(warp * 16 + ar, c)];
                }
                red[64 + warp * 16 + lane + 32 * i] = acc;
            }
            vs_scores_flush(red_all, g, item, t, j0, vscore, diag);
        }
    } else {
        for (int t = t_begin; t < t_end; ++t) {
            const int j0 = t * 64;
            // Starts with a barrier, so the previous tile's partials have been read.
            lg.tile(P, g, j0, t + 1 < t_end ? (t + 1) * 64 : -1, scale_log2);
            for (int i = lane; i < VS_RED_STRIDE; i += 32) red[i] = 0.f;
            __syncwarp();
            float col0 = 0.f, col1 = 0.f;  // columns lane and lane + 32
            float* dg = red + 64 + 63;     // dg[a - c] is diagonal e = a - c + 63
#pragma unroll 1
            for (int a = warp * 16; a < a_end; ++a) {
                const float2 st = rf[a];
                const float x0 = P[a * 65 + lane], x1 = P[a * 65 + lane + 32];
                const float p0 = x0 == MI_NEG_INF ? 0.f : exp2f(x0 - st.x) * st.y;
                const float p1 = x1 == MI_NEG_INF ? 0.f : exp2f(x1 - st.x) * st.y;
                col0 += p0;
                col1 += p1;
                // Within one row the 64 diagonals are distinct; rows of one warp run in order.
                dg[a - lane] += p0;
                dg[a - lane - 32] += p1;
                __syncwarp();
            }
            red[lane] = col0;
            red[lane + 32] = col1;
            vs_scores_flush(red_all, g, item, t, j0, vscore, diag);
        }
    }
}

// Pass 3: raw slash scores sscore[d] = sum of the (at most 2) tile partials on diagonal d.
extern "C" __global__ void vs_slash_reduce(const int* seqs, const int* items, const float* diag, float* sscore) {
    const int* item = items + IT_STRIDE * blockIdx.y;
    const int* s = seqs + 4 * item[IT_B];
    const int q_len = s[2], kv_len = s[3];
    const int L = min(64, q_len);
    const int d = blockIdx.x * blockDim.x + threadIdx.x;
    if (d >= kv_len) return;
    const int n_tiles = (kv_len + 63) / 64;
    float acc = 0.f;
    const int x = kv_len - L - 63 - d;
    const int y = kv_len - L + 63 - d;
    if (y >= 0) {
        int t_lo = x <= 0 ? 0 : (x + 63) / 64;
        int t_hi = min(y / 64, n_tiles - 1);
        for (int t = t_lo; t <= t_hi; ++t) {
            int e = d - kv_len + L + 64 * t + 63;
            if (e >= 0 && e < 127) acc += diag[(i64)item[IT_DIAG] + (i64)t * 127 + e];
        }
    }
    sscore[item[IT_SCORE] + d] = acc;  // raw: vs_topk forces d < 100
}

// Keys of one radix bin vs_topk copies to shared memory (32 KB): the passes read the scores from
// global memory until a chosen bin holds at most this many, and only that copy afterwards.
constexpr int VS_TOPK_CAP = 4096;

// Pass 4 (after adaptive.cu's vs_adaptive for adaptive heads): exact top-k of verticals
// (blockIdx.y == 0, ascending output) and slashes (== 1, descending output) per item.
extern "C" __global__ void __launch_bounds__(1024) vs_topk(const int* seqs, const int* items, const float* vscore,
                                                            const float* sscore, int* sel_v, int* sel_s) {
    __shared__ u32 hist[256];
    __shared__ u64 state[4];
    __shared__ u32 scan[1024 / 32];
    __shared__ u64 cand[VS_TOPK_CAP];
    __shared__ u32 n_cand;
    const int* item = items + IT_STRIDE * blockIdx.x;
    const int kv_len = seqs[4 * item[IT_B] + 3];
    const bool slash = blockIdx.y == 1;
    const float* sc = (slash ? sscore : vscore) + item[IT_SCORE];
    const int k = slash ? item[IT_KS] : item[IT_KV];
    int* out = slash ? sel_s + item[IT_SELS] : sel_v + item[IT_SELV];
    if (k <= 0) return;
    // The scores are raw (adaptive budgets weigh them): the forced entries outrank every score here.
    const int forced = slash ? VS_FORCED_SLASHES : VS_FORCED_VERTICALS;
    auto key_of = [&](int i) -> u64 { return topk_key(i < forced ? MI_POS_INF : sc[i], (u32)i); };
    u64 thr = k >= kv_len ? 0ull
                          : radix_kth_largest<1024, VS_TOPK_CAP>(kv_len, k, key_of, hist, state, cand, &n_cand);
    auto write = [&](int rank, int i) {
        if (slash)
            out[k - 1 - rank] = i;
        else
            out[rank] = i;
    };
    compact_ge<1024>(kv_len, thr, key_of, write, scan);
}

#define MI_EST_ENTRIES(SUF, D, T)                                                                               \
    extern "C" __global__ void __launch_bounds__(128)                                                             \
        vs_rowstats_##SUF(const void* q, const void* k, const int* seqs, const int* items, int heads, int kv_heads, \
                          int total_q, int total_kv, float scale_log2, int chunk_tiles, int n_chunks,             \
                          float2* stats) {                                                                        \
        vs_rowstats<D, T>(q, k, seqs, items, heads, kv_heads, total_q, total_kv, scale_log2, chunk_tiles,         \
                          n_chunks, stats);                                                                       \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(128)                                                             \
        vs_scores_##SUF(const void* q, const void* k, const int* seqs, const int* items, int heads, int kv_heads,   \
                        int total_q, int total_kv, float scale_log2, int chunk_tiles, const float2* rowfin,       \
                        float* vscore, float* diag) {                                                             \
        vs_scores<D, T>(q, k, seqs, items, heads, kv_heads, total_q, total_kv, scale_log2, chunk_tiles, rowfin,   \
                        vscore, diag);                                                                            \
    }

MI_EST_ENTRIES(bf16_d64, 64, Bf16)
MI_EST_ENTRIES(bf16_d96, 96, Bf16)
MI_EST_ENTRIES(bf16_d128, 128, Bf16)
MI_EST_ENTRIES(f16_d64, 64, F16)
MI_EST_ENTRIES(f16_d96, 96, F16)
MI_EST_ENTRIES(f16_d128, 128, F16)
MI_EST_ENTRIES(f32_d64, 64, F32)
MI_EST_ENTRIES(f32_d96, 96, F32)
MI_EST_ENTRIES(f32_d128, 128, F32)

// ---------------------------------------------------------------------------------------------
// Block-Sparse estimation. Per BS item int[4]: b, h, k_b, row0 (the item's first row in sel/sel_cnt;
// sel holds `kcap` entries per row block).

// Block means over real rows, accumulated in double (as core). One CTA per (block, item, q|k);
// D threads. out: qmean[item][R][D] or kmean[item][Rk][D] with offsets qoff/koff per item.
template <typename T>
__device__ __forceinline__ float load_elem(const void* base, i64 i) {
    return Elem<T>::to_f32(((const u16*)base)[i]);
}
template <>
__device__ __forceinline__ float load_elem<F32>(const void* base, i64 i) {
    return ((const float*)base)[i];
}

template <typename T>
__device__ void bs_pool(const void* q, const void* k, const int* seqs, const int* items, int heads, int kv_heads,
                        int total_q, int total_kv, int D, const long long* mean_off, float* means) {
    const int* item = items + 4 * blockIdx.y;
    const int* s = seqs + 4 * item[0];
    const int h = item[1];
    const bool keys = blockIdx.z == 1;
    // Query heads of one KV head share its K means (build_index.rs): the first item pools them.
    if (keys && blockIdx.y > 0 && mean_off[2 * blockIdx.y + 1] == mean_off[2 * blockIdx.y - 1]) return;
    const int len = keys ? s[3] : s[2];
    const int blk = blockIdx.x;
    if (blk * 64 >= len) return;
    const int kvh = h / (heads / kv_heads);
    const i64 row0 = keys ? ((i64)kvh * total_kv + s[1]) : ((i64)h * total_q + s[0]);
    const void* base = keys ? k : q;
    const int rows = min(64, len - blk * 64);
    const int d = threadIdx.x;
    if (d >= D) return;
    double acc = 0.0;
    for (int r = 0; r < rows; ++r) acc += (double)load_elem<T>(base, (row0 + blk * 64 + r) * D + d);
    means[mean_off[2 * blockIdx.y + (keys ? 1 : 0)] + (i64)blk * D + d] = (float)(acc / rows);
}

#define MI_POOL_ENTRY(NAME, T)                                                                                  \
    extern "C" __global__ void NAME(const void* q, const void* k, const int* seqs, const int* items, int heads,      \
                                    int kv_heads, int total_q, int total_kv, int D, const long long* mean_off,       \
                                    float* means) {                                                                 \
        bs_pool<T>(q, k, seqs, items, heads, kv_heads, total_q, total_kv, D, mean_off, means);                       \
    }
MI_POOL_ENTRY(bs_pool_bf16, Bf16)
MI_POOL_ENTRY(bs_pool_f16, F16)
MI_POOL_ENTRY(bs_pool_f32, F32)

// Block scores of a chunk of query-block rows: scores[item][m - m_base][n] = Q̄_m · K̄_n for the key
// blocks n <= last_pos(m) / 64, on tensor cores. Each f32 mean is split into bf16 hi + lo (x - hi
// rounded again), and Q̄·K̄ ≈ hi·hi + hi·lo + lo·hi: three m16n8k16 MMAs per step, about 2^-16
// relative to the f32 product the core computes, so the selection differs from the core's only at
// near-ties. One CTA per (MI_BS_ROWS query blocks, MI_BS_SPAN key blocks, item): 8 warps of 16 rows
// keep their Q̄ fragments in registers while 64-block key tiles are staged in shared memory. Only a
// chunk of rows is materialised, never the whole R x R matrix. D is a multiple of 16, at most 128.
static_assert(MI_BS_ROWS == 8 * 16 && MI_BS_SPAN % 64 == 0, "bs_scores: 8 warps of 16 rows, 64-block tiles");
#define BS_PITCH 136  // bf16 per staged key row: 128 dims + 8, so fragment loads hit 32 distinct banks

__device__ __forceinline__ void split_bf16(float x0, float x1, u32& hi, u32& lo) {
    hi = Elem<Bf16>::pack2(x0, x1);
    const float h0 = __uint_as_float(hi << 16), h1 = __uint_as_float(hi & 0xffff0000u);
    lo = Elem<Bf16>::pack2(x0 - h0, x1 - h1);
}

extern "C" __global__ void __launch_bounds__(256) bs_scores(const int* seqs, const int* items, int D,
                                                           const long long* mean_off, const float* means,
                                                           int m_base, int rows_chunk, int row_stride,
                                                           float* scores) {
    __shared__ __align__(16) u32 sk[2][64 * BS_PITCH / 2];  // [hi|lo][key block][dim pair]
    const int* item = items + 4 * blockIdx.z;
    const int* s = seqs + 4 * item[0];
    const int q_len = s[2], kv_len = s[3];
    const int R = (q_len + 63) / 64, Rk = (kv_len + 63) / 64;
    const int off = kv_len - q_len;
    const int r0 = m_base + blockIdx.y * MI_BS_ROWS;  // first query block of the CTA
    const int r_end = min(min(r0 + MI_BS_ROWS, R), m_base + rows_chunk);
    const int n_begin = blockIdx.x * MI_BS_SPAN;
    if (r0 >= r_end || n_begin >= Rk) return;
    auto visible = [&](int m) { return (off + min(64 * m + 64, q_len) - 1) / 64 + 1; };
    const int n_end = min(min(n_begin + MI_BS_SPAN, Rk), visible(r_end - 1));
    if (n_begin >= n_end) return;
    const float* qm = means + mean_off[2 * blockIdx.z];
    const float* km = means + mean_off[2 * blockIdx.z + 1];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int ks_n = D / 16;

    // This warp's 16 rows of Q̄ as A fragments (rows past r_end are zero and never stored).
    const int wr0 = r0 + warp * 16;
    u32 a_hi[8][4], a_lo[8][4];
#pragma unroll
    for (int ks = 0; ks < 8; ++ks)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int m = wr0 + g + (e & 1) * 8, d = ks * 16 + 2 * t + (e >> 1) * 8;
            float2 x = make_float2(0.f, 0.f);
            if (ks < ks_n && m < r_end) x = *(const float2*)(qm + (i64)m * D + d);
            split_bf16(x.x, x.y, a_hi[ks][e], a_lo[ks][e]);
        }
    const int w_last = min(wr0 + 15, r_end - 1);
    const int w_visible = wr0 < r_end ? visible(w_last) : 0;

    for (int n0 = n_begin; n0 < n_end; n0 += 64) {
        __syncthreads();  // the previous tile is no longer read
        for (int i = tid; i < 64 * 64; i += 256) {  // (key block, dim pair)
            const int r = i >> 6, p = i & 63, n = n0 + r;
            float2 x = make_float2(0.f, 0.f);
            if (2 * p < D && n < Rk) x = *(const float2*)(km + (i64)n * D + 2 * p);
            split_bf16(x.x, x.y, sk[0][r * (BS_PITCH / 2) + p], sk[1][r * (BS_PITCH / 2) + p]);
        }
        __syncthreads();
        if (n0 >= w_visible) continue;
        float acc[8][4] = {};
#pragma unroll
        for (int ks = 0; ks < 8; ++ks) {
            if (ks >= ks_n) break;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const int w = (j * 8 + g) * (BS_PITCH / 2) + ks * 8 + t;
                const u32 bh0 = sk[0][w], bh1 = sk[0][w + 4], bl0 = sk[1][w], bl1 = sk[1][w + 4];
                Elem<Bf16>::mma(acc[j], a_hi[ks], bh0, bh1);
                Elem<Bf16>::mma(acc[j], a_hi[ks], bl0, bl1);
                Elem<Bf16>::mma(acc[j], a_lo[ks], bh0, bh1);
            }
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int m = wr0 + g + 8 * h;
            if (m >= r_end) continue;
            const int vis = min(visible(m), n_end);
            float* row = scores + ((i64)blockIdx.z * rows_chunk + (m - m_base)) * row_stride;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const int n = n0 + j * 8 + 2 * t;
                if (n + 1 < vis) {
                    *(float2*)(row + n) = make_float2(acc[j][2 * h], acc[j][2 * h + 1]);
                } else if (n < vis) {
                    row[n] = acc[j][2 * h];
                }
            }
        }
    }
}

// One CTA per (row block m, item) of the chunk: the row's block scores, forced blocks (0 and the
// diagonal blocks) as +inf, exact top-max(k_b, forced) in ascending block order.
// Dynamic shared memory: visible_max floats.
extern "C" __global__ void __launch_bounds__(256) bs_select(const int* seqs, const int* items, const float* scores,
                                                           int m_base, int rows_chunk, int row_stride, int kcap,
                                                           int* sel, int* sel_cnt) {
    extern __shared__ __align__(128) unsigned char bs_smem[];
    __shared__ u32 hist[256];
    __shared__ u64 state[4];
    __shared__ u32 scan[256 / 32];
    const int* item = items + 4 * blockIdx.y;
    const int* s = seqs + 4 * item[0];
    const int q_len = s[2], kv_len = s[3];
    const int m = m_base + blockIdx.x;
    const int R = (q_len + 63) / 64;
    if (m >= R || (int)blockIdx.x >= rows_chunk) return;
    const int off = kv_len - q_len;
    const int first_pos = off + 64 * m;
    const int last_pos = off + min(64 * m + 64, q_len) - 1;
    const int visible = last_pos / 64 + 1;
    const int diag_first = first_pos / 64;
    float* sc = (float*)bs_smem;
    const float* row = scores + ((i64)blockIdx.y * rows_chunk + blockIdx.x) * row_stride;
    for (int n = threadIdx.x; n < visible; n += 256) {
        bool forced = n == 0 || n >= diag_first;
        sc[n] = forced ? MI_POS_INF : row[n];
    }
    __syncthreads();
    const int forced_count = 1 + (visible - max(diag_first, 1));
    int k = max(item[2], forced_count);
    if (k > visible) k = visible;
    auto key_of = [&](int i) -> u64 { return topk_key(sc[i], (u32)i); };
    u64 thr = k >= visible ? 0ull : radix_kth_largest<256, 0>(visible, k, key_of, hist, state, nullptr, nullptr);
    int* out = sel + ((i64)item[3] + m) * kcap;
    auto write = [&](int rank, int i) { out[rank] = i * 64; };
    compact_ge<256>(visible, thr, key_of, write, scan);
    if (threadIdx.x == 0) sel_cnt[item[3] + m] = k;
}
