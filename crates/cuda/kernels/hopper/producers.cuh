// Tile producers of the Hopper mainloop: each describes one 128-row query tile's work as a
// sequence of chunks of at most 128 keys (ChunkMeta). begin() returns the chunk count of tile
// (h, m), next() the chunks in order. Device code only.
#pragma once
#include "hopper/chunks.cuh"
#include "hopper/ptx.cuh"

#ifndef MI_MIXED_PREGS
#define MI_MIXED_PREGS 56
#endif

namespace mi_hopper {

// Tile producers. begin() returns the chunk count of query tile (h, m); next() the chunks in order.

// The last key a causal row of query tile m sees: the position of its last row (row + off).
__device__ __forceinline__ int last_visible_key(const Params& p, int m) { return min(m * BM + BM, p.n) - 1 + p.off; }

// Dense (causal or not): key tiles 128-aligned, the diagonal (masked) tile first.
struct DenseProducer {
    static constexpr bool kF16 = false;  // element type: bf16 (F16Elems<P> for f16)
    static constexpr bool kGather = false;
    static constexpr int kProducerRegs = 40;
    struct State {
        int n, top;
    };
    static __device__ __forceinline__ State begin(const Params& p, int h, int m) {
        int nk = (p.nkv + BN - 1) / BN;
        int n = p.causal ? min(last_visible_key(p, m) / BN + 1, nk) : nk;
        return State{n, n - 1};
    }
    static __device__ __forceinline__ ChunkMeta next(const Params& p, State& s) {
        int start = s.top * BN;
        s.top--;
        int len = min(BN, p.nkv - start);
        return range_meta<false>(start, len, KIND_RANGE, start + 64, len - 64);
    }
};

// Every head in its own pattern, one launch: dense heads as DenseProducer (causal), A-shape heads
// as the key ranges [0, n_init) and the window of the tile's 128 rows (cut like RangeProducer;
// the consumers apply the per-row A-shape predicate on boundary chunks), index (VS/BS) heads read
// the chunks the planner wrote (hopper_attention.cu: the union of the two 64-row blocks' tiles
// and columns, with each block's own key set as a per-consumer column mask).
struct MixedProducer {
    static constexpr bool kF16 = false;  // element type: bf16 (F16Elems<P> for f16)
    static constexpr bool kGather = true;
    static constexpr int kProducerRegs = MI_MIXED_PREGS;
    struct State {
        int kind, n, top;   // dense: next key tile (descending); index: end of the tile's chunks
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
                return range_meta<true>(a, la, KIND_PAIR, b, lb);
            }
        }
        return range_meta<true>(a, la, KIND_RANGE, a + 64, la - 64);
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
            s.top = s.c + s.n;  // end of the tile's chunks
        } else if (s.kind == HEAD_ASHAPE) {
            // Positions [r0, r1) of the tile's rows (row + off).
            const int r0 = m * BM + p.off, r1 = last_visible_key(p, m) + 1;
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
            const int nk = (p.nkv + BN - 1) / BN;
            s.n = min(last_visible_key(p, m) / BN + 1, nk);
            s.top = s.n - 1;
        }
        return s;
    }
    static __device__ __forceinline__ ChunkMeta next(const Params& p, State& s) {
        if (s.kind == HEAD_INDEX) {
            // The planned chunks are read in order: fetching two ahead into L1 takes the L2
            // latency of this read off the producer's path between a stage's release and its TMA.
            if (s.c + 2 < s.top) prefetch_l1(p.chunks + s.c + 2);
            return p.chunks[s.c++];
        }
        if (s.kind == HEAD_ASHAPE) return cut(s);
        const int start = s.top * BN;
        s.top--;
        const int len = min(BN, p.nkv - start);
        return range_meta<true>(start, len, KIND_RANGE, start + 64, len - 64);
    }
};

// A producer for f16 inputs: K/V bytes move the same way, the consumers' wgmmas and P/O packing
// take f16 (P::kF16).
template <class P> struct F16Elems : P {
    static constexpr bool kF16 = true;
};

}  // namespace mi_hopper
