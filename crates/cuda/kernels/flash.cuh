// Building blocks of the FA2-style mainloop: a 64-row CTA of 4 warps, each warp owning 16 query
// rows; 64-key tiles staged in swizzled shared memory; mma.sync m16n8k16 with fp32 accumulators.
#pragma once
#include "common.cuh"

// Issues cp.async copies of ROWS rows of D elements into a swizzled [ROWS][D] tile.
// `row_src(r)` returns the global row pointer or nullptr for a zero row.
template <int D, int THREADS, typename RowSrc, int ROWS = 64>
__device__ __forceinline__ void load_tile_async(u16* tile, RowSrc row_src, int tid) {
    constexpr int CHUNKS = D / 8;  // 16-byte chunks per row
    u32 base = smem_addr(tile);
#pragma unroll
    for (int i = tid; i < ROWS * CHUNKS; i += THREADS) {
        int r = i / CHUNKS, c = i % CHUNKS;
        const u16* src = row_src(r);
        bool ok = src != nullptr;
        const u16* p = ok ? src + c * 8 : nullptr;
        cp_async16(base + 2u * (u32)swz<D, ROWS>(r, c * 8), ok ? (const void*)p : (const void*)tile, ok);
    }
}

// Copies the contiguous rows rows[0 .. n_valid) (pitch D) into a swizzled [ROWS][D] tile and zero-fills
// the rest: one base address and compile-time strides per copy instead of a pointer per row, which is
// most of load_tile_async's instructions where rows are contiguous (the estimation's K and Q tiles).
template <int D, int THREADS, int ROWS = 64>
__device__ __forceinline__ void load_rows_async(u16* tile, const u16* rows, int n_valid, int tid) {
    constexpr int CHUNKS = D / 8;  // 16-byte chunks per row
    if constexpr (THREADS % CHUNKS == 0 && ROWS % (THREADS / CHUNKS) == 0) {
        constexpr int STEP = THREADS / CHUNKS;  // rows between one thread's copies
        const int r0 = tid / CHUNKS, c = tid % CHUNKS;
        const u32 base = smem_addr(tile);
        const u16* src = rows + (i64)r0 * D + c * 8;
#pragma unroll
        for (int it = 0; it < ROWS / STEP; ++it) {
            const int r = r0 + it * STEP;
            // A zero-filled copy reads nothing, so its (possibly out-of-range) source needs no clamp.
            cp_async16(base + 2u * (u32)swz<D, ROWS>(r, c * 8), src + (i64)it * STEP * D, r < n_valid);
        }
    } else {
        auto row_src = [&](int r) -> const u16* { return r < n_valid ? rows + (i64)r * D : nullptr; };
        load_tile_async<D, THREADS, decltype(row_src), ROWS>(tile, row_src, tid);
    }
}

// Q fragments (A operand) of this warp's 16 rows, for all D/16 k-steps.
template <int D, int ROWS = 64>
__device__ __forceinline__ void load_q_frags(u32 (&qf)[D / 16][4], const u16* q_tile, int warp, int lane) {
    u32 base = smem_addr(q_tile);
    int row = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        int col = kk * 16 + (lane >> 4) * 8;
        ldmatrix_x4(qf[kk], base + 2u * (u32)swz<D, ROWS>(row, col));
    }
}

// s[j][*] += Q(16 rows) . K(keys 8j..8j+7)^T for the 64 keys of `k_tile`.
template <int D, typename T>
__device__ __forceinline__ void qk_tile(float (&s)[8][4], const u32 (&qf)[D / 16][4], const u16* k_tile, int lane) {
    u32 base = smem_addr(k_tile);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    }
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int np = 0; np < 4; ++np) {
            int key = np * 16 + (lane & 7) + (lane >> 4) * 8;
            int col = kk * 16 + ((lane >> 3) & 1) * 8;
            u32 b[4];
            ldmatrix_x4(b, base + 2u * (u32)swz<D>(key, col));
            Elem<T>::mma(s[2 * np], qf[kk], b[0], b[1]);
            Elem<T>::mma(s[2 * np + 1], qf[kk], b[2], b[3]);
        }
    }
}

