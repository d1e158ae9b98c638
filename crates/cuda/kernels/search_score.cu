// Offline pattern search, scoring on the GPU: for one head (Q, K, V bf16 [n, D]) the dense row
// log-sum-exp, the dense output, and for every candidate mask and row its kept probability mass
// and output error. fp32 CUDA-core math; one block = 64 rows x (one mask), 256 threads: thread t
// owns row t / 4 and a quarter (t % 4) of the keys of each 64-key chunk and of the D outputs.
//
// Mask semantics equal minference-search's HeadMask::row_mass / block_numerator: dense keeps
// key <= pos; A-shape keeps ashape_keep(pos, key); an index keeps each tile's keys
// [max(t, 0), t + 64) and each listed column, both only where key <= pos.
#include "common.cuh"

#define SS_THREADS 256
#include "abi.cuh"

template <int D>
struct ScoreBlock {
    float* q_s;   // [64][D + 1] the block's query rows
    float* kv_s;  // [64][D + 1] the chunk's key rows, then its value rows
    float* p_s;   // [64][65] the chunk's kept probabilities
    int* keys;    // [64] key of each chunk column, -1 = none
    int row0, rows, width, r, lane4, pos;
    float lse;
    float mass;
    float acc[D / 4];
};

template <int D>
__device__ __forceinline__ void ss_carve(ScoreBlock<D>& b, float* smem) {
    b.q_s = smem;
    b.kv_s = b.q_s + 64 * (D + 1);
    b.p_s = b.kv_s + 64 * (D + 1);
    b.keys = (int*)(b.p_s + 64 * 65);
}

template <int D>
__device__ __forceinline__ void ss_load_rows(float* dst, const u16* src, const int* keys) {
    for (int i = threadIdx.x; i < 64 * D; i += SS_THREADS) {
        int j = i / D, c = i - j * D;
        int key = keys[j];
        dst[j * (D + 1) + c] = key >= 0 ? Elem<Bf16>::to_f32(src[(long long)key * D + c]) : 0.f;
    }
}

template <int D>
__device__ __forceinline__ void ss_begin(ScoreBlock<D>& b, float* smem, const u16* q, int n, int block) {
    ss_carve(b, smem);
    b.row0 = block * 64;
    b.rows = min(64, n - b.row0);
    b.width = b.row0 + b.rows;
    b.r = threadIdx.x >> 2;
    b.lane4 = threadIdx.x & 3;
    b.pos = b.row0 + b.r;
    b.mass = 0.f;
#pragma unroll
    for (int i = 0; i < D / 4; ++i) b.acc[i] = 0.f;
    for (int i = threadIdx.x; i < 64 * D; i += SS_THREADS) {
        int r = i / D, c = i - r * D;
        b.q_s[r * (D + 1) + c] = r < b.rows ? Elem<Bf16>::to_f32(q[(long long)(b.row0 + r) * D + c]) : 0.f;
    }
}

// s[i] = q_r . k_{lane4 + 4 i} for the 16 keys of this thread.
template <int D>
__device__ __forceinline__ void ss_scores(const ScoreBlock<D>& b, float* s) {
#pragma unroll
    for (int i = 0; i < 16; ++i) s[i] = 0.f;
    const float* qr = b.q_s + b.r * (D + 1);
#pragma unroll 4
    for (int c = 0; c < D; ++c) {
        float qv = qr[c];
#pragma unroll
        for (int i = 0; i < 16; ++i) s[i] += qv * b.kv_s[(b.lane4 + 4 * i) * (D + 1) + c];
    }
}

// One chunk of 64 keys (b.keys set and synchronised by the caller): kept probabilities into the
// mass and, with `want_output`, into the numerator. Ends synchronised.
template <int D>
__device__ void ss_chunk(ScoreBlock<D>& b, const u16* k, const u16* v, int kind, int n_init, int n_local, float scale,
                         bool want_output) {
    ss_load_rows<D>(b.kv_s, k, b.keys);
    __syncthreads();
    float s[16];
    ss_scores<D>(b, s);
#pragma unroll
    for (int i = 0; i < 16; ++i) {
        int j = b.lane4 + 4 * i;
        int key = b.keys[j];
        bool keep = key >= 0 && key <= b.pos;
        if (kind == HEAD_ASHAPE) keep = keep && (b.pos - key < n_local || key < n_init);
        float p = keep ? expf(s[i] * scale - b.lse) : 0.f;
        b.mass += p;
        b.p_s[b.r * 65 + j] = p;
    }
    if (want_output) {
        __syncthreads();
        ss_load_rows<D>(b.kv_s, v, b.keys);
        __syncthreads();
        const float* pr = b.p_s + b.r * 65;
        for (int j = 0; j < 64; ++j) {
            float pj = pr[j];
#pragma unroll
            for (int dd = 0; dd < D / 4; ++dd) b.acc[dd] += pj * b.kv_s[j * (D + 1) + b.lane4 + 4 * dd];
        }
    }
    __syncthreads();
}

