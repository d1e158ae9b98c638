// Hopper-native (sm_90a) warp-specialised attention forward: FA3-class mainloop prototype.
//
// One CTA = 3 warpgroups (384 threads): warpgroup 0 is the producer (TMA loads of Q and of 128-key
// K/V chunks into a STAGES-deep mbarrier ring, or 16-byte cp.async gathers of listed key columns),
// warpgroups 1 and 2 are consumers, each owning 64 rows of a 128-row query tile. QK^T is an SS wgmma
// (m64n128k16, Q and K from 128B-swizzled shared memory), PV an RS wgmma (P packed to bf16 in
// registers, V read MN-major). Within a consumer the S GEMM of chunk j is issued before the softmax
// of chunk j-1's successor is needed (S(j) and PV(j-1) in flight together); the two consumers take
// turns issuing GEMMs through named barriers (ping-pong). O goes out through shared memory by TMA
// store (rows past N are clipped by the tensor map), the row LSE optionally by plain stores.
//
// The mainloop is templated on the tile producer (DenseProducer, RangeProducer); both describe a
// query tile's work as a sequence of chunks of at most 128 keys, each either a contiguous key range
// at any start (one TMA box per 64 columns of D) or up to 128 gathered key columns.
//
// Device code only; no system headers (compiles under nvcc and NVRTC). Host side: src/hopper/mod.rs.
#pragma once
#include "hopper/chunks.cuh"
#include "hopper/ptx.cuh"
#include "hopper/producers.cuh"
#include "hopper/softmax.cuh"

