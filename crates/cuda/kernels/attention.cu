// One attention mainloop (FA2 style, mma.sync + cp.async double buffering) with pluggable key-tile
// producers (tiles.cuh): dense causal range, A-shape (sinks + window), and the CSR sparse index
// (64-wide tiles at arbitrary starts, then gathered 64-column groups). All heads of a layer per
// launch, GQA by indexing (kv head = h / group), packed varlen sequences with q/kv offsets.
#include "flash.cuh"
#include "tiles.cuh"
#include "wgmma.cuh"

template <int V> struct IntTag { static constexpr int value = V; };

// The mainloop. Each warp owns MT m16 row tiles (rows warp*16*MT ..); MT == 1 keeps Q in registers,
// MT == 2 reads Q fragments from shared memory and reuses every K/V fragment twice.
template <int D, typename T, int THREADS, int MT, int BM, bool WG, typename Tiles>
__device__ __forceinline__ void run_tiles(const Tiles& tiles, const MaskCtx& mc, const u16* kb, const u16* vb,
                                          const int* cols, const u32 (&qf)[D / 16][4], const u16* sq, u16* sk,
                                          u16* sv, float (&acc)[MT][D / 8][4], float (&mrow)[MT][2],
                                          float (&lrow)[MT][2], float scale_log2, int tid, int warp, int lane) {
    const int n = tiles.count();
    auto issue = [&](int t) {
        TileRef tr = tiles.tile(t);
        u16* kt = sk + (t & 1) * 64 * D;
        u16* vt = sv + (t & 1) * 64 * D;
        if (tr.gather < 0) {
            auto rk = [&](int r) -> const u16* {
                int key = tr.start + r;
                return (key >= 0 && key < mc.kv_len) ? kb + (i64)key * D : nullptr;
            };
            auto rv = [&](int r) -> const u16* {
                int key = tr.start + r;
                return (key >= 0 && key < mc.kv_len) ? vb + (i64)key * D : nullptr;
            };
            load_tile_async<D, THREADS>(kt, rk, tid);
            load_tile_async<D, THREADS>(vt, rv, tid);
        } else {
            auto rk = [&](int r) -> const u16* { return r < tr.gather ? kb + (i64)cols[tr.start + r] * D : nullptr; };
            auto rv = [&](int r) -> const u16* { return r < tr.gather ? vb + (i64)cols[tr.start + r] * D : nullptr; };
            load_tile_async<D, THREADS>(kt, rk, tid);
            load_tile_async<D, THREADS>(vt, rv, tid);
        }
        cp_async_commit();
    };
    if (n > 0) issue(0);
    const int row_base = warp * 16 * MT;
    for (int t = 0; t < n; ++t) {
        cp_async_wait_all();
        if constexpr (WG) fence_proxy_async();
        __syncthreads();
        if (t + 1 < n) issue(t + 1);
        TileRef tr = tiles.tile(t);
        const u16* kt = sk + (t & 1) * 64 * D;
        const u16* vt = sv + (t & 1) * 64 * D;
        const bool full = mc.full(tr);
        // One online-softmax step over NJ*8 keys starting at key_off.
        auto step = [&](auto nj_tag, int key_off) {
            constexpr int NJ = decltype(nj_tag)::value;
            float s[MT][NJ][4];
            if constexpr (WG) {
                wg_qk_tile<D, T>(s[0], qf, kt);
            } else if constexpr (MT == 1 && NJ == 8) {
                qk_tile<D, T>(s[0], qf, kt, lane);
            } else {
                qk_tile_mt<D, T, MT, NJ, BM>(s, sq, row_base, kt, key_off, lane);
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                const int r0 = row_base + mt * 16 + (lane >> 2);
#pragma unroll
                for (int j = 0; j < NJ; ++j) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        float x = s[mt][j][e] * scale_log2;
                        if (!full) {
                            int col = key_off + j * 8 + (lane & 3) * 2 + (e & 1);
                            int row = r0 + (e >> 1) * 8;
                            if (!mc.valid(tr, col, mc.pos0 + row)) x = MI_NEG_INF;
                        }
                        s[mt][j][e] = x;
                    }
                }
#pragma unroll
                for (int i = 0; i < 2; ++i) {
                    float mx = MI_NEG_INF;
#pragma unroll
                    for (int j = 0; j < NJ; ++j) mx = fmaxf(mx, fmaxf(s[mt][j][2 * i], s[mt][j][2 * i + 1]));
                    mx = quad_max(mx);
                    float m_new = fmaxf(mrow[mt][i], mx);
                    float ref = (m_new == MI_NEG_INF) ? 0.f : m_new;
                    float alpha = fast_exp2(mrow[mt][i] - ref);
                    mrow[mt][i] = m_new;
                    float sum = 0.f;
#pragma unroll
                    for (int j = 0; j < NJ; ++j) {
                        float p0 = fast_exp2(s[mt][j][2 * i] - ref);
                        float p1 = fast_exp2(s[mt][j][2 * i + 1] - ref);
                        s[mt][j][2 * i] = p0;
                        s[mt][j][2 * i + 1] = p1;
                        sum += p0 + p1;
                    }
                    lrow[mt][i] = lrow[mt][i] * alpha + sum;
#pragma unroll
                    for (int dn = 0; dn < D / 8; ++dn) {
                        acc[mt][dn][2 * i] *= alpha;
                        acc[mt][dn][2 * i + 1] *= alpha;
                    }
                }
            }
            if constexpr (WG) {
                wg_pv_tile<D, T>(acc[0], s[0], vt);
            } else if constexpr (MT == 1 && NJ == 8) {
                pv_tile<D, T>(acc[0], s[0], vt, lane);
            } else {
                pv_tile_mt<D, T, MT, NJ>(acc, s, vt, key_off, lane);
            }
        };
        if constexpr (MT == 1) {
            step(IntTag<8>{}, 0);
        } else {
            step(IntTag<4>{}, 0);
            step(IntTag<4>{}, 32);
        }
    }
}