// Keys [lo, hi) in chunks of 64.
template <int D>
__device__ void ss_range(ScoreBlock<D>& b, const u16* k, const u16* v, int kind, int n_init, int n_local, float scale,
                         bool want_output, long long lo, long long hi) {
    for (long long c0 = lo; c0 < hi; c0 += 64) {
        if (threadIdx.x < 64) b.keys[threadIdx.x] = c0 + threadIdx.x < hi ? (int)(c0 + threadIdx.x) : -1;
        __syncthreads();
        ss_chunk<D>(b, k, v, kind, n_init, n_local, scale, want_output);
    }
}

__device__ __forceinline__ float ss_sum4(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    return x;
}

// Dense row log-sum-exp (scaled logits), rows of blocks first_block.. .
template <int D>
__device__ void ss_row_lse(const u16* q, const u16* k, float* lse, int n, int first_block, float scale) {
    extern __shared__ float smem[];
    ScoreBlock<D> b;
    ss_begin<D>(b, smem, q, n, first_block + blockIdx.x);
    float m = MI_NEG_INF, l = 0.f;
    for (int c0 = 0; c0 < b.width; c0 += 64) {
        if (threadIdx.x < 64) b.keys[threadIdx.x] = c0 + (int)threadIdx.x < b.width ? c0 + (int)threadIdx.x : -1;
        __syncthreads();
        ss_load_rows<D>(b.kv_s, k, b.keys);
        __syncthreads();
        float s[16];
        ss_scores<D>(b, s);
#pragma unroll
        for (int i = 0; i < 16; ++i) {
            int key = b.keys[b.lane4 + 4 * i];
            if (key >= 0 && key <= b.pos) {
                float x = s[i] * scale;
                if (x > m) {
                    l = l * expf(m - x) + 1.f;
                    m = x;
                } else {
                    l += expf(x - m);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, off);
        float l2 = __shfl_xor_sync(0xffffffffu, l, off);
        float mm = fmaxf(m, m2);
        float a = m == MI_NEG_INF ? 0.f : l * expf(m - mm);
        float c = m2 == MI_NEG_INF ? 0.f : l2 * expf(m2 - mm);
        l = a + c;
        m = mm;
    }
    if (b.lane4 == 0 && b.r < b.rows) lse[b.pos] = m + logf(l);
}

// Dense output O [n, D] f32 of rows of blocks first_block.. (needs lse).
template <int D>
__device__ void ss_dense_out(const u16* q, const u16* k, const u16* v, const float* lse, float* out, int n,
                             int first_block, float scale) {
    extern __shared__ float smem[];
    ScoreBlock<D> b;
    ss_begin<D>(b, smem, q, n, first_block + blockIdx.x);
    b.lse = b.r < b.rows ? lse[b.pos] : 0.f;
    ss_range<D>(b, k, v, HEAD_DENSE, 0, 0, scale, true, 0, b.width);
    if (b.r < b.rows) {
#pragma unroll
        for (int dd = 0; dd < D / 4; ++dd) out[(long long)b.pos * D + b.lane4 + 4 * dd] = b.acc[dd];
    }
}

// Candidate blockIdx.y on row block first_block + blockIdx.x. Per row: out_mass = kept mass; with
// want_output also err_sq, ref_sq and the count of |O_c - O| > threshold (O_c = numerator / mass).
// Index masks: slot = candidate * blocks + block; tiles tile_start[tile_ptr[slot] .. tile_ptr[slot + 1]],
// columns col_index[col_ptr[slot] .. col_ptr[slot + 1]].
template <int D>
__device__ void ss_score(const u16* q, const u16* k, const u16* v, const float* lse, const float* dense_out,
                         const int* kinds, const int* a_init, const int* a_local, const int* tile_ptr,
                         const int* tile_start, const int* col_ptr, const int* col_index, float* out_mass,
                         float* out_err, float* out_ref, float* out_over, int n, int blocks, int first_block,
                         int want_output, float threshold, float scale) {
    extern __shared__ float smem[];
    ScoreBlock<D> b;
    const int block = first_block + blockIdx.x;
    const int cand = blockIdx.y;
    ss_begin<D>(b, smem, q, n, block);
    b.lse = b.r < b.rows ? lse[b.pos] : 0.f;
    const bool wo = want_output != 0;
    const int kind = kinds[cand];
    if (kind == HEAD_DENSE) {
        ss_range<D>(b, k, v, kind, 0, 0, scale, wo, 0, b.width);
    } else if (kind == HEAD_ASHAPE) {
        // As core's ashape_key_ranges(row0, row0 + rows - 1, n_init, n_local, width).
        const long long n_init = a_init[cand], n_local = a_local[cand];
        const long long first = b.row0, last = b.row0 + b.rows - 1, kv = b.width;
        long long ws = first + 1 - n_local;
        if (ws < 0) ws = 0;
        if (ws > kv) ws = kv;
        long long we = n_local == 0 ? ws : (last + 1 < kv ? last + 1 : kv);
        if (ws > we) ws = we;
        long long sink = n_init;
        if (sink > last + 1) sink = last + 1;
        if (sink > kv) sink = kv;
        if (ws < we && sink > ws) sink = ws;
        if (ws < sink) ws = sink;
        if (we < ws) we = ws;
        ss_range<D>(b, k, v, kind, (int)n_init, (int)n_local, scale, wo, 0, sink);
        ss_range<D>(b, k, v, kind, (int)n_init, (int)n_local, scale, wo, ws, we);
    } else {
        const long long slot = (long long)cand * blocks + block;
        for (int t = tile_ptr[slot]; t < tile_ptr[slot + 1]; ++t) {
            long long lo = tile_start[t], hi = lo + 64;
            if (lo < 0) lo = 0;
            if (hi > b.width) hi = b.width;
            if (lo < hi) ss_range<D>(b, k, v, kind, 0, 0, scale, wo, lo, hi);
        }
        const int c_end = col_ptr[slot + 1];
        for (int g = col_ptr[slot]; g < c_end; g += 64) {
            if (threadIdx.x < 64) {
                int key = -1;
                if (g + (int)threadIdx.x < c_end) {
                    int c = col_index[g + threadIdx.x];
                    key = c >= 0 && c < b.width ? c : -1;
                }
                b.keys[threadIdx.x] = key;
            }
            __syncthreads();
            ss_chunk<D>(b, k, v, kind, 0, 0, scale, wo);
        }
    }
    const float mass = ss_sum4(b.mass);
    const long long o = (long long)cand * n + b.pos;
    if (b.r < b.rows && b.lane4 == 0) out_mass[o] = mass;
    if (wo) {
        const float inv = mass > 0.f ? 1.f / mass : 0.f;
        float err = 0.f, ref = 0.f, over = 0.f;
        if (b.r < b.rows) {
#pragma unroll
            for (int dd = 0; dd < D / 4; ++dd) {
                float dense = dense_out[(long long)b.pos * D + b.lane4 + 4 * dd];
                float diff = b.acc[dd] * inv - dense;
                err += diff * diff;
                ref += dense * dense;
                over += fabsf(diff) > threshold ? 1.f : 0.f;
            }
        }
        err = ss_sum4(err);
        ref = ss_sum4(ref);
        over = ss_sum4(over);
        if (b.r < b.rows && b.lane4 == 0) {
            out_err[o] = err;
            out_ref[o] = ref;
            out_over[o] = over;
        }
    }
}

#define SS_ENTRIES(D)                                                                                              \
    extern "C" __global__ void __launch_bounds__(SS_THREADS)                                                       \
        search_row_lse_d##D(const u16* q, const u16* k, float* lse, int n, int first_block, float scale) {         \
        ss_row_lse<D>(q, k, lse, n, first_block, scale);                                                           \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(SS_THREADS)                                                       \
        search_dense_out_d##D(const u16* q, const u16* k, const u16* v, const float* lse, float* out, int n,      \
                              int first_block, float scale) {                                                      \
        ss_dense_out<D>(q, k, v, lse, out, n, first_block, scale);                                                 \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(SS_THREADS) search_score_d##D(                                    \
        const u16* q, const u16* k, const u16* v, const float* lse, const float* dense_out, const int* kinds,      \
        const int* a_init, const int* a_local, const int* tile_ptr, const int* tile_start, const int* col_ptr,      \
        const int* col_index, float* out_mass, float* out_err, float* out_ref, float* out_over, int n, int blocks, \
        int first_block, int want_output, float threshold, float scale) {                                          \
        ss_score<D>(q, k, v, lse, dense_out, kinds, a_init, a_local, tile_ptr, tile_start, col_ptr, col_index,     \
                    out_mass, out_err, out_ref, out_over, n, blocks, first_block, want_output, threshold, scale);  \
    }

SS_ENTRIES(64)
SS_ENTRIES(128)
