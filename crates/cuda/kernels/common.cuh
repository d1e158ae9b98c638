// Shared device helpers: element types, mma.sync / ldmatrix / cp.async wrappers, swizzled tiles.
// No system headers: the same text must compile under nvcc and NVRTC.
#pragma once

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define MI_TILE 64
#define MI_NEG_INF (__int_as_float(0xff800000))
#define MI_POS_INF (__int_as_float(0x7f800000))

struct Bf16 {};
struct F16 {};

template <typename T> struct Elem;

template <> struct Elem<Bf16> {
    static __device__ __forceinline__ float to_f32(u16 b) { return __uint_as_float(((u32)b) << 16); }
    static __device__ __forceinline__ u32 pack2(float lo, float hi) {
        u32 r;
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
    static __device__ __forceinline__ u16 from_f32(float x) { return (u16)(pack2(x, 0.f) & 0xffffu); }
    static __device__ __forceinline__ void mma(float* c, const u32* a, u32 b0, u32 b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

template <> struct Elem<F16> {
    static __device__ __forceinline__ float to_f32(u16 b) {
        float r;
        asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"(b));
        return r;
    }
    static __device__ __forceinline__ u32 pack2(float lo, float hi) {
        u32 r;
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
    static __device__ __forceinline__ u16 from_f32(float x) { return (u16)(pack2(x, 0.f) & 0xffffu); }
    static __device__ __forceinline__ void mma(float* c, const u32* a, u32 b0, u32 b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

__device__ __forceinline__ u32 smem_addr(const void* p) {
    u64 a;
    asm("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p));
    return (u32)a;
}

__device__ __forceinline__ void ldmatrix_x4(u32* r, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(u32* r, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// 16-byte async copy; `valid == false` writes zeros (src-size 0) so masked rows never hold stale data.
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, bool valid) {
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait_pending() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

__device__ __forceinline__ float fast_exp2(float x) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

// Element offset of (row, col) in a [ROWS][D] 16-bit tile. When D is a multiple of 64 the tile is
// stored as D/64 sub-tiles of [ROWS][64] (128-byte rows) whose 16-byte chunks are XOR-swizzled by
// row & 7: that is the canonical 128-byte-swizzle layout wgmma descriptors read, and ldmatrix reads
// of 8 consecutive rows hit 8 different bank groups. D = 96 keeps [ROWS][96] rows and swizzles only
// the low 2 chunk bits (stays inside the row).
template <int D, int ROWS = 64>
__device__ __forceinline__ int swz(int row, int col) {
    if constexpr (D % 64 == 0) {
        return (col >> 6) * (ROWS * 64) + row * 64 + ((((col & 63) >> 3) ^ (row & 7)) << 3) + (col & 7);
    } else {
        return row * D + ((((col >> 3) ^ (row & 3))) << 3) + (col & 7);
    }
}

// Order-preserving map of a float to u32 (larger float -> larger integer).
__device__ __forceinline__ u32 float_order_key(float f) {
    u32 b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Sort key for top-k: higher score first, then smaller index (core's tie-break).
__device__ __forceinline__ u64 topk_key(float score, u32 index) {
    return (((u64)float_order_key(score)) << 32) | (u64)(0xffffffffu - index);
}
