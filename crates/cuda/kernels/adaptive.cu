// Adaptive Vertical-Slash budgets on the GPU: exactly core's adaptive.rs (`adaptive_vs_budget`
// followed by `clamp_vs_budget`) on the raw scores estimate.cu left in vscore / sscore.
//
// Mass is fixed point: a score x weighs floor(min(x, 128) * 2^32) units (0 when not finite or not
// positive), the target is ceil(gamma * total) in IEEE double with gamma = ppm / 1e6, and the count
// is F (the forced entries, kept whatever they weigh) plus the fewest other entries, heaviest first,
// whose units bring the kept units to the target (core's mass_count). Integer sums do not depend on
// the order of summation, so this equals the host's sorted-prefix count on the same scores.
// Instead of a sort, a binary search finds the crossing weight u* (the largest u with S(u) = units
// of the other entries weighing >= u reaching what is still needed); then m = #(> u*) +
// ceil((need - units(> u*)) / u*). About 40 passes over the scores per (item, vector): small next
// to the estimate's 64 x N x D logits.
#include "common.cuh"
#include "vs_items.cuh"

// Per item, int[6]: gamma_ppm (0 = fixed budgets: the item is left alone), min_v, max_v, min_s,
// max_s (the bounds capped at kv_len by the host, which changes no result), unused.
#define AD_PPM 0
#define AD_MIN_V 1
#define AD_MAX_V 2
#define AD_MIN_S 3
#define AD_MAX_S 4
#define AD_STRIDE 6

#define AD_THREADS 1024
#define AD_MASS_CAP 128.f

__device__ __forceinline__ u64 mass_units(float x) {
    if (!(x > 0.f) || x == MI_POS_INF) return 0ull;
    // Exact: a power-of-two scaling of a float below 2^7, truncated.
    return (u64)((double)fminf(x, AD_MASS_CAP) * 4294967296.0);
}

// Sum over the CTA, returned to every thread (red: 33 u64 of shared memory).
__device__ __forceinline__ u64 block_sum_u64(u64 v, u64* red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < AD_THREADS / 32 ? red[lane] : 0ull;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
        if (lane == 0) red[32] = v;
    }
    __syncthreads();
    const u64 r = red[32];
    __syncthreads();
    return r;
}

// grid (items, 2): blockIdx.y == 0 picks k_v from the vertical scores, 1 picks k_s from the slash
// scores, and writes it into the item.
extern "C" __global__ void __launch_bounds__(AD_THREADS) vs_adaptive(const int* seqs, int* items, const int* adapt,
                                                                     const float* vscore, const float* sscore) {
    __shared__ u64 red[33];
    const int* ad = adapt + AD_STRIDE * blockIdx.x;
    const int ppm = ad[AD_PPM];
    if (ppm <= 0) return;
    int* item = items + IT_STRIDE * blockIdx.x;
    const int kv_len = seqs[4 * item[IT_B] + 3];
    const bool slash = blockIdx.y == 1;
    const float* sc = (slash ? sscore : vscore) + item[IT_SCORE];
    const int tid = threadIdx.x;

    // The forced entries (i < F) are kept whatever they weigh; the others are counted heaviest first.
    const int forced = min(kv_len, slash ? VS_FORCED_SLASHES : VS_FORCED_VERTICALS);
    u64 part_forced = 0, part_rest = 0;
    for (int i = tid; i < kv_len; i += AD_THREADS) {
        const u64 u = mass_units(sc[i]);
        if (i < forced)
            part_forced += u;
        else
            part_rest += u;
    }
    const u64 kept = block_sum_u64(part_forced, red);
    const u64 total = kept + block_sum_u64(part_rest, red);
    const double gamma = __ddiv_rn((double)ppm, 1000000.0);
    u64 target = (u64)ceil(__dmul_rn(gamma, __ull2double_rn(total)));
    if (target > total) target = total;

    long long count = forced;
    if (kept < target) {
        const u64 need = target - kept;  // from the non-forced entries
        // S(lo) >= need > S(hi), S(u) = units of the non-forced entries weighing >= u: S(1) is
        // their total, nothing weighs 2^39 + 1.
        u64 lo = 1, hi = (128ull << 32) + 1;
        while (hi - lo > 1) {
            const u64 mid = lo + (hi - lo) / 2;
            u64 p = 0;
            for (int i = forced + tid; i < kv_len; i += AD_THREADS) {
                const u64 u = mass_units(sc[i]);
                p += u >= mid ? u : 0ull;
            }
            if (block_sum_u64(p, red) >= need)
                lo = mid;
            else
                hi = mid;
        }
        // lo is the weight of the entry that reaches the target: take every heavier one, then as
        // many of weight lo as still needed.
        u64 above = 0, n_above = 0;
        for (int i = forced + tid; i < kv_len; i += AD_THREADS) {
            const u64 u = mass_units(sc[i]);
            if (u > lo) {
                above += u;
                n_above += 1;
            }
        }
        above = block_sum_u64(above, red);
        n_above = block_sum_u64(n_above, red);
        count = forced + (long long)(n_above + (need - above + lo - 1) / lo);
    }
    // adaptive_vs_budget's bounds (the maximum wins), then clamp_vs_budget's floor and kv_len.
    const long long lo_b = ad[slash ? AD_MIN_S : AD_MIN_V], hi_b = ad[slash ? AD_MAX_S : AD_MAX_V];
    long long k = count > lo_b ? count : lo_b;
    if (k > hi_b) k = hi_b;
    const long long floor_k = slash ? VS_MIN_SLASHES : VS_MIN_VERTICALS;
    if (k < floor_k) k = floor_k;
    if (k > kv_len) k = kv_len;
    if (tid == 0) item[slash ? IT_KS : IT_KV] = (int)k;
}