namespace mi_hopper {

// ---------------------------------------------------------------------------------------------
// Shared-memory layout (offsets from a 1024-byte aligned base). Every operand tile is a stack of
// [rows][64] bf16 sub-tiles with 128-byte rows, 16-byte chunks XOR-swizzled by row & 7: the layout
// TMA writes with CU_TENSOR_MAP_SWIZZLE_128B and wgmma reads through SW128 descriptors.
template <int D, int STAGES>
struct Layout {
    static constexpr int Q = BM * D * 2;    // [D/64][128 rows][64]
    static constexpr int KV = BN * D * 2;   // [D/64][128 keys][64]
    static constexpr int O = BM * D * 2;    // per consumer: [D/64][64 rows][64]
    static constexpr int off_q = 0;
    static constexpr int off_k = off_q + Q;
    static constexpr int off_v = off_k + STAGES * KV;
    static constexpr int off_o = off_v + STAGES * KV;
    static constexpr int off_bar = off_o + O;
    // barriers: q_full, q_empty, k_full[S], k_empty[S], v_full[S], v_empty[S]
    static constexpr int nbar = 2 + 4 * STAGES;
    // ints: [0] chunk count and [1] index of the current tile (producer -> consumers, under
    // q_full / q_empty); [2], [3] the producer warpgroup's own copies of the tile index by parity.
    static constexpr int off_tile = off_bar + 8 * nbar;
    static constexpr int off_meta = off_tile + 16;        // ChunkMeta[STAGES] (64 bytes each)
    static constexpr int off_cols = off_meta + 64 * STAGES;  // int[STAGES][BN]
    static constexpr int bytes = off_cols + 4 * BN * STAGES;
    static constexpr int alloc = bytes + 1024;            // slack for aligning the base
    static __device__ __forceinline__ u32 q_full(u32 b) { return b + off_bar; }
    static __device__ __forceinline__ u32 q_empty(u32 b) { return b + off_bar + 8; }
    static __device__ __forceinline__ u32 k_full(u32 b, int s) { return b + off_bar + 16 + 8 * s; }
    static __device__ __forceinline__ u32 k_empty(u32 b, int s) { return b + off_bar + 16 + 8 * (STAGES + s); }
    static __device__ __forceinline__ u32 v_full(u32 b, int s) { return b + off_bar + 16 + 8 * (2 * STAGES + s); }
    static __device__ __forceinline__ u32 v_empty(u32 b, int s) { return b + off_bar + 16 + 8 * (3 * STAGES + s); }
};

// Query tile order of the persistent grid: tile t of H * n_mtiles. The tiles of one KV head come
// together (its GQA query heads adjacent, row bands longest first, as causal cost grows with m), so
// the ~132 tiles in flight read one head's K/V and neighbouring bands' slash ranges: that working set
// stays in L2. Ordering all heads of a band together instead put every KV head's keys in flight at
// once (72 MB for vs(1000,6096) at 128K, beyond the 50 MB L2): 64% L2 misses, DRAM-bound sparse
// tiles. CTAs take tiles in this order from one counter (Params::tile_counter), so a CTA whose
// tiles were cheap takes more: per-head costs differ (sparse heads).
__device__ __forceinline__ void tile_coords(const Params& p, int t, int& h, int& m) {
    const int group = p.heads / p.kv_heads;
    const int per_kv = group * p.n_mtiles;
    const int r = t % per_kv;
    m = p.n_mtiles - 1 - r / group;
    h = (t / per_kv) * group + r % group;
}

// ---------------------------------------------------------------------------------------------
// Producer warpgroup. ptid: thread index inside the producer warpgroup. Without gathers only
// ptid 0 runs this; with gathers all 128 threads follow the same chunk sequence, thread 0 alone
// waits on the mbarriers and issues TMA, and all 128 meet at named barrier 5 around each gather.
template <int D, int STAGES, class P>
__device__ __forceinline__ void producer_loop(const Params& p, const TmaMap* tq, const TmaMap* tk, const TmaMap* tv,
                                              const TmaMap* tk64, const TmaMap* tv64, unsigned char* sm, u32 base,
                                              int ptid) {
    using L = Layout<D, STAGES>;
    const int total = p.heads * p.n_mtiles;
    const int group = p.heads / p.kv_heads;
    volatile int* tile_box = (volatile int*)(sm + L::off_tile);
    // Thread 0 takes the next tile from the counter while the current one runs (the atomic's
    // latency stays off the tile boundary).
    int next = ptid == 0 ? atomicAdd(p.tile_counter, 1) : 0;
    int it = 0;
    for (int tc = 0;; ++tc) {
        int t = next;
        if (P::kGather) {  // all 128 threads follow the chunks: thread 0 hands them the tile
            if (ptid == 0) tile_box[2 + (tc & 1)] = t;
            barrier_sync(5, 128);
            t = tile_box[2 + (tc & 1)];
        }
        if (t >= total) {
            if (ptid == 0) {  // tells the consumers to stop
                mbar_wait(L::q_empty(base), (tc & 1) ^ 1);
                tile_box[1] = t;
                mbar_arrive(L::q_full(base));
            }
            break;
        }
        if (ptid == 0) next = atomicAdd(p.tile_counter, 1);
        int h, m;
        tile_coords(p, t, h, m);
        const int hk = h / group;
        typename P::State st = P::begin(p, h, m);
        const int n = st.n;
        if (ptid == 0) {
            mbar_wait(L::q_empty(base), (tc & 1) ^ 1);
            tile_box[0] = n;
            tile_box[1] = t;
            mbar_expect_tx(L::q_full(base), L::Q);
#pragma unroll
            for (int c = 0; c < D / 64; ++c)
                tma_load_3d(base + L::off_q + c * BM * 128, tq, L::q_full(base), 64 * c, m * BM, h);
        }
        for (int j = 0; j < n; ++j, ++it) {
            ChunkMeta cm = P::next(p, st);
            const int s = it % STAGES;
            const u32 ph = ((it / STAGES) & 1) ^ 1;
            const u32 ks = base + L::off_k + s * L::KV, vs = base + L::off_v + s * L::KV;
            ChunkMeta* meta = (ChunkMeta*)(sm + L::off_meta) + s;
            if (!P::kGather || cm.kind != KIND_GATHER) {
                if (P::kGather && ptid != 0) continue;  // thread 0 alone handles TMA chunks
                const bool pair = P::kGather && cm.kind == KIND_PAIR;
                mbar_wait(L::k_empty(base, s), ph);
                *meta = cm;
                mbar_expect_tx(L::k_full(base, s), L::KV);
#pragma unroll
                for (int c = 0; c < D / 64; ++c) {
                    if (pair) {
                        tma_load_3d(ks + c * BN * 128, tk64, L::k_full(base, s), 64 * c, cm.start, hk);
                        tma_load_3d(ks + c * BN * 128 + 64 * 128, tk64, L::k_full(base, s), 64 * c, cm.start2, hk);
                    } else {
                        tma_load_3d(ks + c * BN * 128, tk, L::k_full(base, s), 64 * c, cm.start, hk);
                    }
                }
                mbar_wait(L::v_empty(base, s), ph);
                mbar_expect_tx(L::v_full(base, s), L::KV);
#pragma unroll
                for (int c = 0; c < D / 64; ++c) {
                    if (pair) {
                        tma_load_3d(vs + c * BN * 128, tv64, L::v_full(base, s), 64 * c, cm.start, hk);
                        tma_load_3d(vs + c * BN * 128 + 64 * 128, tv64, L::v_full(base, s), 64 * c, cm.start2, hk);
                    } else {
                        tma_load_3d(vs + c * BN * 128, tv, L::v_full(base, s), 64 * c, cm.start, hk);
                    }
                }
            } else {
                // Asynchronous gather: K rows, then V rows, by 16-byte cp.async; each stage's full
                // barrier completes when the copies land (cp.async.mbarrier.arrive), so the
                // producer goes on to the next chunk at once. Thread 0 alone waits on mbarriers.
                constexpr int PIECES = D / 8;     // 16-byte pieces per key row
                constexpr int RPW = 32 / PIECES;  // rows a warp covers per pass
                constexpr int RPI = 128 / PIECES; // rows the warpgroup covers per pass
                const int lane = ptid & 31, warp = ptid >> 5, q = ptid % PIECES;
                if (ptid == 0) {
                    mbar_wait(L::k_empty(base, s), ph);
                    *meta = cm;
                }
                barrier_sync(5, 128);
                int* cl = (int*)(sm + L::off_cols) + s * BN;
                cl[ptid] = ptid < cm.len ? p.cols[cm.start + ptid] : 0x7fffffff;
                // Lane L holds the key of the row it serves in pass L / RPW (one index read per
                // thread; the passes get their keys by shuffle).
                const int my_row = (lane / RPW) * RPI + warp * RPW + lane % RPW;
                const int my_key = my_row < cm.len ? p.cols[cm.start + my_row] : -1;
                const u16* kbase = p.k + (size_t)hk * p.kv_hstride;
                const u16* vbase = p.v + (size_t)hk * p.kv_hstride;
                auto gather = [&](const u16* src, u32 dst) {
#pragma unroll
                    for (int i = 0; i < PIECES; ++i) {
                        const int key = __shfl_sync(0xffffffffu, my_key, i * RPW + lane / PIECES);
                        const int r = i * RPI + warp * RPW + lane / PIECES;
                        const u32 so = (u32)((q >> 3) * (BN * 128) + r * 128 + (((q & 7) ^ (r & 7)) << 4));
                        cp_async16(dst + so, src + (size_t)max(key, 0) * D + q * 8, key >= 0);
                    }
                };
                gather(kbase, ks);
                cp_async_mbar_arrive(L::k_full(base, s));
                barrier_sync(5, 128);  // every pending count raised (and the column list written)
                if (ptid == 0) {
                    mbar_arrive(L::k_full(base, s));
                    mbar_wait(L::v_empty(base, s), ph);
                }
                barrier_sync(5, 128);
                gather(vbase, vs);
                cp_async_mbar_arrive(L::v_full(base, s));
                barrier_sync(5, 128);
                if (ptid == 0) mbar_arrive(L::v_full(base, s));
            }
        }
    }
    // No thread leaves with copies in flight.
    if (P::kGather) cp_async_wait0();
}

// ---------------------------------------------------------------------------------------------
// Consumer warpgroup w (0/1) of a query tile: rows m*128 + 64w .. +63.

// A descriptor moved by `bytes` within shared memory: the start address is the low 14-bit field in
// 16-byte units and no operand offset carries out of it (shared memory < 256 KB), so one add steps
// it. Descriptors are built once per consumer and stepped per k-step and stage: building each from
// its address cost ~9 integer instructions per HGMMA in the issue-bound GEMM phase (ncu, 128K).
__device__ __forceinline__ u64 desc_step(u64 d, u32 bytes) { return d + (u64)(bytes >> 4); }

// S (64 x 128) = Q_w K^T: D/16 SS wgmmas. dq: Q_w's descriptor; dk: the K stage's.
template <int D, bool F16>
__device__ __forceinline__ void issue_qk(float (&s)[16][4], u64 dq, u64 dk) {
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const u64 da = desc_step(dq, (kk >> 2) * (BM * 128) + (kk & 3) * 32);
        const u64 db = desc_step(dk, (kk >> 2) * (BN * 128) + (kk & 3) * 32);
        hp_wgmma_ss_m64n128<F16>(s, da, db, kk > 0 ? 1 : 0);
    }
    wg_commit();
}
// O (64 x D) += P (64 x 128, registers) V (128 x D): RS wgmmas over k-steps [K0, K1) of 16 keys
// (all 8 by default), V MN-major.
// dv: the V stage's descriptor (MN-major: leading byte offset BN * 128).
template <int D, bool F16, int K0 = 0, int K1 = BN / 16>
__device__ __forceinline__ void issue_pv(float (&o)[D / 8][4], const u32 (&pf)[8][4], u64 dv) {
    wg_fence();
#pragma unroll
    for (int kk = K0; kk < K1; ++kk) {
        const u64 db = desc_step(dv, kk * 2048);
        if constexpr (D == 128)
            hp_wgmma_rs_m64n128<F16>(o, pf[kk], db);
        else
            hp_wgmma_rs_m64n64<F16>(o, pf[kk], db);
    }
    wg_commit();
}