// acc[dn][*] += P(16 x 64, as A fragments) . V(64 keys x D).
template <int D, typename T>
__device__ __forceinline__ void pv_tile(float (&acc)[D / 8][4], const float (&p)[8][4], const u16* v_tile, int lane) {
    u32 base = smem_addr(v_tile);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
        u32 a[4];
        a[0] = Elem<T>::pack2(p[2 * kk][0], p[2 * kk][1]);
        a[1] = Elem<T>::pack2(p[2 * kk][2], p[2 * kk][3]);
        a[2] = Elem<T>::pack2(p[2 * kk + 1][0], p[2 * kk + 1][1]);
        a[3] = Elem<T>::pack2(p[2 * kk + 1][2], p[2 * kk + 1][3]);
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
            int key = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
            int col = dp * 16 + (lane >> 4) * 8;
            u32 b[4];
            ldmatrix_x4_trans(b, base + 2u * (u32)swz<D>(key, col));
            Elem<T>::mma(acc[2 * dp], a, b[0], b[1]);
            Elem<T>::mma(acc[2 * dp + 1], a, b[2], b[3]);
        }
    }
}

__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
    return x;
}
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    return x;
}

// Variants for warps owning MT m16 tiles (16*MT rows): K/V fragments loaded once per warp are used
// by every m-tile, which divides the shared-memory traffic per FLOP by MT. Q fragments are read
// from the swizzled Q tile in shared memory (registers would not hold MT copies). Each call covers
// NJ*8 keys starting at key_off of the 64-key tile (smaller steps keep the scores in registers).
template <int D, typename T, int MT, int NJ, int QROWS>
__device__ __forceinline__ void qk_tile_mt(float (&s)[MT][NJ][4], const u16* q_tile, int row_base, const u16* k_tile,
                                           int key_off, int lane) {
    const u32 qbase = smem_addr(q_tile), kbase = smem_addr(k_tile);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < NJ; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        u32 a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            int row = row_base + mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
            int col = kk * 16 + (lane >> 4) * 8;
            ldmatrix_x4(a[mt], qbase + 2u * (u32)swz<D, QROWS>(row, col));
        }
#pragma unroll
        for (int np = 0; np < NJ / 2; ++np) {
            int key = key_off + np * 16 + (lane & 7) + (lane >> 4) * 8;
            int col = kk * 16 + ((lane >> 3) & 1) * 8;
            u32 b[4];
            ldmatrix_x4(b, kbase + 2u * (u32)swz<D>(key, col));
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                Elem<T>::mma(s[mt][2 * np], a[mt], b[0], b[1]);
                Elem<T>::mma(s[mt][2 * np + 1], a[mt], b[2], b[3]);
            }
        }
    }
}

template <int D, typename T, int MT, int NJ>
__device__ __forceinline__ void pv_tile_mt(float (&acc)[MT][D / 8][4], const float (&p)[MT][NJ][4], const u16* v_tile,
                                           int key_off, int lane) {
    const u32 base = smem_addr(v_tile);
#pragma unroll
    for (int kk = 0; kk < NJ / 2; ++kk) {
        u32 a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            a[mt][0] = Elem<T>::pack2(p[mt][2 * kk][0], p[mt][2 * kk][1]);
            a[mt][1] = Elem<T>::pack2(p[mt][2 * kk][2], p[mt][2 * kk][3]);
            a[mt][2] = Elem<T>::pack2(p[mt][2 * kk + 1][0], p[mt][2 * kk + 1][1]);
            a[mt][3] = Elem<T>::pack2(p[mt][2 * kk + 1][2], p[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
            int key = key_off + kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
            int col = dp * 16 + (lane >> 4) * 8;
            u32 b[4];
            ldmatrix_x4_trans(b, base + 2u * (u32)swz<D>(key, col));
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                Elem<T>::mma(acc[mt][2 * dp], a[mt], b[0], b[1]);
                Elem<T>::mma(acc[mt][2 * dp + 1], a[mt], b[2], b[3]);
            }
        }
    }
}