// WG: wgmma (warpgroups of 4 warps = 64 rows) instead of mma.sync; needs MT == 1, D % 64 == 0 and
// 1024-byte aligned tiles (the dynamic buffer is over-allocated by 1 KiB and aligned here).
// Pipelined wgmma mainloop (D = 64/128, 16-row warps): three K/V stages; S(t+1) = Q K(t+1)^T is
// issued asynchronously before the softmax of tile t and runs under it and under P(t) V(t).
template <int D, typename T, int THREADS, typename Tiles>
__device__ __forceinline__ void run_tiles_pipe(const Tiles& tiles, const MaskCtx& mc, const u16* kb, const u16* vb,
                                               const int* cols, const u32 (&qf)[D / 16][4], u16* sk, u16* sv,
                                               float (&acc)[D / 8][4], float (&mrow)[2], float (&lrow)[2],
                                               float scale_log2, int tid, int warp, int lane) {
    const int n = tiles.count();
    if (n == 0) return;
    auto issue = [&](int t) {
        if (t < n) {
            TileRef tr = tiles.tile(t);
            u16* kt = sk + (t % 3) * 64 * D;
            u16* vt = sv + (t % 3) * 64 * D;
            if (tr.gather < 0) {
                auto rk = [&](int r) -> const u16* {
                    int key = tr.start + r;
                    return (key >= 0 && key < mc.kv_len) ? kb + (i64)key * D : nullptr;
                };
                auto rv = [&](int r) -> const u16* {
                    int key = tr.start + r;
                    return (key >= 0 && key < mc.kv_len) ? vb + (i64)key * D : nullptr;
                };
                load_tile_async<D, THREADS>(kt, rk, tid);
                load_tile_async<D, THREADS>(vt, rv, tid);
            } else {
                auto rk = [&](int r) -> const u16* { return r < tr.gather ? kb + (i64)cols[tr.start + r] * D : nullptr; };
                auto rv = [&](int r) -> const u16* { return r < tr.gather ? vb + (i64)cols[tr.start + r] * D : nullptr; };
                load_tile_async<D, THREADS>(kt, rk, tid);
                load_tile_async<D, THREADS>(vt, rv, tid);
            }
        }
        cp_async_commit();  // possibly empty: keeps one group per tile
    };
    const int row0 = warp * 16 + (lane >> 2);
    float s_cur[8][4], s_next[8][4];
    issue(0);
    issue(1);
    asm volatile("cp.async.wait_group 1;" ::: "memory");
    fence_proxy_async();
    __syncthreads();
    wg_qk_issue<D, T>(s_cur, qf, sk);
    wg_wait0();
    wg_fence_regs(s_cur);
    for (int t = 0; t < n; ++t) {
        // Tile t+1 resident for everyone; every warp is past P(t-1)V(t-1), so stage (t+2)%3 is free.
        cp_async_wait_all();
        fence_proxy_async();
        __syncthreads();
        issue(t + 2);
        if (t + 1 < n) wg_qk_issue<D, T>(s_next, qf, sk + ((t + 1) % 3) * 64 * D);
        const TileRef tr = tiles.tile(t);
        const bool full = mc.full(tr);
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float x = s_cur[j][e] * scale_log2;
                if (!full) {
                    int col = j * 8 + (lane & 3) * 2 + (e & 1);
                    if (!mc.valid(tr, col, mc.pos0 + row0 + (e >> 1) * 8)) x = MI_NEG_INF;
                }
                s_cur[j][e] = x;
            }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            float mx = MI_NEG_INF;
#pragma unroll
            for (int j = 0; j < 8; ++j) mx = fmaxf(mx, fmaxf(s_cur[j][2 * i], s_cur[j][2 * i + 1]));
            mx = quad_max(mx);
            float m_new = fmaxf(mrow[i], mx);
            float ref = (m_new == MI_NEG_INF) ? 0.f : m_new;
            float alpha = fast_exp2(mrow[i] - ref);
            mrow[i] = m_new;
            float sum = 0.f;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                float p0 = fast_exp2(s_cur[j][2 * i] - ref);
                float p1 = fast_exp2(s_cur[j][2 * i + 1] - ref);
                s_cur[j][2 * i] = p0;
                s_cur[j][2 * i + 1] = p1;
                sum += p0 + p1;
            }
            lrow[i] = lrow[i] * alpha + sum;
