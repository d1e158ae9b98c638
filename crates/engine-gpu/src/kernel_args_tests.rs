//! Each plan launches its kernel with the argument list the wrappers passed before they took views
//! (the addresses and counts below are the old hand-written formulas), and refuses views that do
//! not fit the kernel.

use super::*;
use crate::error::EngineError;

const BF: DType = DType::Bf16;
const P: Plans = Plans { dtype: BF };

fn view(ptr: u64, dtype: DType, rows: usize, stride: usize) -> DeviceView {
    DeviceView::new(ptr, dtype, rows, stride)
}

fn shape_error<T: std::fmt::Debug>(r: Result<T>) -> &'static str {
    match r {
        Err(EngineError::Shape { kernel, .. }) => kernel,
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn grid_stride_blocks_cover_every_item_up_to_the_block_cap() {
    assert_eq!(grid_stride_blocks(0), 1);
    assert_eq!(grid_stride_blocks(256), 1);
    assert_eq!(grid_stride_blocks(257), 2);
    assert_eq!(grid_stride_blocks(256 * 65_536), 65_536);
    assert_eq!(grid_stride_blocks(usize::MAX / 2), 65_536);
}

#[test]
fn row_kernels_pass_the_old_addresses_and_counts() {
    let (h, inter, chunk, n, c0, c) = (576usize, 1536usize, 512usize, 2000usize, 1024usize, 300usize);
    let (x0, normed0, gu0, act0) = (1u64 << 32, 2u64 << 32, 3u64 << 32, 4u64 << 32);
    let x = view(x0, DType::F32, n, h);
    let normed = view(normed0, BF, chunk, h);
    let w = DeviceSlice::<f32>::new(5 << 32, h);

    let l = P.rms_norm(x.rows(c0, c), w, normed.rows(0, c), 1e-5).unwrap_or_else(|e| panic!("{e}"));
    let old_x = x0 + (c0 * h * 4) as u64;
    let args = vec![Arg::P(old_x), Arg::P(5 << 32), Arg::P(normed0), Arg::I(h as i32), Arg::F(1e-5)];
    assert_eq!(l, Launch { name: "rms_norm_rows", grid: c as u32, block: 256, smem: 0, args });

    let l = P.add_to_residual(x.rows(c0, c), normed.rows(0, c)).unwrap_or_else(|e| panic!("{e}"));
    let args = vec![Arg::P(old_x), Arg::P(normed0), Arg::L((c * h) as i64)];
    assert_eq!(
        l,
        Launch { name: "add_update_to_residual", grid: grid_stride_blocks(c * h), block: 256, smem: 0, args }
    );

    let (gu, act) = (view(gu0, BF, chunk, 2 * inter), view(act0, BF, chunk, inter));
    let l = P.swiglu(gu.rows(0, c), act.rows(0, c)).unwrap_or_else(|e| panic!("{e}"));
    let args = vec![Arg::P(gu0), Arg::P(act0), Arg::L(c as i64), Arg::I(inter as i32)];
    assert_eq!(l, Launch { name: "swiglu", grid: grid_stride_blocks(c * inter), block: 256, smem: 0, args });

    let tokens = DeviceSlice::<i32>::new(6 << 32, n);
    let l = P.embed(tokens, view(7 << 32, BF, 49152, h), x).unwrap_or_else(|e| panic!("{e}"));
    let args = vec![Arg::P(6 << 32), Arg::P(7 << 32), Arg::P(x0), Arg::I(h as i32)];
    assert_eq!(l, Launch { name: "embed_rows", grid: n as u32, block: 256, smem: 0, args });

    let out = view(8 << 32, BF, 4, 4096);
    let l = P.init_uniform(out, 9, 0.5).unwrap_or_else(|e| panic!("{e}"));
    let args = vec![Arg::P(8 << 32), Arg::L(4 * 4096), Arg::U(9), Arg::F(0.5)];
    assert_eq!(l, Launch { name: "init_uniform", grid: grid_stride_blocks(4 * 4096), block: 256, smem: 0, args });
}

#[test]
fn lm_head_kernels_pass_the_old_arguments() {
    let (h, vocab, n) = (576usize, 49152usize, 10usize);
    let x = view(1 << 32, DType::F32, n, h);
    let (w, nf, logits) =
        (DeviceSlice::<f32>::new(2 << 32, h), DeviceSlice::new(3 << 32, h), DeviceSlice::new(4 << 32, vocab));
    let l = P.rms_norm_f32out(x.rows(n - 1, 1), w, nf, 1e-5).unwrap_or_else(|e| panic!("{e}"));
    let last = (1u64 << 32) + ((n - 1) * h * 4) as u64;
    let args = vec![Arg::P(last), Arg::P(2 << 32), Arg::P(3 << 32), Arg::I(h as i32), Arg::F(1e-5)];
    assert_eq!(l, Launch { name: "rms_norm_f32out", grid: 1, block: 256, smem: 0, args });
    let l = P.gemv_rows(view(5 << 32, BF, vocab, h), nf, logits).unwrap_or_else(|e| panic!("{e}"));
    let args = vec![Arg::P(5 << 32), Arg::P(3 << 32), Arg::P(4 << 32), Arg::I(vocab as i32), Arg::I(h as i32)];
    assert_eq!(l, Launch { name: "gemv_rows_f32", grid: (vocab * 32).div_ceil(256) as u32, block: 256, smem: 0, args });
}

#[test]
fn qkv_scatter_of_a_prefill_chunk_and_of_a_decode_row() {
    // Two KV groups per pass of 3 query heads, D = 64: the second group of a chunk at c0.
    let (gs, d, n, c0, c, j) = (3usize, 64usize, 1000usize, 512usize, 100usize, 1usize);
    let slot = (gs + 2) * d;
    let qkv0 = 1u64 << 32;
    let qkv = view(qkv0, BF, 512, 2 * slot);
    let q_groups = view(2 << 32, BF, 2, gs * n * d);
    let (k, v) = (view(3 << 32, BF, n, d), view(4 << 32, BF, n, d));
    let bias = view(5 << 32, DType::F32, 4, slot);
    let inv = DeviceSlice::<f64>::new(6 << 32, d / 2);
    let dst = RopeDst { q: q_groups.rows(j, 1).as_rows_of(n * d), k, v, q_row0: c0, kv_row0: c0, pos0: c0 };
    let src = qkv.rows(0, c).cols_from(j * slot);
    let l = P.qkv_rope_scatter(src, Some(bias.rows(3, 1)), inv, dst, gs).unwrap_or_else(|e| panic!("{e}"));
    let old = |q: u64, b: u64, k: u64, v: u64, q_rows: usize, rows: (usize, usize, usize)| {
        vec![
            Arg::P(qkv0 + (j * slot * 2) as u64),
            Arg::P(b),
            Arg::P(6 << 32),
            Arg::P(q),
            Arg::P(k),
            Arg::P(v),
            Arg::I(gs as i32),
            Arg::I(d as i32),
            Arg::L(q_rows as i64),
            Arg::L(rows.0 as i64),
            Arg::L(rows.1 as i64),
            Arg::L(rows.2 as i64),
            Arg::I((2 * slot) as i32),
        ]
    };
    let q_old = (2u64 << 32) + (j * gs * n * d * 2) as u64;
    let bias_old = (5u64 << 32) + (3 * slot * 4) as u64;
    let args = old(q_old, bias_old, 3 << 32, 4 << 32, n, (c0, c0, c0));
    assert_eq!(l, Launch { name: "qkv_rope_scatter", grid: c as u32, block: (d / 2) as u32, smem: 0, args });

    // Decode: one token at position 1010 (tail row 10), no bias, Q = gs rows of D.
    let (tk, tv) = (view(7 << 32, BF, 256, d), view(8 << 32, BF, 256, d));
    let dst = RopeDst { q: view(9 << 32, BF, gs, d), k: tk, v: tv, q_row0: 0, kv_row0: 10, pos0: 1010 };
    let l =
        P.qkv_rope_scatter(qkv.rows(0, 1).cols_from(j * slot), None, inv, dst, gs).unwrap_or_else(|e| panic!("{e}"));
    let args = old(9 << 32, 0, 7 << 32, 8 << 32, 1, (0, 10, 1010));
    assert_eq!(l, Launch { name: "qkv_rope_scatter", grid: 1, block: (d / 2) as u32, smem: 0, args });

    // A chunk past the end of the cache, or a group of the wrong width, is refused.
    let late = RopeDst { kv_row0: n - c + 1, ..dst };
    assert_eq!(
        shape_error(P.qkv_rope_scatter(qkv.rows(0, c).cols_from(j * slot), None, inv, late, gs)),
        "qkv_rope_scatter"
    );
    let narrow = qkv.rows(0, 1).cols_from(2 * slot - d);
    assert_eq!(shape_error(P.qkv_rope_scatter(narrow, None, inv, dst, gs)), "qkv_rope_scatter");
}

#[test]
fn heads_to_rows_writes_a_column_block_of_the_output_rows() {
    let (heads, d, n, first) = (9usize, 64usize, 700usize, 3usize);
    let q_dim = heads * d;
    let src = view(1 << 32, BF, 3, n * d);
    let o_rows = view(2 << 32, BF, n, q_dim);
    let l = P.heads_to_rows(src, o_rows.cols_from(first * d), d).unwrap_or_else(|e| panic!("{e}"));
    let dst_old = (2u64 << 32) + (first * d * 2) as u64;
    let args =
        vec![Arg::P(1 << 32), Arg::P(dst_old), Arg::L(n as i64), Arg::I(3), Arg::I(d as i32), Arg::I(q_dim as i32)];
    assert_eq!(l, Launch { name: "heads_to_rows", grid: grid_stride_blocks(n * 3 * d / 8), block: 256, smem: 0, args });
    // The last three heads' columns hold only one group of three heads, not two.
    let six = view(1 << 32, BF, 6, n * d);
    assert_eq!(shape_error(P.heads_to_rows(six, o_rows.cols_from(6 * d), d)), "heads_to_rows");
}

#[test]
fn decode_attention_splits_the_partials_and_checks_the_keys() {
    let (gs, d, n_pre, tail, pos) = (3usize, 64usize, 1000usize, 256usize, 1100usize);
    let kv = DecodeKv {
        k_pre: view(1 << 32, BF, n_pre, d),
        v_pre: view(2 << 32, BF, n_pre, d),
        k_tail: view(3 << 32, BF, tail, d),
        v_tail: view(4 << 32, BF, tail, d),
    };
    let (q, part0) = (view(5 << 32, BF, gs, d), 6u64 << 32);
    let part = DeviceSlice::<f32>::new(part0, 8 * gs * (d + 2));
    let out = view(7 << 32, BF, 3, gs * d).rows(2, 1);
    let [p, c] = P.decode_attention(q, kv, pos + 1, part, out).unwrap_or_else(|e| panic!("{e}"));
    let splits = (pos + 1).div_ceil(DECODE_CHUNK);
    let (m, l, acc) = (part0, part0 + (splits * gs * 4) as u64, part0 + (2 * splits * gs * 4) as u64);
    let scale = 1.0 / (d as f32).sqrt();
    let partial = vec![
        Arg::P(5 << 32),
        Arg::P(1 << 32),
        Arg::P(2 << 32),
        Arg::P(3 << 32),
        Arg::P(4 << 32),
        Arg::I(n_pre as i32),
        Arg::I((pos + 1) as i32),
        Arg::I(gs as i32),
        Arg::I(d as i32),
        Arg::F(scale),
        Arg::P(m),
        Arg::P(l),
        Arg::P(acc),
    ];
    let smem = (4 * gs * (d + DECODE_CHUNK)) as u32;
    assert_eq!(
        p,
        Launch { name: "decode_attn_partial", grid: splits as u32, block: DECODE_CHUNK as u32, smem, args: partial }
    );
    let out_old = (7u64 << 32) + (2 * gs * d * 2) as u64;
    let combine = vec![
        Arg::P(m),
        Arg::P(l),
        Arg::P(acc),
        Arg::I(splits as i32),
        Arg::I(gs as i32),
        Arg::I(d as i32),
        Arg::P(out_old),
    ];
    assert_eq!(c, Launch { name: "decode_attn_combine", grid: gs as u32, block: d as u32, smem: 0, args: combine });
    // More keys than the prompt and the tail hold, or too few partial floats, are refused.
    assert_eq!(shape_error(P.decode_attention(q, kv, n_pre + tail + 1, part, out)), "decode_attn_partial");
    let short = DeviceSlice::<f32>::new(part0, splits * gs * (d + 2) - 1);
    assert_eq!(shape_error(P.decode_attention(q, kv, pos + 1, short, out)), "decode_attn_partial");
}

#[test]
fn mismatched_dtypes_and_shapes_are_refused_before_launch() {
    let x = view(0, DType::F32, 4, 8);
    let w = DeviceSlice::<f32>::new(0, 8);
    // f16 rows into a bf16 unit, a residual that is not f32, rows of another width.
    assert_eq!(shape_error(P.rms_norm(x, w, view(0, DType::F16, 4, 8), 1e-5)), "rms_norm_rows");
    assert_eq!(shape_error(P.add_to_residual(view(0, BF, 4, 8), view(0, BF, 4, 8))), "add_update_to_residual");
    assert_eq!(shape_error(P.rms_norm(x, w, view(0, BF, 4, 16), 1e-5)), "rms_norm_rows");
    // A column block where the kernel assumes whole rows.
    assert_eq!(shape_error(P.swiglu(view(0, BF, 4, 32).cols_from(16), view(0, BF, 4, 8))), "swiglu");
    assert_eq!(shape_error(P.embed(DeviceSlice::new(0, 3), view(0, BF, 10, 8), x)), "embed_rows");
}
