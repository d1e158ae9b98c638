//! What each `model_ops` kernel is launched with: the shape checks of its typed views and its
//! argument list, apart from the launch itself so that tests check both without a GPU. Every
//! address passed to a kernel comes from a view here; no caller adds byte offsets.

use crate::error::{EngineError, Result};
use crate::view::{DeviceSlice, DeviceView};
use minference_core::DType;

/// Keys per block of the decode attention (DECODE_CHUNK in the kernel).
pub const DECODE_CHUNK: usize = 256;

pub(crate) use minference_cuda::Arg;

/// One kernel launch: a 1-D grid of `grid` blocks of `block` threads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Launch {
    pub name: &'static str,
    pub grid: u32,
    pub block: u32,
    pub smem: u32,
    pub args: Vec<Arg>,
}

/// Blocks of 256 threads for a grid-stride kernel over `items`: one item per thread, at most
/// 65,536 blocks (the kernel loops over the rest), at least one.
pub(crate) fn grid_stride_blocks(items: usize) -> u32 {
    items.div_ceil(256).clamp(1, 65_536) as u32
}

fn check(kernel: &'static str, ok: bool, what: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(EngineError::Shape { kernel, message: what() })
    }
}

/// `v` has element type `dtype` and back-to-back rows (the kernel is given only a width).
fn packed(kernel: &'static str, name: &str, v: DeviceView, dtype: DType) -> Result<()> {
    check(kernel, v.dtype() == dtype, || format!("{name} is {:?}, the kernel reads {dtype:?}", v.dtype()))?;
    check(kernel, v.is_contiguous(), || format!("{name} is a column block ({v:?}); the kernel needs whole rows"))
}

/// Where `qkv_rope_scatter` writes: Q as `gs` heads of `q_rows` rows of D (row `q_row0 + t` for
/// token `t`), K and V as rows of D (row `kv_row0 + t`); `pos0 + t` is token `t`'s position.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RopeDst {
    pub q: DeviceView,
    pub k: DeviceView,
    pub v: DeviceView,
    pub q_row0: usize,
    pub kv_row0: usize,
    pub pos0: usize,
}

/// The K/V a decode step attends over: the prompt's rows and the decode tail, rows of D each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecodeKv {
    pub k_pre: DeviceView,
    pub v_pre: DeviceView,
    pub k_tail: DeviceView,
    pub v_tail: DeviceView,
}

/// The launches of `model_ops` for storage type `dtype` (bf16 or f16, the unit it was built for).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plans {
    pub dtype: DType,
}

impl Plans {
    /// Fills the whole of `out` with uniform values in [-scale, scale) from `seed`.
    pub fn init_uniform(self, out: DeviceView, seed: u64, scale: f32) -> Result<Launch> {
        const K: &str = "init_uniform";
        packed(K, "the output", out, self.dtype)?;
        let n = out.span();
        let args = vec![Arg::P(out.ptr()), Arg::L(n as i64), Arg::U(seed), Arg::F(scale)];
        Ok(Launch { name: K, grid: grid_stride_blocks(n), block: 256, smem: 0, args })
    }

    /// The embedding rows of `tokens` (`table`: `[vocab, hidden]`) into the f32 rows `out`.
    pub fn embed(self, tokens: DeviceSlice<i32>, table: DeviceView, out: DeviceView) -> Result<Launch> {
        const K: &str = "embed_rows";
        packed(K, "the table", table, self.dtype)?;
        packed(K, "the residual", out, DType::F32)?;
        check(K, table.width() == out.width(), || {
            format!("table rows of {} into rows of {}", table.width(), out.width())
        })?;
        check(K, out.rows_len() == tokens.len(), || format!("{} tokens into {} rows", tokens.len(), out.rows_len()))?;
        let args = vec![Arg::P(tokens.ptr()), Arg::P(table.ptr()), Arg::P(out.ptr()), Arg::I(out.width() as i32)];
        Ok(Launch { name: K, grid: tokens.len() as u32, block: 256, smem: 0, args })
    }