#pragma unroll
            for (int dn = 0; dn < D / 8; ++dn) {
                acc[dn][2 * i] *= alpha;
                acc[dn][2 * i + 1] *= alpha;
            }
        }
        wg_pv_issue<D, T>(acc, s_cur, sv + (t % 3) * 64 * D);
        wg_wait0();
        wg_fence_regs(acc);
        wg_fence_regs(s_next);
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) s_cur[j][e] = s_next[j][e];
    }
}

template <int D, typename T, int BM, int MT, bool WG, bool PIPE = false>
__device__ __forceinline__ void attn_block(const AttnParams& p) {
    static_assert(!PIPE || WG, "the pipelined loop is a wgmma loop");
    static_assert(!WG || (MT == 1 && D % 64 == 0), "wgmma path needs 16-row warps and D % 64 == 0");
    constexpr int THREADS = BM * 2 / MT;  // one warp per 16*MT rows
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    const u32 mis = smem_addr(smem_raw) & 1023u;
    u16* sq = (u16*)(smem_raw + (mis ? 1024u - mis : 0u));
    u16* sk = sq + BM * D;
    u16* sv = sk + (PIPE ? 3 : 2) * 64 * D;
    BlockGeom g;
    if (!block_geom<BM>(p, g)) return;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const u16* qb = (const u16*)p.q + ((i64)g.h * p.total_q + g.q_start) * D;
    const u16* kb = (const u16*)p.k + ((i64)g.kvh * p.total_kv + g.kv_start) * D;
    const u16* vb = (const u16*)p.v + ((i64)g.kvh * p.total_kv + g.kv_start) * D;

    auto rq = [&](int r) -> const u16* {
        int row = g.m * BM + r;
        return row < g.q_len ? qb + (i64)row * D : nullptr;
    };
    load_tile_async<D, THREADS, decltype(rq), BM>(sq, rq, tid);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();
    u32 qf[D / 16][4];
    if constexpr (MT == 1) load_q_frags<D, BM>(qf, sq, warp, lane);

    float acc[MT][D / 8][4];
    float mrow[MT][2], lrow[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn) acc[mt][dn][0] = acc[mt][dn][1] = acc[mt][dn][2] = acc[mt][dn][3] = 0.f;
        mrow[mt][0] = mrow[mt][1] = MI_NEG_INF;
        lrow[mt][0] = lrow[mt][1] = 0.f;
    }
    with_tiles(p, g, block_mask<BM>(g), [&](const auto& tiles, const MaskCtx& mc) {
        if constexpr (PIPE) {
            run_tiles_pipe<D, T, THREADS>(tiles, mc, kb, vb, (const int*)p.col_index, qf, sk, sv, acc[0], mrow[0],
                                          lrow[0], p.scale_log2, tid, warp, lane);
            return;
        }
        run_tiles<D, T, THREADS, MT, BM, WG>(tiles, mc, kb, vb, (const int*)p.col_index, qf, sq, sk, sv, acc, mrow, lrow,
                                     p.scale_log2, tid, warp, lane);
    });

    // Epilogue: normalise and store rows < q_len. A row that saw no key (l == 0) is written as 0.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        const int r0 = warp * 16 * MT + mt * 16 + (lane >> 2);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            float l = quad_sum(lrow[mt][i]);
            float inv = l > 0.f ? 1.f / l : 0.f;
            int row = g.m * BM + r0 + i * 8;
            if (row >= g.q_len) continue;
            i64 base = ((i64)g.h * p.total_q + g.q_start + row) * D;
