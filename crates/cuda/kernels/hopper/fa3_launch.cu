// Host launcher of the sm_90a warp-specialised attention prototype (fa3_sm90.cuh), as a C ABI
// for a ctypes harness today and the Rust launcher later. Builds the four CUtensorMaps with
// cuTensorMapEncodeTiled (fetched through cudaGetDriverEntryPointByVersion: no link to libcuda).
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>
#include <math.h>
#include <stdio.h>

#include "fa3_sm90.cuh"

using namespace mi_hopper;

static PFN_cuTensorMapEncodeTiled_v12000 g_encode = nullptr;

static int get_encode() {
    if (g_encode) return 0;
    cudaDriverEntryPointQueryResult q;
    void* fn = nullptr;
    cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q);
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || !fn) return -100;
    g_encode = (PFN_cuTensorMapEncodeTiled_v12000)fn;
    return 0;
}

// [heads][n][d] bf16, box = 64 columns x box_rows rows x 1 head, 128-byte swizzle, OOB = zeros.
static int make_map(TmaMap* map, const void* ptr, int heads, int n, int d, int box_rows) {
    cuuint64_t dims[3] = {(cuuint64_t)d, (cuuint64_t)n, (cuuint64_t)heads};
    cuuint64_t strides[2] = {(cuuint64_t)d * 2, (cuuint64_t)n * d * 2};
    cuuint32_t box[3] = {64, (cuuint32_t)box_rows, 1};
    cuuint32_t es[3] = {1, 1, 1};
    CUresult r = g_encode((CUtensorMap*)map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void*>(ptr), dims, strides,
                          box, es, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                          CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS ? 0 : -200 - (int)r;
}

template <int D, int STAGES, class P>
static int launch(const TmaMap& tq, const TmaMap& tk, const TmaMap& tv, const TmaMap& to, const TmaMap& tk64,
                  const TmaMap& tv64, const Params& p, int grid, cudaStream_t stream) {
    using L = Layout<D, STAGES>;
    static bool attr_set = false;
    auto kern = fa3_fwd_kernel<D, STAGES, P>;
    if (!attr_set) {
        cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, L::alloc);
        if (e != cudaSuccess) return (int)e;
        attr_set = true;
    }
    kern<<<grid, NTHREADS, L::alloc, stream>>>(tq, tk, tv, to, tk64, tv64, p);
    return (int)cudaGetLastError();
}

static int g_sms = 0;

// Returns 0 on success, > 0 a cudaError_t, < 0: -1 unsupported shape, -100 no cuTensorMapEncodeTiled,
// <= -200 cuTensorMapEncodeTiled failed (-200 - CUresult).
//
// q, o: [heads][n][d] bf16; k, v: [kv_heads][n][d] bf16 (contiguous, 16-byte aligned);
// lse: [heads][n] f32 (natural log) or null. d = 64 or 128; heads % kv_heads == 0.
// range_ptr == null: dense (causal or not). Otherwise sparse, always causal-masked (key <= row)
// on top of the listed keys: for query tile t = h * ceil(n/128) + m (rows 128m .. 128m+127),
// ranges[2i], ranges[2i+1] for i in [range_ptr[t], range_ptr[t+1]) are key ranges [start, end)
// (any start, clamped to [0, n)); cols[col_ptr[t] .. col_ptr[t+1]) are gathered key columns,
// ascending; col_ptr may be null. A tile's ranges and columns must be disjoint, ranges ascending.
// Ranges are cut into 128-key chunks; a remainder of <= 64 keys is paired with up to 64 keys of the
// next range in one chunk (two 64-row TMA boxes).
// grid <= 0: one CTA per SM (persistent).
extern "C" int mi_hopper_attn_fwd(const void* q, const void* k, const void* v, void* o, float* lse, int heads,
                                  int kv_heads, int n, int d, int causal, const int* range_ptr, const int* ranges,
                                  const int* col_ptr, const int* cols, int grid, void* stream) {
    if ((d != 64 && d != 128) || heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || n <= 0) return -1;
    int rc = get_encode();
    if (rc) return rc;
    if (!g_sms) {
        int dev = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&g_sms, cudaDevAttrMultiProcessorCount, dev);
    }
    TmaMap tq, tk, tv, to, tk64, tv64;
    if ((rc = make_map(&tq, q, heads, n, d, BM))) return rc;
    if ((rc = make_map(&tk, k, kv_heads, n, d, BN))) return rc;
    if ((rc = make_map(&tv, v, kv_heads, n, d, BN))) return rc;
    if ((rc = make_map(&to, o, heads, n, d, 64))) return rc;
    if (range_ptr) {
        if ((rc = make_map(&tk64, k, kv_heads, n, d, 64))) return rc;
        if ((rc = make_map(&tv64, v, kv_heads, n, d, 64))) return rc;
    } else {
        tk64 = tk;  // unused by the dense producer
        tv64 = tv;
    }
    Params p = {};
    p.k = (const u16*)k;
    p.kv_hstride = (long long)n * d;
    p.v = (const u16*)v;
    p.lse = lse;
    p.heads = heads;
    p.kv_heads = kv_heads;
    p.n = n;
    p.n_mtiles = (n + BM - 1) / BM;
    p.causal = range_ptr ? 1 : (causal ? 1 : 0);
    p.scale_log2 = (float)(1.4426950408889634 / sqrt((double)d));
    p.range_ptr = range_ptr;
    p.ranges = ranges;
    p.col_ptr = col_ptr;
    p.cols = cols;
    const int tiles = heads * p.n_mtiles;
    if (grid <= 0) grid = g_sms;
    if (grid > tiles) grid = tiles;
    cudaStream_t s = (cudaStream_t)stream;
    if (range_ptr) {
        if (d == 128) return launch<128, 2, RangeProducer>(tq, tk, tv, to, tk64, tv64, p, grid, s);
        return launch<64, 2, RangeProducer>(tq, tk, tv, to, tk64, tv64, p, grid, s);
    }
    if (d == 128) return launch<128, 2, DenseProducer>(tq, tk, tv, to, tk64, tv64, p, grid, s);
    return launch<64, 2, DenseProducer>(tq, tk, tv, to, tk64, tv64, p, grid, s);
}