    /// `x += p` elementwise: f32 residual rows `x`, 16-bit update rows `p` of the same shape.
    pub fn add_to_residual(self, x: DeviceView, p: DeviceView) -> Result<Launch> {
        const K: &str = "add_update_to_residual";
        packed(K, "the residual", x, DType::F32)?;
        packed(K, "the update", p, self.dtype)?;
        let same = (x.rows_len(), x.width()) == (p.rows_len(), p.width());
        check(K, same, || format!("residual {x:?} and update {p:?} differ in shape"))?;
        let n = x.span();
        Ok(Launch {
            name: K,
            grid: grid_stride_blocks(n),
            block: 256,
            smem: 0,
            args: vec![Arg::P(x.ptr()), Arg::P(p.ptr()), Arg::L(n as i64)],
        })
    }

    /// RMSNorm with weight `w` of each f32 row of `x` into the 16-bit rows `out`.
    pub fn rms_norm(self, x: DeviceView, w: DeviceSlice<f32>, out: DeviceView, eps: f32) -> Result<Launch> {
        const K: &str = "rms_norm_rows";
        packed(K, "the input", x, DType::F32)?;
        packed(K, "the output", out, self.dtype)?;
        let same = (x.rows_len(), x.width()) == (out.rows_len(), out.width());
        check(K, same, || format!("input {x:?} and output {out:?} differ in shape"))?;
        check(K, w.len() == x.width(), || format!("a weight of {} for rows of {}", w.len(), x.width()))?;
        let args = vec![Arg::P(x.ptr()), Arg::P(w.ptr()), Arg::P(out.ptr()), Arg::I(x.width() as i32), Arg::F(eps)];
        Ok(Launch { name: K, grid: x.rows_len() as u32, block: 256, smem: 0, args })
    }

    /// RMSNorm of the one f32 row `x` into f32 `out` (the LM head's input).
    pub fn rms_norm_f32out(
        self,
        x: DeviceView,
        w: DeviceSlice<f32>,
        out: DeviceSlice<f32>,
        eps: f32,
    ) -> Result<Launch> {
        const K: &str = "rms_norm_f32out";
        packed(K, "the input", x, DType::F32)?;
        let h = x.width();
        check(K, x.rows_len() == 1, || format!("one row, not {}", x.rows_len()))?;
        check(K, w.len() == h && out.len() >= h, || {
            format!("weight {} and output {} for a row of {h}", w.len(), out.len())
        })?;
        let args = vec![Arg::P(x.ptr()), Arg::P(w.ptr()), Arg::P(out.ptr()), Arg::I(h as i32), Arg::F(eps)];
        Ok(Launch { name: K, grid: 1, block: 256, smem: 0, args })
    }

    /// Bias, RoPE and scatter of one KV-head group's fused projection rows `qkv` (a row per token,
    /// `gs` Q heads then K then V, D each; `bias`: one f32 row of the same slots).
    pub fn qkv_rope_scatter(
        self,
        qkv: DeviceView,
        bias: Option<DeviceView>,
        inv_freq: DeviceSlice<f64>,
        dst: RopeDst,
        gs: usize,
    ) -> Result<Launch> {
        const K: &str = "qkv_rope_scatter";
        let (d, tokens) = (dst.k.row_stride(), qkv.rows_len());
        let slot = (gs + 2) * d;
        check(K, qkv.dtype() == self.dtype, || format!("the projection is {:?}", qkv.dtype()))?;
        check(K, d.is_multiple_of(2) && d <= 2048, || format!("head dim {d}: one thread per pair, at most 1024"))?;
        check(K, qkv.width() >= slot, || format!("rows of {} hold no group of {gs} + 2 slots of {d}", qkv.width()))?;
        check(K, inv_freq.len() >= d / 2, || format!("{} RoPE frequencies for head dim {d}", inv_freq.len()))?;
        if let Some(b) = bias {
            check(K, b.dtype() == DType::F32 && b.width() >= slot, || format!("bias {b:?} for {slot} slots"))?;
        }
        packed(K, "Q", dst.q, self.dtype)?;
        check(K, dst.q.rows_len() == gs && dst.q.row_stride().is_multiple_of(d), || {
            format!("Q {:?}: {gs} heads of D {d}", dst.q)
        })?;
        let q_rows = dst.q.row_stride() / d;
        check(K, dst.q_row0 + tokens <= q_rows, || format!("Q rows {}.. of {tokens} past {q_rows}", dst.q_row0))?;
        for (name, t) in [("K", dst.k), ("V", dst.v)] {
            packed(K, name, t, self.dtype)?;
            check(K, t.row_stride() == d, || format!("{name} rows of {} for head dim {d}", t.row_stride()))?;
            let end = dst.kv_row0 + tokens;
            check(K, end <= t.rows_len(), || format!("{name} rows {}..{end} of {}", dst.kv_row0, t.rows_len()))?;
        }
        let args = vec![
            Arg::P(qkv.ptr()),
            Arg::P(bias.map_or(0, DeviceView::ptr)),
            Arg::P(inv_freq.ptr()),
            Arg::P(dst.q.ptr()),
            Arg::P(dst.k.ptr()),
            Arg::P(dst.v.ptr()),
            Arg::I(gs as i32),
            Arg::I(d as i32),
            Arg::L(q_rows as i64),
            Arg::L(dst.q_row0 as i64),
            Arg::L(dst.kv_row0 as i64),
            Arg::L(dst.pos0 as i64),
            Arg::I(qkv.row_stride() as i32),
        ];
        Ok(Launch { name: K, grid: tokens as u32, block: (d / 2) as u32, smem: 0, args })
    }

