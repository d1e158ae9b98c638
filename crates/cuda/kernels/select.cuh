// Block-wide exact top-k over (score, index) keys: radix select of the k-th largest 64-bit key
// (up to 8 passes of 8 bits, fewer once a whole bin is taken), then an order-preserving
// compaction. Keys are unique (the index is part of the key), so exactly k entries are >= the
// threshold. Same order as core's top_k_indices.
#pragma once
#include "common.cuh"

// Warp 0 finds the digit of the `remaining`-th largest key in a 256-bin histogram: lane l sums the
// bins 255 - 8l .. 248 - 8l (descending), a shuffle scan gives every lane the count above its bins,
// and the one lane whose bins hold the `remaining`-th key walks its 8 bins. It writes
// state[0] = prefix with the digit, state[1] = how many keys are still needed from that bin, and
// state[2] = 1 when that is the whole bin (the threshold is then found). Replaces a serial walk of
// 256 bins by one thread per pass, which made every selection latency-bound.
__device__ __forceinline__ void radix_pick_digit(const u32* hist, u64 prefix, int shift, int remaining, u64* state) {
    const int lane = threadIdx.x & 31;
    u32 c[8];
    u32 sum = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        c[j] = hist[255 - 8 * lane - j];
        sum += c[j];
    }
    u32 incl = sum;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const u32 t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
    }
    const u32 need = (u32)remaining;
    u32 cum = incl - sum;
    if (cum < need && need <= incl) {
        bool found = false;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            if (!found && cum + c[j] >= need) {
                found = true;
                state[0] = prefix | ((u64)(255 - 8 * lane - j) << shift);
                state[1] = (u64)(need - cum);
                state[2] = c[j] == need - cum ? 1ull : 0ull;
            }
            if (!found) cum += c[j];
        }
    }
}

// state: 3 u64 of shared memory. Returns a threshold t such that exactly k keys are >= t (the k-th
// largest key itself, or a prefix of it when every key sharing that prefix is among the k).
template <int THREADS, typename KeyFn>
__device__ u64 radix_kth_largest(int n, int k, KeyFn key_of, u32* hist, u64* state) {
    const int tid = threadIdx.x;
    u64 prefix = 0, mask = 0;
    int remaining = k;
    for (int pass = 0; pass < 8; ++pass) {
        const int shift = 56 - 8 * pass;
        for (int i = tid; i < 256; i += THREADS) hist[i] = 0;
        __syncthreads();
        for (int i = tid; i < n; i += THREADS) {
            u64 key = key_of(i);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (tid < 32) radix_pick_digit(hist, prefix, shift, remaining, state);
        __syncthreads();
        prefix = state[0];
        remaining = (int)state[1];
        const bool whole_bin = state[2] != 0;
        mask |= (u64)0xff << shift;
        __syncthreads();
        if (whole_bin) break;  // uniform: every thread read the same state
    }
    return prefix;
}

// Exclusive prefix sum of one u32 per thread over the block (THREADS <= 1024, a multiple of 32);
// `scan` holds THREADS / 32 entries of shared memory.
template <int THREADS>
__device__ __forceinline__ u32 block_exclusive_sum(u32 v, u32* scan) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    u32 incl = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const u32 t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
    }
    if (lane == 31) scan[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        const u32 w = lane < THREADS / 32 ? scan[lane] : 0u;
        u32 wi = w;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const u32 t = __shfl_up_sync(0xffffffffu, wi, o);
            if (lane >= o) wi += t;
        }
        if (lane < THREADS / 32) scan[lane] = wi - w;
    }
    __syncthreads();
    return scan[warp] + incl - v;
}

// Calls out(rank, i) for every i with key_of(i) >= thr, rank counting up in index order.
template <int THREADS, typename KeyFn, typename OutFn>
__device__ void compact_ge(int n, u64 thr, KeyFn key_of, OutFn out, u32* scan) {
    const int tid = threadIdx.x;
    const int per = (n + THREADS - 1) / THREADS;
    const int begin = min(n, tid * per), end = min(n, begin + per);
    u32 cnt = 0;
    for (int i = begin; i < end; ++i) cnt += key_of(i) >= thr ? 1u : 0u;
    u32 rank = block_exclusive_sum<THREADS>(cnt, scan);
    for (int i = begin; i < end; ++i) {
        if (key_of(i) >= thr) out((int)rank++, i);
    }
    __syncthreads();
}
