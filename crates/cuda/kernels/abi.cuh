#pragma once
// What the host and the kernels must agree on, defined once. build.rs reads the `HEAD_*` values and
// MI_ATTN_PARAMS_BYTES from this file into Rust constants (kernels.rs), and both sides assert the
// size of the attention parameter block at build time.

// Per-head kind of an attention launch (the `head_kind` arrays; `kinds` bit masks are 1 << kind).
enum HeadKind : int { HEAD_DENSE = 0, HEAD_ASHAPE = 1, HEAD_INDEX = 2 };

// sizeof(AttnParams) in tiles.cuh = sizeof(kernels::AttnParams) in Rust.
#define MI_ATTN_PARAMS_BYTES 136
// K/V stages of the Hopper mainloop's ring (kernels/hopper/fa3_sm90.cuh; its shared memory size
// is computed from this on the host, src/hopper/mod.rs).
#define MI_HOPPER_STAGES 2
// Floats of one warp's partial sums in vs_scores (estimate.cu: 64 columns + 127 diagonals,
// padded); the host sizes that kernel's shared memory from it (src/estimate.rs).
#define MI_VS_RED_STRIDE 192
// bs_scores (estimate.cu): one CTA covers MI_BS_ROWS query blocks and MI_BS_SPAN key blocks; the
// host's grid is built from both (src/build_index.rs).
#define MI_BS_ROWS 128
#define MI_BS_SPAN 1024
