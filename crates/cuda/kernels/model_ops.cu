// Small kernels of the model forward (everything except the linear layers, which go through
// cuBLASLt, and prefill attention, which is minference_cuda::layer_attention).
// Storage is `elem`: elem, or f16 when compiled with -DMODEL_OPS_F16 (the engine's precision
// option; the build makes one cubin of each). Norm weights, biases, RoPE frequencies, the residual
// stream and logits are f32/f64; math is f32.

typedef unsigned long long u64;

// NVRTC has no <math.h>: the same +inf nvcc gets from it.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

#ifdef MODEL_OPS_F16
#include <cuda_fp16.h>
typedef __half elem;
__device__ __forceinline__ float ld(const elem v) { return __half2float(v); }
__device__ __forceinline__ elem st(float v) { return __float2half(v); }
#else
#include <cuda_bf16.h>
typedef __nv_bfloat16 elem;
__device__ __forceinline__ float ld(const elem v) { return __bfloat162float(v); }
__device__ __forceinline__ elem st(float v) { return __float2bfloat16(v); }
#endif

__device__ __forceinline__ u64 mix64(u64 z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ float block_sum(float v) {
    __shared__ float partial[32];
    __shared__ float total;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.0f;
        s = warp_sum(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

// Uniform in [-scale, scale), a pure function of (seed, index): random weights made on the device.
extern "C" __global__ void init_uniform(elem* out, long long n, u64 seed, float scale) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += stride) {
        const u64 h = mix64(seed ^ mix64((u64)i));
        const float u = (float)(h >> 40) * (1.0f / 16777216.0f);
        out[i] = st((2.0f * u - 1.0f) * scale);
    }
}

// out[t, :] = table[tokens[t], :] in f32 (the residual stream); one block per token (ids are
// checked on the host).
extern "C" __global__ void embed_rows(const int* tokens, const elem* table, float* out, int hidden) {
    const long long t = blockIdx.x;
    const elem* src = table + (long long)tokens[t] * hidden;
    float* dst = out + t * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = ld(src[i]);
}

// RMSNorm of one f32 residual row per block: out = x / sqrt(mean(x^2) + eps) * w, in elem for the
// GEMMs that follow.
extern "C" __global__ void rms_norm_rows(const float* x, const float* w, elem* out, int width, float eps) {
    const long long row = blockIdx.x;
    const float* xr = x + row * width;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) ss += xr[i] * xr[i];
    const float inv = rsqrtf(block_sum(ss) / (float)width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) out[row * width + i] = st(xr[i] * inv * w[i]);
}

// Same with an f32 output (the final norm before the LM head).
extern "C" __global__ void rms_norm_f32out(const float* x, const float* w, float* out, int width, float eps) {
    const long long row = blockIdx.x;
    const float* xr = x + row * width;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) ss += xr[i] * xr[i];
    const float inv = rsqrtf(block_sum(ss) / (float)width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) out[row * width + i] = xr[i] * inv * w[i];
}

// x += p: a layer's bf16/f16 update (attention output projection or MLP, summed over a tensor-parallel
// group) added to the f32 residual stream. Keeping the residual in f32 is what keeps the GPU
// within 1e-2 of an f32 reference: real models carry outlier features of magnitude ~1e3 there,
// where a bf16 step is ~8.
extern "C" __global__ void add_update_to_residual(float* x, const elem* p, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += stride) x[i] += ld(p[i]);
}

// One KV-head group's projection output `qkv` [tokens, (gs + 2) * D] (gs query heads, then K, then
// V) → bias, half-split RoPE on Q and K at position pos0 + t, scattered head-major:
// Q to q_out[h, q_row0 + t, :] (q_rows rows per head), K/V to k_out/v_out[kv_row0 + t, :].
// One block per token, blockDim.x = D / 2: thread i owns the pair (i, i + D/2) of every slot.
// Angles in f64: at 1M positions an f32 angle would be off by ~0.1 rad.
// `in_stride` = elements between token rows of `qkv` (several groups may share one GEMM output).
extern "C" __global__ void qkv_rope_scatter(const elem* qkv, const float* bias, const double* inv_freq, elem* q_out,
                                            elem* k_out, elem* v_out, int gs, int head_dim, long long q_rows,
                                            long long q_row0, long long kv_row0, long long pos0, int in_stride) {
    const long long t = blockIdx.x;
    const int i = threadIdx.x, half = head_dim >> 1;
    double s, c;
    sincos((double)(pos0 + t) * inv_freq[i], &s, &c);
    const float cs = (float)c, sn = (float)s;
    const elem* row = qkv + t * (long long)in_stride;
    for (int slot = 0; slot < gs + 2; ++slot) {
        float a = ld(row[slot * head_dim + i]), b = ld(row[slot * head_dim + i + half]);
        if (bias != nullptr) {
            a += bias[slot * head_dim + i];
            b += bias[slot * head_dim + i + half];
        }
        float ra = a, rb = b;
        if (slot <= gs) {
            ra = a * cs - b * sn;
            rb = b * cs + a * sn;
        }
        elem* dst;
        if (slot < gs) dst = q_out + ((long long)slot * q_rows + q_row0 + t) * head_dim;
        else if (slot == gs) dst = k_out + (kv_row0 + t) * head_dim;
        else dst = v_out + (kv_row0 + t) * head_dim;
        dst[i] = st(ra);
        dst[i + half] = st(rb);
    }
}

