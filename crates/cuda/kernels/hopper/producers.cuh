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

// Dense (causal or not): key tiles 128-aligned, the diagonal (masked) tile first.
struct DenseProducer {
    static constexpr bool kF16 = false;  // element type: bf16 (F16Elems<P> for f16)
    static constexpr bool kGather = false;
    static constexpr int kProducerRegs = 40;
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
        return range_meta<false>(start, len, KIND_RANGE, start + 64, len - 64);
    }
};

// Key ranges at arbitrary starts (VS slashes, BS blocks, A-shape sink/window) then gathered
// columns (VS verticals), per 128-row query tile. Ranges are clamped to [0, N) and cut into chunks:
// 128 keys while at least 65 remain; a remainder of at most 64 keys shares its chunk with up to 64
// keys of the next range (KIND_PAIR: two 64-row TMA boxes), so short blocks do not waste half a
// GEMM. The caller keeps a tile's ranges and columns disjoint; ranges ascending.
struct RangeProducer {
    static constexpr bool kF16 = false;  // element type: bf16 (F16Elems<P> for f16)
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
                    return range_meta<true>(a, la, KIND_PAIR, b, lb);
                }
            }
            return range_meta<true>(a, la, KIND_RANGE, a + 64, la - 64);
        }
        const int len = min(BN, s.c_end - s.c);
        ChunkMeta cm = range_meta<true>(s.c, len, KIND_GATHER, 0, 0);
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
        if (s.kind == HEAD_INDEX) {
            // The planned chunks are read in order: fetching two ahead into L1 takes the L2
            // latency of this read off the producer's path between a stage's release and its TMA.
            if (s.c + 2 < s.top) prefetch_l1(p.chunks + s.c + 2);
            return p.chunks[s.c++];
        }
        if (s.kind == HEAD_ASHAPE) return cut(s);
        const int start = s.top * BN;
        s.top--;
        const int len = min(BN, p.n - start);
        return range_meta<true>(start, len, KIND_RANGE, start + 64, len - 64);
    }
};

// A producer for f16 inputs: K/V bytes move the same way, the consumers' wgmmas and P/O packing
// take f16 (P::kF16).
template <class P> struct F16Elems : P {
    static constexpr bool kF16 = true;
};

}  // namespace mi_hopper
