// The estimation's logit tiles, shared by the VS and BS passes of estimate.cu: the work item's
// geometry (EstGeom) and the last rows' Q against 64-key K tiles (EstLogits), for half (bf16 /
// f16, mma.sync) and f32 inputs. Device code only (estimate.cu includes it).
#pragma once
#include "abi.cuh"
#include "flash.cuh"
#include "vs_items.cuh"

struct F32 {};

struct EstGeom {
    const void* qb;  // this head's query rows of the sequence
    const void* kb;  // this kv head's key rows of the sequence
    int q_len, kv_len, L;
};

template <typename T> struct ElemBytes { static constexpr int v = 2; };
template <> struct ElemBytes<F32> { static constexpr int v = 4; };

template <typename T>
__device__ __forceinline__ EstGeom est_geom(const int* item, const int* seqs, const void* q, const void* k, int heads,
                                            int kv_heads, int total_q, int total_kv, int D) {
    const int b = item[IT_B], h = item[IT_H];
    const int* s = seqs + 4 * b;
    EstGeom g;
    g.q_len = s[2];
    g.kv_len = s[3];
    g.L = min(64, g.q_len);
    const int kvh = h / (heads / kv_heads);
    g.qb = (const unsigned char*)q + ((i64)h * total_q + s[0]) * D * ElemBytes<T>::v;
    g.kb = (const unsigned char*)k + ((i64)kvh * total_kv + s[1]) * D * ElemBytes<T>::v;
    return g;
}

// Produces S[64][65] = scaled (log2-domain) logits of the L estimation rows (row a at position
// kv_len - L + a) against keys j0..j0+63, -inf where not visible. Tensor cores for half inputs.
// The K tiles are double-buffered: `init` starts the first tile's copy, and each `tile` starts the
// next one (j0_next, < 0 for none) before it waits for its own, so the copy of tile t+1 overlaps the
// MMA and the caller's reduction of tile t.
template <int D, typename T>
struct EstLogits {
    static constexpr int SMEM = 3 * 64 * D * 2;
    u16* sq;
    u16* sk;  // two [64][D] buffers
    int buf;
    u32 qf[D / 16][4];

    __device__ void load_k(const EstGeom& g, int j0, int b) {
        load_rows_async<D, 128>(sk + b * 64 * D, (const u16*)g.kb + (i64)j0 * D, g.kv_len - j0, threadIdx.x);
    }

    __device__ void init(unsigned char* smem, const EstGeom& g, int j0_first) {
        const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
        sq = (u16*)smem;
        sk = sq + 64 * D;
        buf = 0;
        load_rows_async<D, 128>(sq, (const u16*)g.qb + (i64)(g.q_len - g.L) * D, g.L, tid);
        cp_async_commit();
        load_k(g, j0_first, 0);
        cp_async_commit();
        cp_async_wait_pending<1>();  // Q has landed; the first K tile may still be in flight
        __syncthreads();
        load_q_frags<D>(qf, sq, warp, lane);
    }

    // The scaled logits of tile j0 in this thread's MMA fragment (row r0 + 8 * (e >> 1), column
    // 8j + 2 * (lane & 3) + (e & 1), r0 = 16 * warp + lane / 4), -inf where not visible. Starts the
    // copy of tile j0_next. The caller must not touch the K buffers between calls; the barrier at
    // the start is what lets the next copy overwrite the buffer this tile's MMA read.
    __device__ void frag(float (&s)[8][4], const EstGeom& g, int j0, int j0_next, float scale_log2) {
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
        __syncthreads();  // every warp's MMA of the previous tile is done with buffer buf ^ 1
        if (j0_next >= 0) load_k(g, j0_next, buf ^ 1);
        cp_async_commit();  // an empty group when there is no next tile keeps the count uniform
        cp_async_wait_pending<1>();
        __syncthreads();
        qk_tile<D, T>(s, qf, sk + buf * 64 * D, lane);
        buf ^= 1;
        const int r0 = warp * 16 + (lane >> 2);
        // Only the last tiles reach past row 0's last visible key (and only short queries have
        // rows past L): every other tile is visible to all 64 rows.
        if (g.L == 64 && j0 + 63 <= g.kv_len - g.L) {
#pragma unroll
            for (int j = 0; j < 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[j][e] *= scale_log2;
            return;
        }
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int a = r0 + (e >> 1) * 8;
                int key = j0 + j * 8 + (lane & 3) * 2 + (e & 1);
                bool ok = a < g.L && key < g.kv_len && key <= g.kv_len - g.L + a;
                s[j][e] = ok ? s[j][e] * scale_log2 : MI_NEG_INF;
            }
    }

    // The same logits stored as S[64][65] (row-major, a 65-float pitch).
    __device__ void tile(float* S, const EstGeom& g, int j0, int j0_next, float scale_log2) {
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
        float s[8][4];
        frag(s, g, j0, j0_next, scale_log2);
        const int r0 = warp * 16 + (lane >> 2);
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) S[(r0 + (e >> 1) * 8) * 65 + j * 8 + (lane & 3) * 2 + (e & 1)] = s[j][e];
        __syncthreads();
    }
};

template <int D>
struct EstLogits<D, F32> {
    static constexpr int SMEM = 2 * 64 * (D + 1) * 4;
    float* sq;
    float* sk;

    __device__ void init(unsigned char* smem, const EstGeom& g, int /*j0_first*/) {
        sq = (float*)smem;
        sk = sq + 64 * (D + 1);
        const float* qb = (const float*)g.qb;
        for (int i = threadIdx.x; i < 64 * D; i += blockDim.x) {
            int r = i / D, d = i % D;
            sq[r * (D + 1) + d] = r < g.L ? qb[(i64)(g.q_len - g.L + r) * D + d] : 0.f;
        }
    }

    // f32 is the reference path: synchronous loads, no prefetch.
    __device__ void tile(float* S, const EstGeom& g, int j0, int /*j0_next*/, float scale_log2) {
        const float* kb = (const float*)g.kb;
        __syncthreads();
        for (int i = threadIdx.x; i < 64 * D; i += blockDim.x) {
            int r = i / D, d = i % D;
            int key = j0 + r;
            sk[r * (D + 1) + d] = key < g.kv_len ? kb[(i64)key * D + d] : 0.f;
        }
        __syncthreads();
        const int a = threadIdx.x & 63;
        for (int c = (threadIdx.x >> 6) * 32, ce = c + 32; c < ce; ++c) {
            int key = j0 + c;
            bool ok = a < g.L && key < g.kv_len && key <= g.kv_len - g.L + a;
            float acc = 0.f;
#pragma unroll 8
            for (int d = 0; d < D; ++d) acc = fmaf(sq[a * (D + 1) + d], sk[c * (D + 1) + d], acc);
            S[a * 65 + c] = ok ? acc * scale_log2 : MI_NEG_INF;
        }
        __syncthreads();
    }
};