// gu [rows, 2 * inter] (gate then up) → out [rows, inter] = silu(gate) * up.
extern "C" __global__ void swiglu(const elem* gu, elem* out, long long rows, int inter) {
    const long long total = rows * inter, stride = (long long)gridDim.x * blockDim.x;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const long long r = idx / inter, j = idx - r * inter;
        const float g = ld(gu[r * 2 * inter + j]), u = ld(gu[r * 2 * inter + inter + j]);
        out[idx] = st(g / (1.0f + __expf(-g)) * u);
    }
}

// Head-major [gs, n, D] → token-major rows: dst[t * row_stride + h * D + d] (row_stride in
// elements), 8 elements (16 bytes) per thread; D and row_stride are multiples of 8.
extern "C" __global__ void heads_to_rows(const uint4* src, uint4* dst, long long n, int gs, int head_dim, int row_stride) {
    const int dv = head_dim >> 3, sv = row_stride >> 3;
    const long long total = n * gs * dv, stride = (long long)gridDim.x * blockDim.x;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const long long t = idx / (gs * dv);
        const int rem = (int)(idx - t * gs * dv), h = rem / dv, d = rem - h * dv;
        dst[t * sv + rem] = src[((long long)h * n + t) * dv + d];
    }
}

// logits[o] = dot(w[o, :], x) in f32, one warp per output row (LM head on the last position).
extern "C" __global__ void gemv_rows_f32(const elem* w, const float* x, float* out, int rows, int cols) {
    const long long warp = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (warp >= rows) return;
    const elem* wr = w + warp * cols;
    float acc = 0.0f;
    for (int i = lane; i < cols; i += 32) acc += ld(wr[i]) * x[i];
    acc = warp_sum(acc);
    if (lane == 0) out[warp] = acc;
}

#define DECODE_CHUNK 256

__device__ __forceinline__ const elem* cache_row(const elem* pre, const elem* tail, int n_pre, int j, int head_dim) {
    return j < n_pre ? pre + (long long)j * head_dim : tail + (long long)(j - n_pre) * head_dim;
}

// Decode attention of one KV-head group: q [gs, D] against keys 0..n_keys-1 (key j < n_pre in the
// prefill region, else row j - n_pre of the decode tail). Block `s` handles DECODE_CHUNK keys and
// writes its softmax partials (max, sum, unnormalised output) for a combine pass.
// blockDim.x == DECODE_CHUNK; shared: gs * D + gs * DECODE_CHUNK floats.
extern "C" __global__ void decode_attn_partial(const elem* q, const elem* k_pre, const elem* v_pre, const elem* k_tail,
                                               const elem* v_tail, int n_pre, int n_keys, int gs, int head_dim,
                                               float scale, float* part_m, float* part_l, float* part_acc) {
    extern __shared__ float smem[];
    float* qs = smem;
    float* p = smem + gs * head_dim;
    __shared__ float m_s[64], l_s[64];
    const int split = blockIdx.x, tid = threadIdx.x;
    const int j0 = split * DECODE_CHUNK;
    const int cnt = min(DECODE_CHUNK, n_keys - j0);
    for (int i = tid; i < gs * head_dim; i += blockDim.x) qs[i] = ld(q[i]);
    __syncthreads();
    if (tid < cnt) {
        const elem* kr = cache_row(k_pre, k_tail, n_pre, j0 + tid, head_dim);
        for (int h = 0; h < gs; ++h) {
            float dot = 0.0f;
            for (int d = 0; d < head_dim; ++d) dot += qs[h * head_dim + d] * ld(kr[d]);
            p[h * DECODE_CHUNK + tid] = dot * scale;
        }
    } else {
        for (int h = 0; h < gs; ++h) p[h * DECODE_CHUNK + tid] = -INFINITY;
    }
    __syncthreads();
    const int lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    for (int h = warp; h < gs; h += warps) {
        float m = -INFINITY;
        for (int j = lane; j < DECODE_CHUNK; j += 32) m = fmaxf(m, p[h * DECODE_CHUNK + j]);
        m = warp_max(m);
        float l = 0.0f;
        for (int j = lane; j < DECODE_CHUNK; j += 32) {
            const float e = j < cnt ? __expf(p[h * DECODE_CHUNK + j] - m) : 0.0f;
            p[h * DECODE_CHUNK + j] = e;
            l += e;
        }
        l = warp_sum(l);
        if (lane == 0) {
            m_s[h] = m;
            l_s[h] = l;
        }
    }
    __syncthreads();
    for (int idx = tid; idx < gs * head_dim; idx += blockDim.x) {
        const int h = idx / head_dim, d = idx - h * head_dim;
        float acc = 0.0f;
        for (int j = 0; j < cnt; ++j) acc += p[h * DECODE_CHUNK + j] * ld(cache_row(v_pre, v_tail, n_pre, j0 + j, head_dim)[d]);
        part_acc[((long long)split * gs + h) * head_dim + d] = acc;
    }
    if (tid < gs) {
        part_m[split * gs + tid] = m_s[tid];
        part_l[split * gs + tid] = l_s[tid];
    }
}

// Combines the partials of every split: out[h, d] (elem, head-major [gs, 1, D]).
extern "C" __global__ void decode_attn_combine(const float* part_m, const float* part_l, const float* part_acc, int splits,
                                               int gs, int head_dim, elem* out) {
    const int h = blockIdx.x;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float m = -INFINITY;
        for (int s = 0; s < splits; ++s) m = fmaxf(m, part_m[s * gs + h]);
        float l = 0.0f, acc = 0.0f;
        for (int s = 0; s < splits; ++s) {
            const float w = __expf(part_m[s * gs + h] - m);
            l += part_l[s * gs + h] * w;
            acc += part_acc[((long long)s * gs + h) * head_dim + d] * w;
        }
        out[h * head_dim + d] = st(acc / l);
    }
}
