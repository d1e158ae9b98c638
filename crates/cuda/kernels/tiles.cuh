// Key-tile producers shared by every attention kernel: which 64-key tiles a (sequence, head, row
// block) visits, and the element mask inside a tile. Dense: the causal range; A-shape: sink tiles
// then window tiles (disjoint, nothing counted twice); index: CSR tiles then gathered columns.
#pragma once
#include "abi.cuh"
#include "common.cuh"

// Must match `AttnParams` in src/kernels.rs field for field.
struct AttnParams {
    u64 q, k, v, out;
    u64 seqs;        // int[B][4]: q_start, kv_start, q_len, kv_len
    u64 head_kind;   // int[H]: 0 dense, 1 A-shape, 2 sparse index
    u64 head_init;   // int[H]: A-shape n_init (clamped to kv_len by the host)
    u64 head_local;  // int[H]: A-shape n_local (clamped)
    u64 slot_base, tile_ptr, tile_start, col_ptr, col_index;
    int heads, kv_heads, total_q, total_kv;
    int out_f32;
    float scale_log2;
    int kinds;  // bit mask of head kinds this launch computes (1 << HEAD_*); other heads are skipped
    int pad1;
};

static_assert(sizeof(AttnParams) == MI_ATTN_PARAMS_BYTES, "AttnParams must match kernels::AttnParams in Rust");

// A key tile: contiguous keys `start .. start+63` (gather < 0) or `gather` columns read from
// col_index[start ..] (no causal mask: every column precedes the row block).
struct TileRef {
    int start;
    int gather;
};

struct MaskCtx {
    int kv_len, pos0, pos_last, ashape, n_init, n_local;

    __device__ __forceinline__ bool full(TileRef t) const {
        if (t.gather >= 0) return t.gather == 64;
        int s0 = t.start;
        if (s0 < 0 || s0 + 63 >= kv_len || s0 + 63 > pos0) return false;
        if (ashape) return (pos_last - s0) < n_local || (s0 + 63) < n_init;
        return true;
    }
    __device__ __forceinline__ bool valid(TileRef t, int col, int pos) const {
        if (t.gather >= 0) return col < t.gather;
        int key = t.start + col;
        if (key < 0 || key >= kv_len || key > pos) return false;
        if (ashape) return (pos - key) < n_local || key < n_init;
        return true;
    }
};

struct DenseTiles {
    int n;
    __device__ int count() const { return n; }
    __device__ TileRef tile(int t) const { return TileRef{t * 64, -1}; }
};

struct AShapeTiles {
    int first, win_begin, n;
    __device__ int count() const { return n; }
    __device__ TileRef tile(int t) const {
        int id = t < first ? t : win_begin + (t - first);
        return TileRef{id * 64, -1};
    }
};

struct IndexTiles {
    const int* starts;
    int n_tiles, col0, col_end;
    __device__ int count() const { return n_tiles + (col_end - col0 + 63) / 64; }
    __device__ TileRef tile(int t) const {
        if (t < n_tiles) return TileRef{starts[t], -1};
        int s = col0 + (t - n_tiles) * 64;
        int c = col_end - s;
        return TileRef{s, c < 64 ? c : 64};
    }
};


// Row-block geometry shared by the kernels.
struct BlockGeom {
    int b, h, m, R, q_start, kv_start, q_len, kv_len, kvh;
};

template <int BM = 64>
__device__ __forceinline__ bool block_geom(const AttnParams& p, BlockGeom& g) {
    g.b = blockIdx.z;
    g.h = blockIdx.y;
    const int* seq = (const int*)p.seqs + 4 * g.b;
    g.q_start = seq[0];
    g.kv_start = seq[1];
    g.q_len = seq[2];
    g.kv_len = seq[3];
    g.R = (g.q_len + BM - 1) / BM;
    if ((int)blockIdx.x >= g.R) return false;
    if (!((p.kinds >> ((const int*)p.head_kind)[g.h]) & 1)) return false;
    g.m = g.R - 1 - (int)blockIdx.x;  // heaviest row blocks first
    g.kvh = g.h / (p.heads / p.kv_heads);
    return true;
}

template <int BM = 64>
__device__ __forceinline__ MaskCtx block_mask(const BlockGeom& g) {
    const int offset = g.kv_len - g.q_len;
    MaskCtx mc;
    mc.kv_len = g.kv_len;
    mc.pos0 = g.m * BM + offset;
    mc.pos_last = min(g.m * BM + BM - 1, g.q_len - 1) + offset;
    mc.ashape = 0;
    mc.n_init = 0;
    mc.n_local = 0;
    return mc;
}

// Calls body(tiles, mc) with the producer of this head's pattern. Index heads need 64-row blocks
// (the index is per 64-row block); dense and A-shape heads work for any block height.
template <typename Body>
__device__ __forceinline__ void with_tiles(const AttnParams& p, const BlockGeom& g, MaskCtx mc, Body body) {
    const int kind = ((const int*)p.head_kind)[g.h];
    if (kind == HEAD_ASHAPE) {
        int n_init = ((const int*)p.head_init)[g.h];
        int n_local = ((const int*)p.head_local)[g.h];
        mc.ashape = 1;
        mc.n_init = n_init;
        mc.n_local = n_local;
        int win_end = mc.pos_last / 64 + 1;
        int lo = mc.pos0 - n_local + 1;
        int win_begin = (lo > 0 ? lo : 0) / 64;
        if (win_begin > win_end) win_begin = win_end;
        int sink_end = (min(n_init, g.kv_len) + 63) / 64;
        if (sink_end > win_end) sink_end = win_end;
        AShapeTiles tiles;
        tiles.first = min(sink_end, win_begin);
        tiles.win_begin = win_begin;
        tiles.n = tiles.first + (win_end - win_begin);
        body(tiles, mc);
    } else if (kind == HEAD_INDEX) {
        const u32* slot_base = (const u32*)p.slot_base;
        const u32* tile_ptr = (const u32*)p.tile_ptr;
        const u32* col_ptr = (const u32*)p.col_ptr;
        u32 slot = slot_base[g.b] + (u32)g.h * (u32)g.R + (u32)g.m;
        u32 t0 = tile_ptr[slot], t1 = tile_ptr[slot + 1];
        IndexTiles tiles;
        tiles.starts = (const int*)p.tile_start + t0;
        tiles.n_tiles = (int)(t1 - t0);
        tiles.col0 = (int)col_ptr[slot];
        tiles.col_end = (int)col_ptr[slot + 1];
        body(tiles, mc);
    } else {
        DenseTiles tiles;
        tiles.n = mc.pos_last / 64 + 1;
        body(tiles, mc);
    }
}
