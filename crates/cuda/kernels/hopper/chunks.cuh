// Work description shared by the Hopper mainloop (fa3_sm90.cuh), its tile producers
// (producers.cuh) and the index planner (hopper_attention.cu): tile sizes, chunk kinds, the 64-byte
// ChunkMeta and the kernel parameters. Device code only.
#pragma once
#include "abi.cuh"

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
// (hopper_attention.cu) writes the same struct to global memory. 16-byte aligned so that the
// producer moves it with four 16-byte loads and stores, not sixteen 4-byte ones.
struct alignas(16) ChunkMeta {
    int start;   // key of column 0 (RANGE, PAIR); index into Params::cols (GATHER)
    int len;     // columns 0..len-1 loaded (RANGE, GATHER: 1..128; PAIR: 1..64)
    int kind;
    int maxkey;  // largest key in the chunk (decides whether the causal mask is needed)
    int start2;  // key of column 64 (RANGE: start + 64)
    int len2;    // columns 64..64+len2-1 loaded (RANGE: len - 64, may be <= 0)
    int minkey;  // smallest key in the chunk (A-shape window test)
    int full;    // bit w: every one of the 128 columns is valid for consumer w's 64 rows
    u32 mask[2][4];  // consumer w's key set (before causal/A-shape); layout: see mask_set
};

// Kernel parameters besides the tensor maps. Pointers address the current sequence's rows.
struct Params {
    const u16* k;             // raw K / V (for gathers): head hk at k + hk * kv_hstride, [N][D] bf16
    const u16* v;
    float* lse;               // [H][N] natural-log LSE or null
    float* out32;             // f32 output (head h at out32 + h * o_hstride, [N][D]) or null: bf16 by TMA
    long long kv_hstride;     // elements between K/V heads
    long long o_hstride;      // elements between output heads (f32 output)
    const int* cols;          // gathered key columns (the planner's merged columns)
    // MixedProducer:
    const int* head_kind;     // [H]: HEAD_DENSE / HEAD_ASHAPE / HEAD_INDEX
    const int* head_init;     // [H]: A-shape n_init (clamped)
    const int* head_local;    // [H]: A-shape n_local (clamped)
    const int* tile_chunks;   // [H * n_mtiles][2]: (first, count) into chunks (index heads)
    const ChunkMeta* chunks;  // planned chunks of the index heads
    int* tile_counter;        // zero at launch; each CTA's producer takes its next tile from it
    int heads, kv_heads;
    int n;                    // query rows of the sequence
    int nkv;                  // key rows; query row r sits at position r + off (off = nkv - n)
    int off;
    int n_mtiles;
    int causal;
    float scale_log2;         // softmax scale * log2(e)
};

// Column masks come in two layouts. Thread order (the mixed kernel: planner, A-shape and dense
// heads): a thread of quad position q (lane & 3) holds columns c = 8i + 2q + e (i < 16, e < 2) of
// the S tile, so word q has bit 2i + e for column 8i + 2q + e and a thread tests its 32 columns
// with constant shifts. Column order (the dense kernel, whose only masked chunks are diagonal):
// bit c % 32 of word c / 32. The dense kernel keeps the column-order code it was tuned with: the
// same loop with the thread-order test schedules ~5% slower there (bench/NOTES.md, v8).
__device__ __forceinline__ int mask_bit(int c) { return 2 * (c >> 3) + (c & 1); }
__device__ __forceinline__ int mask_word(int c) { return (c >> 1) & 3; }
// Bits [a, b) of a 32-bit word (0 <= a <= b <= 32).
__device__ __forceinline__ u32 bit_range(int a, int b) {
    if (a >= b) return 0u;
    const u32 hi = b >= 32 ? 0xffffffffu : (1u << b) - 1u;
    return hi & ~((1u << a) - 1u);
}
// Sets columns [lo, hi) (0 <= lo, hi <= 128). Thread order: the columns of q below x number
// 2 * (x / 8) + clamp(x % 8 - 2q, 0, 2), so q's bits of [lo, hi) form one contiguous run.
template <bool kThreadOrder>
__device__ __forceinline__ void mask_set(u32 (&m)[4], int lo, int hi) {
    if (lo >= hi) return;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        if constexpr (kThreadOrder) {
            const int a = 2 * (lo >> 3) + min(max((lo & 7) - 2 * q, 0), 2);
            const int b = 2 * (hi >> 3) + min(max((hi & 7) - 2 * q, 0), 2);
            m[q] |= bit_range(a, b);
        } else {
            m[q] |= bit_range(max(lo - 32 * q, 0), min(hi - 32 * q, 32));
        }
    }
}
// Meta of a contiguous chunk, the same key set for both consumers: columns 0..lo-1 and
// 64..64+hi-1 (clamped to [0, 64]).
template <bool kThreadOrder>
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
    // A full chunk (almost every dense and A-shape chunk) skips the mask arithmetic: the producer
    // computes this between a stage's release and its TMA issue, on the pipeline's critical path.
    const bool all = lo >= 64 && hic >= 64;
    u32 m[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    if (!all) {
        m[0] = m[1] = m[2] = m[3] = 0u;
        mask_set<kThreadOrder>(m, 0, max(0, min(lo, 64)));
        mask_set<kThreadOrder>(m, 64, 64 + hic);
    }
    cm.full = all ? 3 : 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) cm.mask[0][i] = cm.mask[1][i] = m[i];
    return cm;
}

}  // namespace mi_hopper
