// The consumers' softmax of one chunk for the Hopper mainloop (fa3_sm90.cuh): which chunks need
// masks (ownership of the 128-row union, causal and A-shape positions), the online softmax in
// place, and P packed for the RS wgmma. Device code only.
#pragma once
#include "hopper/chunks.cuh"
#include "hopper/ptx.cuh"

namespace mi_hopper {

// Whether consumer w (rows at positions pos0 .. pos0+63) must mask the chunk: some column is not in w's key set
// (ownership) or the causal / A-shape predicate can fail for one of w's rows (position).
__device__ __forceinline__ bool need_position_mask(const ChunkMeta& cm, int causal, int pos0, bool ashape, int n_init,
                                                   int n_local) {
    if (causal && cm.maxkey > pos0) return true;
    return ashape && cm.maxkey >= n_init && cm.minkey <= pos0 + 63 - n_local;
}
__device__ __forceinline__ bool need_mask(const ChunkMeta& cm, int w, int causal, int pos0, bool ashape, int n_init,
                                          int n_local) {
    if (!((cm.full >> w) & 1)) return true;
    return need_position_mask(cm, causal, pos0, ashape, n_init, n_local);
}

// Online softmax of one chunk in place (s becomes P in f32). m in log2 units (scaled); l per
// thread partial (its 32 columns), reduced over the quad only at the end. The unmasked path is one
// branch; a masked chunk tests the thread's 32 ownership bits (mw: thread-order words, chunks.cuh)
// with constant shifts, and only diagonal or window-edge chunks also compare positions per element.
template <bool kThreadOrder>
__device__ __forceinline__ void softmax_chunk(float (&s)[16][4], float (&mrow)[2], float (&lrow)[2], float (&corr)[2],
                                              bool need, const ChunkMeta& cm, const u32* mw, const int* cols,
                                              int pos0, int pos_a, int causal, bool ashape, int n_init, int n_local,
                                              float sc, int lane) {
    const float NEG = __int_as_float(0xff800000);
    if constexpr (kThreadOrder) {
        if (need) {
            const u32 own = mw[lane & 3];
            if (!need_position_mask(cm, causal, pos0, ashape, n_init, n_local)) {
#pragma unroll
                for (int i = 0; i < 16; ++i)
#pragma unroll
                    for (int e = 0; e < 2; ++e)
                        if (!((own >> (2 * i + e)) & 1u)) s[i][e] = s[i][2 + e] = NEG;
            } else {
#pragma unroll
                for (int i = 0; i < 16; ++i)
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int c = 8 * i + 2 * (lane & 3) + e;  // c < 64 <=> i < 8 (compile time)
                        const int key =
                            cm.kind == KIND_GATHER ? cols[c] : (i < 8 ? cm.start + c : cm.start2 + (c - 64));
                        const bool okc = (own >> (2 * i + e)) & 1u;
                        const bool ash = key < n_init;
                        if (!(okc && (!causal || key <= pos_a) && (ash || pos_a - key < n_local))) s[i][e] = NEG;
                        if (!(okc && (!causal || key <= pos_a + 8) && (ash || pos_a + 8 - key < n_local)))
                            s[i][2 + e] = NEG;
                    }
            }
        }
    } else if (need) {
        u32 mk[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) mk[q] = mw[q];
#pragma unroll
        for (int i = 0; i < 16; ++i)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int c = 8 * i + 2 * (lane & 3) + e;  // c < 64 <=> i < 8 (compile time)
                const int key = cm.kind == KIND_GATHER ? cols[c] : (i < 8 ? cm.start + c : cm.start2 + (c - 64));
                const bool okc = (mk[i >> 2] >> (8 * (i & 3) + 2 * (lane & 3) + e)) & 1u;
                const bool ash = key < n_init;
                if (!(okc && (!causal || key <= pos_a) && (ash || pos_a - key < n_local))) s[i][e] = NEG;
                if (!(okc && (!causal || key <= pos_a + 8) && (ash || pos_a + 8 - key < n_local))) s[i][2 + e] = NEG;
            }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float mx = s[0][2 * r];
#pragma unroll
        for (int i = 0; i < 16; ++i) mx = fmaxf(mx, fmaxf(s[i][2 * r], s[i][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(mrow[r], mx * sc);
        const float m_use = m_new == NEG ? 0.f : m_new;
        corr[r] = ex2(mrow[r] - m_use);
        mrow[r] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int i = 0; i < 16; ++i)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const float pv = ex2(fmaf(s[i][2 * r + e], sc, -m_use));
                s[i][2 * r + e] = pv;
                sum += pv;
            }
        lrow[r] = lrow[r] * corr[r] + sum;
    }
}

template <bool F16>
__device__ __forceinline__ void pack_p(u32 (&pf)[8][4], const float (&s)[16][4]) {
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
        pf[kk][0] = pack2<F16>(s[2 * kk][0], s[2 * kk][1]);
        pf[kk][1] = pack2<F16>(s[2 * kk][2], s[2 * kk][3]);
        pf[kk][2] = pack2<F16>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pf[kk][3] = pack2<F16>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
}

}  // namespace mi_hopper
