// The wgmma shared-memory matrix descriptor of a 128-byte-swizzled operand, shared by the wgmma
// kernels (wgmma.cuh) and the Hopper mainloop (hopper/ptx.cuh). Device code only.
#pragma once

// Operand at shared address `addr` (its 8-row group starts on a 1024-byte boundary); leading and
// stride byte offsets `lbo` / `sbo`; 128B swizzle (bit 62).
__device__ __forceinline__ unsigned long long sw128_desc(unsigned addr, unsigned lbo, unsigned sbo) {
    unsigned long long d = (unsigned long long)((addr >> 4) & 0x3FFF);
    d |= (unsigned long long)((lbo >> 4) & 0x3FFF) << 16;
    d |= (unsigned long long)((sbo >> 4) & 0x3FFF) << 32;
    d |= 1ull << 62;
    return d;
}
