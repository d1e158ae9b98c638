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
// Device code only; no system headers (compiles under nvcc and NVRTC). Host side: fa3_launch.cu.
#pragma once
#include "abi.cuh"

#ifndef MI_MIXED_PREGS
#define MI_MIXED_PREGS 56
#endif

namespace mi_hopper {

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

// A CUtensorMap (128 bytes, 64-byte aligned), filled on the host by cuTensorMapEncodeTiled.
struct alignas(64) TmaMap {
    u64 opaque[16];
};

constexpr int BM = 128;          // query rows per tile (2 consumer warpgroups x 64)
constexpr int BN = 128;          // keys per chunk
constexpr int NTHREADS = 384;    // producer warpgroup + 2 consumer warpgroups
constexpr int KIND_RANGE = 0;    // chunk = keys [start, start + len), len <= 128 (one 128-row box)
constexpr int KIND_GATHER = 1;   // chunk = len listed key columns (in the stage's column list)
constexpr int KIND_PAIR = 2;     // chunk = keys [start, start + len) in columns 0..63 and
                                 // [start2, start2 + len2) in columns 64..127 (two 64-row boxes)

// Work description of one 128-key chunk (64 bytes), written to shared memory by the producer before
// it arms the stage's K barrier; read by the consumers after waiting on it. The index planner
// (hopper_attention.cu) writes the same struct to global memory.
struct ChunkMeta {
    int start;   // key of column 0 (RANGE, PAIR); index into Params::cols (GATHER)
    int len;     // columns 0..len-1 loaded (RANGE, GATHER: 1..128; PAIR: 1..64)
    int kind;
    int maxkey;  // largest key in the chunk (decides whether the causal mask is needed)
    int start2;  // key of column 64 (RANGE: start + 64)
    int len2;    // columns 64..64+len2-1 loaded (RANGE: len - 64, may be <= 0)
    int minkey;  // smallest key in the chunk (A-shape window test)
    int full;    // bit w: every one of the 128 columns is valid for consumer w's 64 rows
    u32 mask[2][4];  // bit c of consumer w: column c belongs to w's key set (before causal/A-shape)
};

// Kernel parameters besides the tensor maps. Pointers address the current sequence's rows.
struct Params {
    const u16* k;             // raw K / V (for gathers): head hk at k + hk * kv_hstride, [N][D] bf16
    const u16* v;
    float* lse;               // [H][N] natural-log LSE or null
    float* out32;             // f32 output (head h at out32 + h * o_hstride, [N][D]) or null: bf16 by TMA
    long long kv_hstride;     // elements between K/V heads
    long long o_hstride;      // elements between output heads (f32 output)
    // RangeProducer (per query tile t = h * n_mtiles + m):
    const int* range_ptr;     // [H * n_mtiles + 1] CSR offsets into ranges
    const int* ranges;        // pairs (start, end): key ranges [start, end), end exclusive
    const int* col_ptr;       // [H * n_mtiles + 1] CSR offsets into cols (null: no gathers)
    const int* cols;          // gathered key columns (MixedProducer: the planner's merged columns)
    // MixedProducer:
    const int* head_kind;     // [H]: HEAD_DENSE / HEAD_ASHAPE / HEAD_INDEX
    const int* head_init;     // [H]: A-shape n_init (clamped)
    const int* head_local;    // [H]: A-shape n_local (clamped)
    const int* tile_chunks;   // [H * n_mtiles][2]: (first, count) into chunks (index heads)
    const ChunkMeta* chunks;  // planned chunks of the index heads
    int heads, kv_heads, n, n_mtiles;
    int causal;
    float scale_log2;         // softmax scale * log2(e)
};

// Bits [lo, hi) of a 128-bit column mask (0 <= lo, hi <= 128).
__device__ __forceinline__ void mask_set(u32 (&m)[4], int lo, int hi) {
#pragma unroll
    for (int w = 0; w < 4; ++w) {
        const int a = max(lo - 32 * w, 0), b = min(hi - 32 * w, 32);
        if (a < b) m[w] |= (b == 32 ? 0xffffffffu : ((1u << b) - 1u)) & ~((1u << a) - 1u);
    }
}
// Meta of a contiguous chunk, the same key set for both consumers: columns 0..lo-1 and
// 64..64+hi-1 (clamped to [0, 64]).
__device__ __forceinline__ ChunkMeta range_meta(int start, int len, int kind, int start2, int len2) {
    ChunkMeta cm;
    cm.start = start;
    cm.len = len;
    cm.kind = kind;
    cm.start2 = start2;
    cm.len2 = len2;
    const int lo = kind == KIND_PAIR ? len : min(len, 64);
    const int hi = kind == KIND_PAIR ? len2 : len - 64;
    const int hic = max(0, min(hi, 64));
    cm.minkey = kind == KIND_GATHER ? 0 : start;
    cm.maxkey = kind == KIND_PAIR ? max(start + lo - 1, start2 + hic - 1) : start + len - 1;
    u32 m[4] = {0u, 0u, 0u, 0u};
    mask_set(m, 0, max(0, min(lo, 64)));
    mask_set(m, 64, 64 + hic);
    cm.full = (lo >= 64 && hic >= 64) ? 3 : 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) cm.mask[0][i] = cm.mask[1][i] = m[i];
    return cm;
}