// Half-width PV: a consumer whose keys of a chunk all lie in one 64-key half (a slash run's first
// or last 64 keys in the 128-row union, a causally cut diagonal chunk) runs PV over that half's 4
// k-steps only (P is 0 in the other half). Each variant is a whole wgmma stage (fence .. commit),
// so the branch never splits a stage. QK^T stays n128: an n64 QK^T (per half, or branched against
// the n128 one) makes ptxas serialise every wgmma (C7511, "insufficient register resources").
// Halves of the chunk consumer w computes: bit 0 keys 0..63, bit 1 keys 64..127 (never 0). Only
// thread-order masks (the mixed kernel): there word q's bits 0..15 are columns < 64.
// mw: consumer w's mask words in shared memory (a runtime index into the register copy of the
// ChunkMeta would put it in local memory).
__device__ __forceinline__ int chunk_halves(const ChunkMeta& cm, const u32* mw, int w, int causal, int pos0) {
    int hv = 3;
    if (!((cm.full >> w) & 1)) {
        const u32 own = mw[0] | mw[1] | mw[2] | mw[3];
        hv = ((own & 0xffffu) ? 1 : 0) | ((own >> 16) ? 2 : 0);
    }
    if (causal && cm.kind != KIND_GATHER && cm.start2 > pos0 + 63) hv &= 1;
    return hv ? hv : 1;
}
template <int D, bool F16>
__device__ __forceinline__ void issue_pv_halves(float (&o)[D / 8][4], const u32 (&pf)[8][4], u64 dv, int hv) {
    if (hv == 3)
        issue_pv<D, F16>(o, pf, dv);
    else if (hv == 1)
        issue_pv<D, F16, 0, 4>(o, pf, dv);
    else
        issue_pv<D, F16, 4, 8>(o, pf, dv);
}