#pragma unroll
            for (int dn = 0; dn < D / 8; ++dn) {
                int col = dn * 8 + (lane & 3) * 2;
                float o0 = acc[mt][dn][2 * i] * inv, o1 = acc[mt][dn][2 * i + 1] * inv;
                if (p.out_f32) {
                    float2* dst = (float2*)((float*)p.out + base + col);
                    *dst = make_float2(o0, o1);
                } else {
                    u32* dst = (u32*)((u16*)p.out + base + col);
                    *dst = Elem<T>::pack2(o0, o1);
                }
            }
        }
    }
}

// 64-row blocks (4 warps x 16 rows) for every pattern; for the dense and A-shape heads also 128-row
// blocks of 4 warps x 32 rows (K/V fragments reused by two m-tiles) or 8 warps x 16 rows. `_wg`:
// the same with wgmma (D = 64, 128).
#define MI_ATTN_ENTRY(NAME, D, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(128) NAME(const AttnParams p) { attn_block<D, T, 64, 1, false>(p); } \
    extern "C" __global__ void __launch_bounds__(128) NAME##_m128(const AttnParams p) {                         \
        attn_block<D, T, 128, 2, false>(p);                                                                    \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(256) NAME##_m128w8(const AttnParams p) {                       \
        attn_block<D, T, 128, 1, false>(p);                                                                    \
    }
#define MI_ATTN_WG_ENTRY(NAME, D, T)                                                                           \
    extern "C" __global__ void __launch_bounds__(128) NAME##_wg(const AttnParams p) {                           \
        attn_block<D, T, 64, 1, true>(p);                                                                      \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(256) NAME##_m128w8_wg(const AttnParams p) {                    \
        attn_block<D, T, 128, 1, true>(p);                                                                     \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(128) NAME##_wgp(const AttnParams p) {                          \
        attn_block<D, T, 64, 1, true, true>(p);                                                                \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(256) NAME##_m128w8_wgp(const AttnParams p) {                   \
        attn_block<D, T, 128, 1, true, true>(p);                                                               \
    }

MI_ATTN_ENTRY(attn_bf16_d64, 64, Bf16)
MI_ATTN_ENTRY(attn_bf16_d96, 96, Bf16)
MI_ATTN_ENTRY(attn_bf16_d128, 128, Bf16)
MI_ATTN_ENTRY(attn_f16_d64, 64, F16)
MI_ATTN_ENTRY(attn_f16_d96, 96, F16)
MI_ATTN_ENTRY(attn_f16_d128, 128, F16)
MI_ATTN_WG_ENTRY(attn_bf16_d64, 64, Bf16)
MI_ATTN_WG_ENTRY(attn_bf16_d128, 128, Bf16)
MI_ATTN_WG_ENTRY(attn_f16_d64, 64, F16)
MI_ATTN_WG_ENTRY(attn_f16_d128, 128, F16)