// ---------------------------------------------------------------------------------------------
// PTX wrappers
__device__ __forceinline__ u32 smem_u32(const void* p) {
    return (u32)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u32 bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
    u32 ok;
    do {
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(ok)
            : "r"(bar), "r"(parity)
            : "memory");
    } while (!ok);
}
__device__ __forceinline__ void tma_load_3d(u32 dst, const TmaMap* map, u32 bar, int c0, int c1, int c2) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];"
        ::"r"(dst), "l"((u64)map), "r"(bar), "r"(c0), "r"(c1), "r"(c2)
        : "memory");
}
__device__ __forceinline__ void tma_store_3d(const TmaMap* map, u32 src, int c0, int c1, int c2) {
    asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.tile.bulk_group [%0, {%2, %3, %4}], [%1];"
                 ::"l"((u64)map), "r"(src), "r"(c0), "r"(c1), "r"(c2)
                 : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }
__device__ __forceinline__ void bulk_wait_read0() { asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory"); }
__device__ __forceinline__ void bulk_wait0() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }
__device__ __forceinline__ void prefetch_map(const TmaMap* map) {
    asm volatile("prefetch.tensormap [%0];" ::"l"((u64)map) : "memory");
}
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait0() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
__device__ __forceinline__ void named_sync(int id, int n) { asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(n) : "memory"); }
// Non-aligned form: threads of a warp may reach it from different paths.
__device__ __forceinline__ void barrier_sync(int id, int n) { asm volatile("barrier.sync %0, %1;" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ void named_arrive(int id, int n) { asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(n) : "memory"); }
template <int R> __device__ __forceinline__ void reg_dealloc() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(R)); }
template <int R> __device__ __forceinline__ void reg_alloc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(R)); }

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory"); }
// Keeps the compiler from moving reads of wgmma accumulators above the wait.
template <int N> __device__ __forceinline__ void pin(float (&r)[N][4]) {
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) asm volatile("" : "+f"(r[i][j])::"memory");
}

// Descriptor of a 128B-swizzled operand (8-row groups 1024 bytes apart).
__device__ __forceinline__ u64 desc_sw128(u32 addr, u32 lbo, u32 sbo) {
    u64 d = (u64)((addr >> 4) & 0x3FFF);
    d |= (u64)((lbo >> 4) & 0x3FFF) << 16;
    d |= (u64)((sbo >> 4) & 0x3FFF) << 32;
    d |= (u64)1 << 62;
    return d;
}
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ float ex2(float x) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