template <int D, int STAGES, class P>
__device__ __forceinline__ void consumer_loop(const Params& p, const TmaMap* to, unsigned char* sm, u32 base, int w,
                                              int ctid) {
    using L = Layout<D, STAGES>;
    const int warp = ctid >> 5, lane = ctid & 31;
    const int total = p.heads * p.n_mtiles;
    const float NEG = __int_as_float(0xff800000);
    const u64 dq = desc_sw128(base + L::off_q + w * 64 * 128, 16, 1024);
    const u64 dk0 = desc_sw128(base + L::off_k, 16, 1024);
    const u64 dv0 = desc_sw128(base + L::off_v, BN * 128, 1024);
    const u32 o_w = base + L::off_o + w * (D / 64) * 8192;
    const int my_bar = 1 + w, other_bar = 2 - w;
    const ChunkMeta* metas = (const ChunkMeta*)(sm + L::off_meta);
    int it = 0;
    for (int tc = 0;; ++tc) {
        mbar_wait(L::q_full(base), tc & 1);
        const int t = *(volatile int*)(sm + L::off_tile + 4);
        if (t >= total) break;
        const int n = *(volatile int*)(sm + L::off_tile);
        int h, m;
        tile_coords(p, t, h, m);
        const int row0 = m * BM + 64 * w;
        const int row_a = row0 + 16 * warp + (lane >> 2);
        // Positions of those rows (the causal and A-shape rules compare keys with positions).
        const int pos0 = row0 + p.off, pos_a = row_a + p.off;
        const bool ashape = p.head_kind && p.head_kind[h] == HEAD_ASHAPE;
        const int n_init = ashape ? p.head_init[h] : 0;
        const int n_local = ashape ? p.head_local[h] : 0x7fffffff;
        float o[D / 8][4];
#pragma unroll
        for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
        float mrow[2] = {NEG, NEG}, lrow[2] = {0.f, 0.f};
        if (n == 0) {
            mbar_arrive(L::q_empty(base));
        } else {
            if (w == 1) named_arrive(1, 256);
            float s[16][4];
            u32 pf[8][4];
            float corr[2];
            // Gathered K/V rows were written by cp.async (generic proxy); wgmma reads them through
            // the async proxy.
            auto gather_fence = [&](const ChunkMeta& c) {
                if (P::kGather && c.kind == KIND_GATHER) fence_proxy_async();
            };
            // First chunk: S only.
            int st = it % STAGES;
            u32 ph = (it / STAGES) & 1;
            mbar_wait(L::k_full(base, st), ph);
            ChunkMeta cm = metas[st];
            gather_fence(cm);
            int hv = P::kGather ? chunk_halves(cm, metas[st].mask[w], w, p.causal, pos0) : 3;
            named_sync(my_bar, 256);
            issue_qk<D, P::kF16>(s, dq, desc_step(dk0, st * L::KV));
            named_arrive(other_bar, 256);
            wg_wait<0>();
            pin(s);
            if (n == 1) mbar_arrive(L::q_empty(base));
            softmax_chunk<P::kGather>(s, mrow, lrow, corr, need_mask(cm, w, p.causal, pos0, ashape, n_init, n_local), cm,
                          metas[st].mask[w], (const int*)(sm + L::off_cols) + st * BN, pos0, pos_a, p.causal, ashape,
                          n_init, n_local, p.scale_log2, lane);
            mbar_arrive(L::k_empty(base, st));
            pack_p<P::kF16>(pf, s);
            int pst = st, phv = hv;
            u32 pph = ph;
            ++it;
            for (int j = 1; j < n; ++j, ++it) {
                st = it % STAGES;
                ph = (it / STAGES) & 1;
                mbar_wait(L::k_full(base, st), ph);
                cm = metas[st];
                gather_fence(cm);
                hv = P::kGather ? chunk_halves(cm, metas[st].mask[w], w, p.causal, pos0) : 3;
                named_sync(my_bar, 256);
                issue_qk<D, P::kF16>(s, dq, desc_step(dk0, st * L::KV));
                mbar_wait(L::v_full(base, pst), pph);
                issue_pv_halves<D, P::kF16>(o, pf, desc_step(dv0, pst * L::KV), phv);
                named_arrive(other_bar, 256);
                wg_wait<1>();
                pin(s);
                if (j == n - 1) mbar_arrive(L::q_empty(base));
                softmax_chunk<P::kGather>(s, mrow, lrow, corr, need_mask(cm, w, p.causal, pos0, ashape, n_init, n_local), cm,
                              metas[st].mask[w], (const int*)(sm + L::off_cols) + st * BN, pos0, pos_a, p.causal,
                              ashape, n_init, n_local, p.scale_log2, lane);
                mbar_arrive(L::k_empty(base, st));
                wg_wait<0>();
                pin(o);
                mbar_arrive(L::v_empty(base, pst));
                // Rows whose maximum did not move have corr exactly 1 (ex2(0)); once the maxima
                // settle most chunks move none in a warp, and the D/2 multiplies are skipped.
                if (!__all_sync(0xffffffffu, corr[0] == 1.f && corr[1] == 1.f)) {
#pragma unroll
                    for (int i = 0; i < D / 8; ++i) {
                        o[i][0] *= corr[0];
                        o[i][1] *= corr[0];
                        o[i][2] *= corr[1];
                        o[i][3] *= corr[1];
                    }
                }
                pack_p<P::kF16>(pf, s);
                pst = st;
                pph = ph;
                phv = hv;
            }
            // Last chunk's PV.
            mbar_wait(L::v_full(base, pst), pph);
            named_sync(my_bar, 256);
            issue_pv_halves<D, P::kF16>(o, pf, desc_step(dv0, pst * L::KV), phv);
            if (w == 0) named_arrive(other_bar, 256);
            wg_wait<0>();
            pin(o);
            mbar_arrive(L::v_empty(base, pst));
        }
        // Epilogue: normalise, stage O (bf16, swizzled) in shared memory, TMA store 64 rows.
        float inv[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 1);
            lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 2);
            inv[r] = lrow[r] > 0.f ? 1.f / lrow[r] : 0.f;
        }
        if (p.out32) {
            // f32 output: plain 8-byte stores of each thread's fragment, rows past N skipped.
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int row = row_a + 8 * r;
                if (row < p.n) {
                    float* dst = p.out32 + (size_t)h * p.o_hstride + (size_t)row * D + 2 * (lane & 3);
#pragma unroll
                    for (int i = 0; i < D / 8; ++i)
                        *(float2*)(dst + 8 * i) = make_float2(o[i][2 * r] * inv[r], o[i][2 * r + 1] * inv[r]);
                }
            }
        } else {
        if (ctid == 0) bulk_wait_read0();
        named_sync(3 + w, 128);
#pragma unroll
        for (int i = 0; i < D / 8; ++i)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int row = 16 * warp + (lane >> 2) + 8 * r;
                const u32 addr = o_w + (i >> 3) * 8192 + row * 128 + ((((u32)i & 7) ^ (row & 7)) << 4) + (lane & 3) * 4;
                const u32 val = pack2<P::kF16>(o[i][2 * r] * inv[r], o[i][2 * r + 1] * inv[r]);
                asm volatile("st.shared.u32 [%0], %1;" ::"r"(addr), "r"(val) : "memory");
            }
        fence_proxy_async();
        named_sync(3 + w, 128);
        if (ctid == 0) {
#pragma unroll
            for (int c = 0; c < D / 64; ++c) tma_store_3d(to, o_w + c * 8192, 64 * c, row0, h);
            bulk_commit();
        }
        }
        if (p.lse && (lane & 3) == 0) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int row = row_a + 8 * r;
                if (row < p.n)
                    p.lse[(size_t)h * p.n + row] = lrow[r] > 0.f ? (mrow[r] + __log2f(lrow[r])) * 0.6931471805599453f : NEG;
            }
        }
    }
    if (ctid == 0) bulk_wait0();
}

