// Device-side generation of benchmark inputs: unit normals from a counter-based hash (Box-Muller),
// written as bf16 / f16 / f32, and replication of one head group across the others.
#include "common.cuh"

__device__ __forceinline__ u64 mix64(u64 x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

__device__ __forceinline__ float normal_at(u64 seed, u64 i) {
    u64 h = mix64(seed ^ mix64(i + 0x9e3779b97f4a7c15ull));
    float u1 = ((float)(h >> 40) + 1.0f) * (1.0f / 16777217.0f);
    float u2 = (float)((h >> 16) & 0xffffffull) * (1.0f / 16777216.0f);
    return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
}

// dtype: 0 bf16, 1 f16, 2 f32
extern "C" __global__ void fill_normal(void* out, long long n, unsigned long long seed, float scale, int dtype) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float x = normal_at(seed, (u64)i) * scale;
        if (dtype == 0)
            ((u16*)out)[i] = Elem<Bf16>::from_f32(x);
        else if (dtype == 1)
            ((u16*)out)[i] = Elem<F16>::from_f32(x);
        else
            ((float*)out)[i] = x;
    }
}