    /// SwiGLU of rows `gate_up` (gate then up, `2 * inter` each) into rows `out` of `inter`.
    pub fn swiglu(self, gate_up: DeviceView, out: DeviceView) -> Result<Launch> {
        const K: &str = "swiglu";
        packed(K, "gate/up", gate_up, self.dtype)?;
        packed(K, "the output", out, self.dtype)?;
        let (rows, inter) = (out.rows_len(), out.width());
        let same = gate_up.rows_len() == rows && gate_up.width() == 2 * inter;
        check(K, same, || format!("gate/up {gate_up:?} for output {out:?}"))?;
        Ok(Launch {
            name: K,
            grid: grid_stride_blocks(rows * inter),
            block: 256,
            smem: 0,
            args: vec![Arg::P(gate_up.ptr()), Arg::P(out.ptr()), Arg::L(rows as i64), Arg::I(inter as i32)],
        })
    }

    /// Head-major `src` (`gs` heads of `[n, D]`) into token rows `dst` (`n` rows, `gs * D` columns
    /// of a row of any stride), 16 bytes per thread.
    pub fn heads_to_rows(self, src: DeviceView, dst: DeviceView, head_dim: usize) -> Result<Launch> {
        const K: &str = "heads_to_rows";
        packed(K, "the heads", src, self.dtype)?;
        check(K, dst.dtype() == self.dtype, || format!("the rows are {:?}", dst.dtype()))?;
        let (gs, n) = (src.rows_len(), dst.rows_len());
        check(K, src.row_stride() == n * head_dim, || {
            format!("heads of {} for {n} rows of D {head_dim}", src.row_stride())
        })?;
        check(K, dst.width() >= gs * head_dim, || format!("{gs} heads of {head_dim} into {} columns", dst.width()))?;
        // uint4 accesses: whole 16-byte vectors, 16-byte aligned.
        let aligned = head_dim.is_multiple_of(8)
            && dst.row_stride().is_multiple_of(8)
            && (src.ptr() | dst.ptr()).is_multiple_of(16);
        check(K, aligned, || {
            format!("head dim {head_dim}, stride {} or addresses not 16-byte vectors", dst.row_stride())
        })?;
        let args = vec![
            Arg::P(src.ptr()),
            Arg::P(dst.ptr()),
            Arg::L(n as i64),
            Arg::I(gs as i32),
            Arg::I(head_dim as i32),
            Arg::I(dst.row_stride() as i32),
        ];
        Ok(Launch { name: K, grid: grid_stride_blocks(n * gs * head_dim / 8), block: 256, smem: 0, args })
    }

