// f32-input attention: a plain SIMT kernel (one thread per query row, scalar online softmax with
// natural exp) over the same tile producers and masks as the tensor-core kernel. It exists for
// exactness (f32 oracle tolerance 1e-4), not speed.
#include "tiles.cuh"

template <int D>
__device__ __forceinline__ void attn_f32_block(const AttnParams& p) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    constexpr int LD = D + 1;  // padded rows: thread-per-row reads hit distinct banks
    float* sq = (float*)smem_raw;
    float* sk = sq + 64 * LD;
    float* sv = sk + 64 * LD;
    BlockGeom g;
    if (!block_geom<64>(p, g)) return;
    const int tid = threadIdx.x;  // 64 threads, one query row each
    const float* qb = (const float*)p.q + ((i64)g.h * p.total_q + g.q_start) * D;
    const float* kb = (const float*)p.k + ((i64)g.kvh * p.total_kv + g.kv_start) * D;
    const float* vb = (const float*)p.v + ((i64)g.kvh * p.total_kv + g.kv_start) * D;
    const int*cols = (const int*)p.col_index;
    for (int i = tid; i < 64 * D; i += 64) {
        int r = i / D, d = i % D;
        int row = g.m * 64 + r;
        sq[r * LD + d] = row < g.q_len ? qb[(i64)row * D + d] : 0.f;
    }
    const float scale = p.scale_log2 * 0.69314718055994530942f;  // back to the natural-log scale
    float acc[D];
#pragma unroll
    for (int d = 0; d < D; ++d) acc[d] = 0.f;
    float mrow = MI_NEG_INF, lrow = 0.f;
    const int pos = g.m * 64 + tid + (g.kv_len - g.q_len);

    with_tiles(p, g, block_mask<64>(g), [&](const auto& tiles, const MaskCtx& mc) {
        const int n = tiles.count();
        for (int t = 0; t < n; ++t) {
            TileRef tr = tiles.tile(t);
            __syncthreads();
            for (int i = tid; i < 64 * D; i += 64) {
                int r = i / D, d = i % D;
                long long key = -1;
                if (tr.gather < 0) {
                    int kk = tr.start + r;
                    if (kk >= 0 && kk < mc.kv_len) key = kk;
                } else if (r < tr.gather) {
                    key = cols[tr.start + r];
                }
                sk[r * LD + d] = key >= 0 ? kb[key * D + d] : 0.f;
                sv[r * LD + d] = key >= 0 ? vb[key * D + d] : 0.f;
            }
            __syncthreads();
            for (int c = 0; c < 64; ++c) {
                if (!mc.valid(tr, c, pos)) continue;
                float s = 0.f;
#pragma unroll
                for (int d = 0; d < D; ++d) s = fmaf(sq[tid * LD + d], sk[c * LD + d], s);
                s *= scale;
                if (s > mrow) {
                    float alpha = expf(mrow - s);  // 0 when mrow == -inf
                    lrow *= alpha;
#pragma unroll
                    for (int d = 0; d < D; ++d) acc[d] *= alpha;
                    mrow = s;
                }
                float pr = expf(s - mrow);
                lrow += pr;
#pragma unroll
                for (int d = 0; d < D; ++d) acc[d] = fmaf(pr, sv[c * LD + d], acc[d]);
            }
        }
    });
    const int row = g.m * 64 + tid;
    if (row >= g.q_len) return;
    const float inv = lrow > 0.f ? 1.f / lrow : 0.f;
    float* o = (float*)p.out + ((i64)g.h * p.total_q + g.q_start + row) * D;
#pragma unroll
    for (int d = 0; d < D; ++d) o[d] = acc[d] * inv;
}

extern "C" __global__ void __launch_bounds__(64) attn_f32_d64(const AttnParams p) { attn_f32_block<64>(p); }
extern "C" __global__ void __launch_bounds__(64) attn_f32_d96(const AttnParams p) { attn_f32_block<96>(p); }
extern "C" __global__ void __launch_bounds__(64) attn_f32_d128(const AttnParams p) { attn_f32_block<128>(p); }