// ---------------------------------------------------------------------------------------------
// Body of the kernel; the maps must be the kernel's __grid_constant__ parameters (TMA reads them
// through their generic addresses). Entry points: fa3_fwd_kernel below, hopper_attention.cu.
template <int D, int STAGES, class P>
__device__ __forceinline__ void fa3_fwd_body(const TmaMap& tq, const TmaMap& tk, const TmaMap& tv, const TmaMap& to,
                                             const TmaMap& tk64, const TmaMap& tv64, const Params& p) {
    using L = Layout<D, STAGES>;
    extern __shared__ unsigned char smem_raw[];
    const u32 raw = smem_u32(smem_raw);
    unsigned char* sm = smem_raw + (((raw + 1023u) & ~1023u) - raw);
    const u32 base = smem_u32(sm);
    const int wg = threadIdx.x / 128, ctid = threadIdx.x % 128;
    // A gathering producer needs 16 more registers at D = 64 (four key rows per warp pass).
    constexpr int kProducerRegs = P::kGather && D == 64 ? P::kProducerRegs + 16 : P::kProducerRegs;
    if (threadIdx.x == 0) {
        mbar_init(L::q_full(base), 1);
        mbar_init(L::q_empty(base), 256);
        for (int s = 0; s < STAGES; ++s) {
            mbar_init(L::k_full(base, s), 1);
            mbar_init(L::k_empty(base, s), 256);
            mbar_init(L::v_full(base, s), 1);
            mbar_init(L::v_empty(base, s), 256);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        prefetch_map(&tq);
        prefetch_map(&tk);
        prefetch_map(&tv);
        prefetch_map(&to);
        if (P::kGather) {
            prefetch_map(&tk64);
            prefetch_map(&tv64);
        }
    }
    __syncthreads();
    if (wg == 0) {
        reg_dealloc<kProducerRegs>();
        if (P::kGather || ctid == 0) producer_loop<D, STAGES, P>(p, &tq, &tk, &tv, &tk64, &tv64, sm, base, ctid);
    } else {
        reg_alloc<(504 - kProducerRegs) / 2>();  // 3 x 168 at entry
        consumer_loop<D, STAGES, P>(p, &to, sm, base, wg - 1, ctid);
    }
}

template <int D, int STAGES, class P>
__global__ void __launch_bounds__(NTHREADS, 1)
    fa3_fwd_kernel(const __grid_constant__ TmaMap tq, const __grid_constant__ TmaMap tk,
                   const __grid_constant__ TmaMap tv, const __grid_constant__ TmaMap to,
                   const __grid_constant__ TmaMap tk64, const __grid_constant__ TmaMap tv64, const Params p) {
    fa3_fwd_body<D, STAGES, P>(tq, tk, tv, to, tk64, tv64, p);
}

}  // namespace mi_hopper
