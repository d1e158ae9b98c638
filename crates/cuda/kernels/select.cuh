// Block-wide exact top-k over (score, index) keys: radix select of the k-th largest 64-bit key
// (8 passes of 8 bits), then an order-preserving compaction. Keys are unique (the index is part of
// the key), so exactly k entries are >= the threshold. Same order as core's top_k_indices.
#pragma once
#include "common.cuh"

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
        if (tid == 0) {
            int cum = 0, digit = 0;
            for (int d = 255; d >= 0; --d) {
                int c = (int)hist[d];
                if (cum + c >= remaining) {
                    digit = d;
                    break;
                }
                cum += c;
            }
            state[0] = prefix | ((u64)digit << shift);
            state[1] = (u64)(remaining - cum);
        }
        __syncthreads();
        prefix = state[0];
        remaining = (int)state[1];
        mask |= (u64)0xff << shift;
        __syncthreads();
    }
    return prefix;
}

// Calls out(rank, i) for every i with key_of(i) >= thr, rank counting up in index order.
template <int THREADS, typename KeyFn, typename OutFn>
__device__ void compact_ge(int n, u64 thr, KeyFn key_of, OutFn out, u32* scan) {
    const int tid = threadIdx.x;
    const int per = (n + THREADS - 1) / THREADS;
    const int begin = min(n, tid * per), end = min(n, begin + per);
    u32 cnt = 0;
    for (int i = begin; i < end; ++i) cnt += key_of(i) >= thr ? 1u : 0u;
    scan[tid] = cnt;
    __syncthreads();
    if (tid == 0) {
        u32 acc = 0;
        for (int t = 0; t < THREADS; ++t) {
            u32 c = scan[t];
            scan[t] = acc;
            acc += c;
        }
    }
    __syncthreads();
    u32 rank = scan[tid];
    for (int i = begin; i < end; ++i) {
        if (key_of(i) >= thr) out((int)rank++, i);
    }
    __syncthreads();
}