    /// `out = w x`: one warp per row of `w` (`[rows, cols]`), f32 `x` and `out`.
    pub fn gemv_rows(self, w: DeviceView, x: DeviceSlice<f32>, out: DeviceSlice<f32>) -> Result<Launch> {
        const K: &str = "gemv_rows_f32";
        packed(K, "the matrix", w, self.dtype)?;
        let (rows, cols) = (w.rows_len(), w.width());
        check(K, x.len() >= cols && out.len() >= rows, || {
            format!("x {} and out {} for {rows} x {cols}", x.len(), out.len())
        })?;
        let args = vec![Arg::P(w.ptr()), Arg::P(x.ptr()), Arg::P(out.ptr()), Arg::I(rows as i32), Arg::I(cols as i32)];
        Ok(Launch { name: K, grid: (rows * 32).div_ceil(256) as u32, block: 256, smem: 0, args })
    }

    /// Dense decode attention of one KV-head group's query `q` (`gs` rows of D) over the first
    /// `n_keys` keys of `kv` (the prompt's, then the tail's) into `out` (one row of `gs * D`): a
    /// split-K partial pass into `part`, then the combine.
    pub fn decode_attention(
        self,
        q: DeviceView,
        kv: DecodeKv,
        n_keys: usize,
        part: DeviceSlice<f32>,
        out: DeviceView,
    ) -> Result<[Launch; 2]> {
        const K: &str = "decode_attn_partial";
        let (gs, d) = (q.rows_len(), q.width());
        packed(K, "Q", q, self.dtype)?;
        check(K, out.dtype() == self.dtype && out.rows_len() == 1 && out.width() == gs * d, || {
            format!("output {out:?} for {gs} heads of {d}")
        })?;
        let n_pre = kv.k_pre.rows_len();
        for (name, t) in [("K", kv.k_pre), ("V", kv.v_pre), ("K tail", kv.k_tail), ("V tail", kv.v_tail)] {
            packed(K, name, t, self.dtype)?;
            check(K, t.width() == d, || format!("{name} rows of {} for head dim {d}", t.width()))?;
        }
        check(K, kv.v_pre.rows_len() == n_pre, || format!("{n_pre} prompt keys, {} values", kv.v_pre.rows_len()))?;
        let tail = kv.k_tail.rows_len().min(kv.v_tail.rows_len());
        check(K, n_keys <= n_pre + tail, || format!("{n_keys} keys over {n_pre} + {tail} rows"))?;
        let splits = n_keys.div_ceil(DECODE_CHUNK);
        check(K, part.len() >= splits * gs * (d + 2), || format!("{} partial floats for {splits} splits", part.len()))?;
        // Three f32 arrays back to back: maxima and sums `[splits * gs]`, accumulators
        // `[splits * gs, head_dim]`; as rows of `splits * gs` they start at rows 0, 1 and 2.
        let partials = DeviceView::new(part.ptr(), DType::F32, d + 2, (splits * gs).max(1));
        let (part_m, part_l, part_acc) = (partials.row_ptr(0), partials.row_ptr(1), partials.row_ptr(2));
        let scale = 1.0 / (d as f32).sqrt();
        let partial = Launch {
            name: K,
            grid: splits as u32,
            block: DECODE_CHUNK as u32,
            smem: (4 * gs * (d + DECODE_CHUNK)) as u32,
            args: vec![
                Arg::P(q.ptr()),
                Arg::P(kv.k_pre.ptr()),
                Arg::P(kv.v_pre.ptr()),
                Arg::P(kv.k_tail.ptr()),
                Arg::P(kv.v_tail.ptr()),
                Arg::I(n_pre as i32),
                Arg::I(n_keys as i32),
                Arg::I(gs as i32),
                Arg::I(d as i32),
                Arg::F(scale),
                Arg::P(part_m),
                Arg::P(part_l),
                Arg::P(part_acc),
            ],
        };
        let combine = Launch {
            name: "decode_attn_combine",
            grid: gs as u32,
            block: d as u32,
            smem: 0,
            args: vec![
                Arg::P(part_m),
                Arg::P(part_l),
                Arg::P(part_acc),
                Arg::I(splits as i32),
                Arg::I(gs as i32),
                Arg::I(d as i32),
                Arg::P(out.ptr()),
            ],
        };
        Ok([partial, combine])
    }
}

#[cfg(test)]
#[path = "kernel_args_tests.rs"]
mod tests;