// D(64x128) (+)= A(64x16, smem desc) * B(128x16, smem desc)^T; both K-major, 128B swizzle.
__device__ __forceinline__ void hp_wgmma_ss_m64n128(float (&d)[16][4], u64 da, u64 db, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
        : "l"(da), "l"(db), "r"(scale_d));
}
// D(64x64) += A(64x16, registers) * B(16x64, smem desc, MN-major), 128B swizzle.
__device__ __forceinline__ void hp_wgmma_rs_m64n64(float (&d)[8][4], const u32 (&a)[4], u64 db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}
// D(64x128) += A(64x16, registers) * B(16x128, smem desc, MN-major), 128B swizzle.
__device__ __forceinline__ void hp_wgmma_rs_m64n128(float (&d)[16][4], const u32 (&a)[4], u64 db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

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
    static constexpr int off_tile = off_bar + 8 * nbar;   // int: chunk count of the current tile
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

// Query tile order of the persistent grid: tile t of H * n_mtiles, longest rows first (causal
// cost grows with m), heads of one row band adjacent (GQA heads share K/V in L2).
__device__ __forceinline__ void tile_coords(const Params& p, int t, int& h, int& m) {
    m = p.n_mtiles - 1 - t / p.heads;
    h = t % p.heads;
}

// ---------------------------------------------------------------------------------------------
// Tile producers. begin() returns the chunk count of query tile (h, m); next() the chunks in order.

// Dense (causal or not): key tiles 128-aligned, the diagonal (masked) tile first.
struct DenseProducer {
    static constexpr bool kGather = false;
    static constexpr int kProducerRegs = 24;
    struct State {
        int n, top;
    };
    static __device__ __forceinline__ State begin(const Params& p, int h, int m) {
        int nk = (p.n + BN - 1) / BN;
        int n = p.causal ? min(m + 1, nk) : nk;
        return State{n, n - 1};
    }
    static __device__ __forceinline__ ChunkMeta next(const Params& p, State& s) {
        int start = s.top * BN;
        s.top--;
        int len = min(BN, p.n - start);
        return range_meta(start, len, KIND_RANGE, start + 64, len - 64);
    }
};

// Key ranges at arbitrary starts (VS slashes, BS blocks, A-shape sink/window) then gathered
// columns (VS verticals), per 128-row query tile. Ranges are clamped to [0, N) and cut into chunks:
// 128 keys while at least 65 remain; a remainder of at most 64 keys shares its chunk with up to 64
// keys of the next range (KIND_PAIR: two 64-row TMA boxes), so short blocks do not waste half a
// GEMM. The caller keeps a tile's ranges and columns disjoint; ranges ascending.
struct RangeProducer {
    static constexpr bool kGather = true;
    static constexpr int kProducerRegs = 40;
    struct State {
        int r, r_end, pos, c, c_end, n;
    };
    // Moves to the next range with keys (pos = its clamped start); false when none is left.
    static __device__ __forceinline__ bool settle(const Params& p, State& s) {
        while (s.r < s.r_end) {
            if (s.pos < min(p.ranges[2 * s.r + 1], p.n)) return true;
            ++s.r;
            if (s.r < s.r_end) s.pos = max(p.ranges[2 * s.r], 0);
        }
        return false;
    }
    static __device__ __forceinline__ ChunkMeta next(const Params& p, State& s) {
        if (settle(p, s)) {
            const int e = min(p.ranges[2 * s.r + 1], p.n);
            const int a = s.pos;
            const int la = min(BN, e - a);
            s.pos += la;
            if (la <= 64) {
                State t = s;
                if (settle(p, t)) {
                    const int e2 = min(p.ranges[2 * t.r + 1], p.n);
                    const int b = t.pos;
                    const int lb = min(64, e2 - b);
                    t.pos += lb;
                    s = t;
                    return range_meta(a, la, KIND_PAIR, b, lb);
                }
            }
            return range_meta(a, la, KIND_RANGE, a + 64, la - 64);
        }
        const int len = min(BN, s.c_end - s.c);
        ChunkMeta cm = range_meta(s.c, len, KIND_GATHER, 0, 0);
        cm.maxkey = p.cols[s.c + len - 1];
        s.c += len;
        return cm;
    }
    static __device__ __forceinline__ State begin(const Params& p, int h, int m) {
        int t = h * p.n_mtiles + m;
        State s;
        s.r = p.range_ptr[t];
        s.r_end = p.range_ptr[t + 1];
        s.c = p.col_ptr ? p.col_ptr[t] : 0;
        s.c_end = p.col_ptr ? p.col_ptr[t + 1] : 0;
        s.pos = s.r < s.r_end ? max(p.ranges[2 * s.r], 0) : 0;
        // Count the chunks by running the same cutting on a copy.
        State t2 = s;
        t2.c_end = t2.c;
        int n = 0;
        while (settle(p, t2)) {
            next(p, t2);
            ++n;
        }
        s.n = n + (s.c_end - s.c + BN - 1) / BN;
        return s;
    }
};

// Every head in its own pattern, one launch: dense heads as DenseProducer (causal), A-shape heads
// as the key ranges [0, n_init) and the window of the tile's 128 rows (cut like RangeProducer;
// the consumers apply the per-row A-shape predicate on boundary chunks), index (VS/BS) heads read
// the chunks the planner wrote (hopper_attention.cu: the union of the two 64-row blocks' tiles
// and columns, with each block's own key set as a per-consumer column mask).
struct MixedProducer {
    static constexpr bool kGather = true;
    static constexpr int kProducerRegs = MI_MIXED_PREGS;
    struct State {
        int kind, n, top;   // dense: next key tile (descending)
        int r, pos;         // A-shape: current range (0/1) and position
        int rs0, re0, rs1, re1;  // A-shape ranges [rs0, re0), [rs1, re1) (scalars: no local memory)
        int nr;
        int c;              // index: next planned chunk
    };
    static __device__ __forceinline__ bool settle(State& s) {
        while (s.r < s.nr) {
            if (s.pos < (s.r == 0 ? s.re0 : s.re1)) return true;
            ++s.r;
            if (s.r < s.nr) s.pos = s.rs1;
        }
        return false;
    }
    static __device__ __forceinline__ ChunkMeta cut(State& s) {
        settle(s);
        const int a = s.pos;
        const int la = min(BN, (s.r == 0 ? s.re0 : s.re1) - a);
        s.pos += la;
        if (la <= 64) {
            State t = s;
            if (settle(t)) {
                const int b = t.pos;
                const int lb = min(64, (t.r == 0 ? t.re0 : t.re1) - b);
                t.pos += lb;
                s = t;
                return range_meta(a, la, KIND_PAIR, b, lb);
            }
        }
        return range_meta(a, la, KIND_RANGE, a + 64, la - 64);
    }
    static __device__ __forceinline__ State begin(const Params& p, int h, int m) {
        State s;
        s.kind = p.head_kind[h];
        s.r = 0;
        s.nr = 0;
        s.pos = 0;
        s.c = 0;
        s.top = 0;
        if (s.kind == HEAD_INDEX) {
            const int t = h * p.n_mtiles + m;
            s.c = p.tile_chunks[2 * t];
            s.n = p.tile_chunks[2 * t + 1];
        } else if (s.kind == HEAD_ASHAPE) {
            const int r0 = m * BM, r1 = min(r0 + BM, p.n);  // rows [r0, r1)
            const int lo = max(0, r0 - p.head_local[h] + 1);
            const int sink = min(p.head_init[h], r1);
            s.rs1 = s.re1 = 0;
            if (sink >= lo) {
                s.rs0 = 0;
                s.re0 = r1;
                s.nr = 1;
            } else if (sink > 0) {
                s.rs0 = 0;
                s.re0 = sink;
                s.rs1 = lo;
                s.re1 = r1;
                s.nr = 2;
            } else {
                s.rs0 = lo;
                s.re0 = r1;
                s.nr = 1;
            }
            s.pos = s.rs0;
            State t2 = s;
            int n = 0;
            while (settle(t2)) {
                cut(t2);
                ++n;
            }
            s.n = n;
        } else {
            const int nk = (p.n + BN - 1) / BN;
            s.n = min(m + 1, nk);
            s.top = s.n - 1;
        }
        return s;
    }
    static __device__ __forceinline__ ChunkMeta next(const Params& p, State& s) {
        if (s.kind == HEAD_INDEX) return p.chunks[s.c++];
        if (s.kind == HEAD_ASHAPE) return cut(s);
        const int start = s.top * BN;
        s.top--;
        const int len = min(BN, p.n - start);
        return range_meta(start, len, KIND_RANGE, start + 64, len - 64);
    }
};

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
    int it = 0, tc = 0;
    for (int t = blockIdx.x; t < total; t += gridDim.x, ++tc) {
        int h, m;
        tile_coords(p, t, h, m);
        const int hk = h / group;
        typename P::State st = P::begin(p, h, m);
        const int n = st.n;
        if (ptid == 0) {
            mbar_wait(L::q_empty(base), (tc & 1) ^ 1);
            *(volatile int*)(sm + L::off_tile) = n;
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
                // Only thread 0 waits on the mbarriers (a thread that skipped phases could alias
                // an old phase's parity); the others are released by the named barrier.
                if (ptid == 0) {
                    mbar_wait(L::k_empty(base, s), ph);
                    mbar_wait(L::v_empty(base, s), ph);
                    *meta = cm;
                }
                barrier_sync(5, 128);
                int* cl = (int*)(sm + L::off_cols) + s * BN;
                cl[ptid] = ptid < cm.len ? p.cols[cm.start + ptid] : 0x7fffffff;
                constexpr int PIECES = D / 8;  // 16-byte pieces per key row
                const u16* kbase = p.k + (size_t)hk * p.kv_hstride;
                const u16* vbase = p.v + (size_t)hk * p.kv_hstride;
#pragma unroll 4
                for (int i = 0; i < PIECES; ++i) {
                    const int idx = i * 128 + ptid;
                    const int r = idx / PIECES, q = idx % PIECES;
                    const bool valid = r < cm.len;
                    const int key = valid ? p.cols[cm.start + r] : 0;
                    const size_t off = (size_t)key * D + q * 8;
                    const u32 so = (u32)((q >> 3) * (BN * 128) + r * 128 + (((q & 7) ^ (r & 7)) << 4));
                    cp_async16(ks + so, kbase + off, valid);
                    cp_async16(vs + so, vbase + off, valid);
                }
                cp_async_commit();
                cp_async_wait0();
                fence_proxy_async();
                barrier_sync(5, 128);
                if (ptid == 0) {
                    mbar_arrive(L::k_full(base, s));
                    mbar_arrive(L::v_full(base, s));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Consumer warpgroup w (0/1) of a query tile: rows m*128 + 64w .. +63.

// S (64 x 128) = Q_w K^T: D/16 SS wgmmas.
template <int D>
__device__ __forceinline__ void issue_qk(float (&s)[16][4], u32 q_w, u32 k_stage) {
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const u64 da = desc_sw128(q_w + (kk >> 2) * (BM * 128) + (kk & 3) * 32, 16, 1024);
        const u64 db = desc_sw128(k_stage + (kk >> 2) * (BN * 128) + (kk & 3) * 32, 16, 1024);
        hp_wgmma_ss_m64n128(s, da, db, kk > 0 ? 1 : 0);
    }
    wg_commit();
}
// O (64 x D) += P (64 x 128, registers) V (128 x D): 8 RS wgmmas, V MN-major.
template <int D>
__device__ __forceinline__ void issue_pv(float (&o)[D / 8][4], const u32 (&pf)[8][4], u32 v_stage) {
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
        const u64 db = desc_sw128(v_stage + kk * 2048, BN * 128, 1024);
        if constexpr (D == 128)
            hp_wgmma_rs_m64n128(o, pf[kk], db);
        else
            hp_wgmma_rs_m64n64(o, pf[kk], db);
    }
    wg_commit();
}

// Online softmax of one chunk in place (s becomes P in f32). m in log2 units (scaled); l per
// thread partial (its 32 columns), reduced over the quad only at the end.
__device__ __forceinline__ void softmax_chunk(float (&s)[16][4], float (&mrow)[2], float (&lrow)[2], float (&corr)[2],
                                              bool need_mask, const ChunkMeta& cm, const u32* mw, const int* cols,
                                              int row_a, int causal, int n_init, int n_local, float sc, int lane) {
    const float NEG = __int_as_float(0xff800000);
    if (need_mask) {
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
                if (!(okc && (!causal || key <= row_a) && (ash || row_a - key < n_local))) s[i][e] = NEG;
                if (!(okc && (!causal || key <= row_a + 8) && (ash || row_a + 8 - key < n_local))) s[i][2 + e] = NEG;
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

// Whether consumer w (rows row0 .. row0+63) must mask the chunk element-wise.
__device__ __forceinline__ bool need_mask(const ChunkMeta& cm, int w, int causal, int row0, bool ashape, int n_init,
                                          int n_local) {
    if (!((cm.full >> w) & 1)) return true;
    if (causal && cm.maxkey > row0) return true;
    return ashape && cm.maxkey >= n_init && cm.minkey <= row0 + 63 - n_local;
}

__device__ __forceinline__ void pack_p(u32 (&pf)[8][4], const float (&s)[16][4]) {
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
        pf[kk][0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
        pf[kk][1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
        pf[kk][2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pf[kk][3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
}

template <int D, int STAGES, class P>
__device__ __forceinline__ void consumer_loop(const Params& p, const TmaMap* to, unsigned char* sm, u32 base, int w,
                                              int ctid) {
    using L = Layout<D, STAGES>;
    const int warp = ctid >> 5, lane = ctid & 31;
    const int total = p.heads * p.n_mtiles;
    const float NEG = __int_as_float(0xff800000);
    const u32 q_w = base + L::off_q + w * 64 * 128;
    const u32 o_w = base + L::off_o + w * (D / 64) * 8192;
    const int my_bar = 1 + w, other_bar = 2 - w;
    int it = 0, tc = 0;
    for (int t = blockIdx.x; t < total; t += gridDim.x, ++tc) {
        int h, m;
        tile_coords(p, t, h, m);
        const int row0 = m * BM + 64 * w;
        const int row_a = row0 + 16 * warp + (lane >> 2);
        const bool ashape = p.head_kind && p.head_kind[h] == HEAD_ASHAPE;
        const int n_init = ashape ? p.head_init[h] : 0;
        const int n_local = ashape ? p.head_local[h] : 0x7fffffff;
        float o[D / 8][4];
#pragma unroll
        for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
        float mrow[2] = {NEG, NEG}, lrow[2] = {0.f, 0.f};
        mbar_wait(L::q_full(base), tc & 1);
        const int n = *(volatile int*)(sm + L::off_tile);
        if (n == 0) {
            mbar_arrive(L::q_empty(base));
        } else {
            if (w == 1) named_arrive(1, 256);
            float s[16][4];
            u32 pf[8][4];
            float corr[2];
            // First chunk: S only.
            int st = it % STAGES;
            u32 ph = (it / STAGES) & 1;
            mbar_wait(L::k_full(base, st), ph);
            ChunkMeta cm = ((const ChunkMeta*)(sm + L::off_meta))[st];
            named_sync(my_bar, 256);
            issue_qk<D>(s, q_w, base + L::off_k + st * L::KV);
            named_arrive(other_bar, 256);
            wg_wait<0>();
            pin(s);
            if (n == 1) mbar_arrive(L::q_empty(base));
            softmax_chunk(s, mrow, lrow, corr, need_mask(cm, w, p.causal, row0, ashape, n_init, n_local), cm,
                          ((const ChunkMeta*)(sm + L::off_meta))[st].mask[w], (const int*)(sm + L::off_cols) + st * BN,
                          row_a, p.causal, n_init, n_local, p.scale_log2, lane);
            mbar_arrive(L::k_empty(base, st));
            pack_p(pf, s);
            int pst = st;
            u32 pph = ph;
            ++it;
            for (int j = 1; j < n; ++j, ++it) {
                st = it % STAGES;
                ph = (it / STAGES) & 1;
                mbar_wait(L::k_full(base, st), ph);
                cm = ((const ChunkMeta*)(sm + L::off_meta))[st];
                named_sync(my_bar, 256);
                issue_qk<D>(s, q_w, base + L::off_k + st * L::KV);
                mbar_wait(L::v_full(base, pst), pph);
                issue_pv<D>(o, pf, base + L::off_v + pst * L::KV);
                named_arrive(other_bar, 256);
                wg_wait<1>();
                pin(s);
                if (j == n - 1) mbar_arrive(L::q_empty(base));
                softmax_chunk(s, mrow, lrow, corr, need_mask(cm, w, p.causal, row0, ashape, n_init, n_local), cm,
                              ((const ChunkMeta*)(sm + L::off_meta))[st].mask[w],
                              (const int*)(sm + L::off_cols) + st * BN, row_a, p.causal, n_init, n_local,
                              p.scale_log2, lane);
                mbar_arrive(L::k_empty(base, st));
                wg_wait<0>();
                pin(o);
                mbar_arrive(L::v_empty(base, pst));
#pragma unroll
                for (int i = 0; i < D / 8; ++i) {
                    o[i][0] *= corr[0];
                    o[i][1] *= corr[0];
                    o[i][2] *= corr[1];
                    o[i][3] *= corr[1];
                }
                pack_p(pf, s);
                pst = st;
                pph = ph;
            }
            // Last chunk's PV.
            mbar_wait(L::v_full(base, pst), pph);
            named_sync(my_bar, 256);
            issue_pv<D>(o, pf, base + L::off_v + pst * L::KV);
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
                const u32 val = pack_bf16(o[i][2 * r] * inv[r], o[i][2 * r + 1] * inv[r]);
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
        reg_dealloc<P::kProducerRegs>();
        if (P::kGather || ctid == 0) producer_loop<D, STAGES, P>(p, &tq, &tk, &tv, &tk64, &tv64, sm, base, ctid);
    } else {
        reg_alloc<(504 - P::kProducerRegs) / 2>();  // 3 x 168 at entry
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
