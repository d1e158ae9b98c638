// Block-wide exact top-k over (score, index) keys: radix select of the k-th largest 64-bit key
// (up to 8 passes of 8 bits, fewer once a whole bin is taken; the later ones over a shared-memory
// copy of one bin's keys when it fits), then an order-preserving compaction. Keys are unique (the
// index is part of the key), so exactly k entries are >= the threshold. Same order as core's
// top_k_indices.
#pragma once
#include "common.cuh"

// Warp 0 finds the digit of the `remaining`-th largest key in a 256-bin histogram: lane l sums the
// bins 255 - 8l .. 248 - 8l (descending), a shuffle scan gives every lane the count above its bins,
// and the one lane whose bins hold the `remaining`-th key walks its 8 bins. It writes
// state[0] = prefix with the digit, state[1] = how many keys are still needed from that bin,
// state[2] = 1 when that is the whole bin (the threshold is then found) and state[3] = the bin's
// size. Replaces a serial walk of 256 bins by one thread per pass, which made every selection
// latency-bound.
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
                state[3] = (u64)c[j];
            }
            if (!found) cum += c[j];
        }
    }
}

// One pass of the select: the 256-bin histogram of digit `shift` of the keys matching `prefix`
// under `mask`. Four keys per thread are loaded before their bins are counted (the loads are what
// the pass waits for). With `collect`, the matching keys are also appended to cand (*n_cand counts
// them; the caller knows they fit).
template <int THREADS, typename KeyFn>
__device__ __forceinline__ void radix_pass(int n, KeyFn key_of, u64 prefix, u64 mask, int shift, u32* hist,
                                           bool collect, u64* cand, u32* n_cand) {
    const int tid = threadIdx.x, lane = tid & 31;
    for (int base = 0; base < n; base += 4 * THREADS) {
        u64 kk[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int i = base + u * THREADS + tid;
            kk[u] = i < n ? key_of(i) : 0ull;
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const bool hit = base + u * THREADS + tid < n && (kk[u] & mask) == prefix;
            if (hit) atomicAdd(&hist[(kk[u] >> shift) & 255u], 1u);
            if (collect) {
                // One counter update per warp: lanes take consecutive slots.
                const u32 ballot = __ballot_sync(0xffffffffu, hit);
                u32 slot = 0;
                if (lane == 0 && ballot) slot = atomicAdd(n_cand, (u32)__popc(ballot));
                slot = __shfl_sync(0xffffffffu, slot, 0);
                if (hit) cand[slot + __popc(ballot & ((1u << lane) - 1u))] = kk[u];
            }
        }
    }
}

// state: 4 u64 of shared memory (prefix, still needed, whole bin, the bin's size). Returns a
// threshold t such that exactly k keys are >= t (the k-th largest key itself, or a prefix of it
// when every key sharing that prefix is among the k). With CAP > 0, the keys of the first chosen
// bin that holds at most CAP keys are copied to cand (CAP u64 of shared memory, n_cand one u32) in
// the next pass, and the passes after it read only them: two or three passes over the n keys
// instead of up to eight.
template <int THREADS, int CAP, typename KeyFn>
__device__ u64 radix_kth_largest(int n, int k, KeyFn key_of, u32* hist, u64* state, u64* cand, u32* n_cand) {
    const int tid = threadIdx.x;
    u64 prefix = 0, mask = 0;
    int remaining = k;
    u64 bin_size = (u64)n;
    int cached = -1;  // keys in cand, once collected
    for (int pass = 0; pass < 8; ++pass) {
        const int shift = 56 - 8 * pass;
        const bool collect = CAP > 0 && cached < 0 && pass > 0 && bin_size <= (u64)CAP;
        for (int i = tid; i < 256; i += THREADS) hist[i] = 0;
        if (collect && tid == 0) *n_cand = 0;
        __syncthreads();
        if (cached >= 0) {
            for (int i = tid; i < cached; i += THREADS) {
                const u64 key = cand[i];
                if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
            }
        } else {
            radix_pass<THREADS>(n, key_of, prefix, mask, shift, hist, collect, cand, n_cand);
        }
        __syncthreads();
        if (collect) cached = (int)*n_cand;
        if (tid < 32) radix_pick_digit(hist, prefix, shift, remaining, state);
        __syncthreads();
        prefix = state[0];
        remaining = (int)state[1];
        const bool whole_bin = state[2] != 0;
        bin_size = state[3];
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

// Calls out(rank, i) for every i with key_of(i) >= thr, rank counting up in index order. Rounds of
// 4 * THREADS keys, four consecutive per thread (coalesced), a block scan per round and a running
// carry (a contiguous n / THREADS stretch per thread made every load touch 32 lines).
template <int THREADS, typename KeyFn, typename OutFn>
__device__ void compact_ge(int n, u64 thr, KeyFn key_of, OutFn out, u32* scan) {
    __shared__ u32 round_total;
    const int tid = threadIdx.x;
    u32 carry = 0;
    for (int base = 0; base < n; base += 4 * THREADS) {
        const int i0 = base + 4 * tid;
        bool take[4];
        u32 mine = 0;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            take[j] = i0 + j < n && key_of(i0 + j) >= thr;
            mine += take[j] ? 1u : 0u;
        }
        u32 rank = carry + block_exclusive_sum<THREADS>(mine, scan);
        if (tid == THREADS - 1) round_total = rank + mine - carry;
#pragma unroll
        for (int j = 0; j < 4; ++j)
            if (take[j]) out((int)rank++, i0 + j);
        __syncthreads();  // round_total is written; scan may be reused
        carry += round_total;
        __syncthreads();
    }
}
