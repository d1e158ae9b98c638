//! The peer export of `minference bench attention --peers`: exactly the Q/K/V each length was
//! measured on, the per-head patterns, our vertical/slash selections, our sparse index (CSR) and
//! sample rows of our output, so that `bench/peers_attention.py` can run the peers (PyTorch SDPA,
//! MInference 0.1.6.0, FlexAttention) on the same tensors and the same index in the same call.
//!
//! # File format (`minference-peer-export/1`)
//!
//! A directory holding `manifest.json` and raw little-endian binary files named in it:
//!
//! * `manifest.json`: `{"format", "card", "heads", "kv_heads", "head_dim", "dtype": "bf16",
//!   "entries": [...]}`; one entry per (length, regime) with `n`, `regime`, the file names `q`
//!   (bf16 `[heads, n, head_dim]`), `k` and `v` (bf16 `[kv_heads, n, head_dim]`), `sample_rows`
//!   (the query rows whose outputs are exported and compared, ascending), `dense` (our dense
//!   kernel's ms, or null) and `sets`.
//! * each set: `set` (name), `patterns` (per head `{"kind": "vs", "k_v", "k_s"}`, `{"kind": "bs",
//!   "k_b"}`, `{"kind": "ashape", "n_init", "n_local"}` or `{"kind": "dense"}`), `vs` (an int32 file:
//!   every VS head's verticals, ascending key positions, then its slashes, descending distances
//!   `d = query - key`; null when no head is VS) with `vs_offsets` (per head `[v_off, v_len, s_off,
//!   s_len]` in elements, or null for a non-VS head), `csr` (null, or the files `tile_ptr` u32
//!   `[heads * row_blocks + 1]`, `tile_start` i32, `col_ptr` u32, `col_index` i32: slot
//!   `h * row_blocks + m`; tile `t` covers keys `tile_start[t] .. + 64` (not necessarily
//!   64-aligned), columns are gathered keys, see `minference_core::SparseIndex`), `out_rows` (bf16
//!   `[heads, sample_rows, head_dim]`: our output at the sample rows) and `ours` (median ms of
//!   estimate / index / attention, total, kernel density, effective TF/s).
//!
//! Q/K/V and outputs are the bf16 bit patterns exactly as on the device.

use minference_core::{AttnShape, HeadPattern};
use minference_cuda::tensor::elem_bytes;
use minference_cuda::{estimate_vs, CudaError, DeviceIndex, DeviceTensor, Gpu, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Query rows sampled for the output comparison.
pub const SAMPLE_ROWS: usize = 512;

/// What a run exports, collected as it goes; [`PeerExport::finish`] writes the manifest.
pub struct PeerExport {
    dir: PathBuf,
    card: String,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    entries: Vec<String>,
    current: Option<Entry>,
}

struct Entry {
    tag: String,
    head: String,
    dense: Option<f32>,
    sets: Vec<String>,
}

fn io_err(path: &Path, e: std::io::Error) -> CudaError {
    CudaError::Invalid(format!("peer export {}: {e}", path.display()))
}

fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| io_err(&path, e))
}

fn le_bytes32<T: Copy>(xs: &[T], f: impl Fn(T) -> [u8; 4]) -> Vec<u8> {
    xs.iter().flat_map(|&x| f(x)).collect()
}

/// `SAMPLE_ROWS` rows spread evenly over `0..n`, first and last included.
pub fn sample_rows(n: usize) -> Vec<usize> {
    let s = SAMPLE_ROWS.min(n);
    let mut rows: Vec<usize> = (0..s).map(|i| if s == 1 { 0 } else { i * (n - 1) / (s - 1) }).collect();
    rows.dedup();
    rows
}

fn pattern_json(p: &HeadPattern) -> String {
    match *p {
        HeadPattern::VerticalSlash { k_v, k_s } => format!("{{\"kind\":\"vs\",\"k_v\":{k_v},\"k_s\":{k_s}}}"),
        HeadPattern::BlockSparse { k_b } => format!("{{\"kind\":\"bs\",\"k_b\":{k_b}}}"),
        HeadPattern::AShape { n_init, n_local } => {
            format!("{{\"kind\":\"ashape\",\"n_init\":{n_init},\"n_local\":{n_local}}}")
        }
        _ => "{\"kind\":\"dense\"}".to_string(),
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

/// Our figures of one set, as the manifest records them.
pub struct OursFigures {
    pub estimate_ms: f32,
    pub index_ms: f32,
    pub attention_ms: f32,
    pub density: f64,
    pub effective_tflops: f64,
}

impl PeerExport {
    pub fn new(dir: &Path, gpu: &Gpu, shape: &AttnShape) -> Result<PeerExport> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        Ok(PeerExport {
            dir: dir.to_path_buf(),
            card: gpu.name().to_string(),
            heads: shape.heads,
            kv_heads: shape.kv_heads,
            head_dim: shape.head_dim,
            entries: Vec::new(),
            current: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the entry of one (length, regime): writes Q/K/V exactly as on the device.
    pub fn begin(&mut self, gpu: &Gpu, shape: &AttnShape, regime: &str, [q, k, v]: [&DeviceTensor; 3]) -> Result<()> {
        self.close_entry();
        let n = shape.seqs[0].q_len;
        let mut files = Vec::new();
        for (name, t) in [("q", q), ("k", k), ("v", v)] {
            let file = format!("n{n}_{regime}_{name}.bin");
            let mut bytes = vec![0u8; t.len * elem_bytes(t.dtype)];
            t.read_bytes(gpu, 0, &mut bytes)?;
            gpu.sync()?;
            write_bytes(&self.dir, &file, &bytes)?;
            files.push(file);
        }
        let rows = sample_rows(n);
        let rows_json: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
        let head = format!(
            "{{\"n\":{n},\"regime\":{},\"q\":{},\"k\":{},\"v\":{},\"sample_rows\":[{}]",
            json_str(regime),
            json_str(&files[0]),
            json_str(&files[1]),
            json_str(&files[2]),
            rows_json.join(",")
        );
        self.current = Some(Entry { tag: format!("n{n}_{regime}"), head, dense: None, sets: Vec::new() });
        Ok(())
    }

    pub fn dense_ms(&mut self, ms: f32) {
        if let Some(e) = self.current.as_mut() {
            e.dense = Some(ms);
        }
    }

    /// Records one set: our VS selection (re-estimated: deterministic, the same as the timed
    /// run's), our index, the sample rows of our output and our figures.
    #[allow(clippy::too_many_arguments)]
    pub fn set(
        &mut self,
        gpu: &Gpu,
        shape: &AttnShape,
        set: &str,
        [q, k]: [&DeviceTensor; 2],
        patterns: &[HeadPattern],
        index: Option<&DeviceIndex>,
        out: &DeviceTensor,
        ours: &OursFigures,
    ) -> Result<()> {
        let n = shape.seqs[0].q_len;
        let Some(entry) = self.current.as_mut() else {
            return Err(CudaError::Invalid("peer export: set() before begin()".into()));
        };
        let regime_tag = format!("{}_{}", entry.tag, sanitize(set));
        let pats: Vec<String> = patterns.iter().map(pattern_json).collect();
        let mut json = format!("{{\"set\":{},\"patterns\":[{}]", json_str(set), pats.join(","));

        // VS selections.
        if patterns.iter().any(|p| matches!(p, HeadPattern::VerticalSlash { .. })) {
            let sel = estimate_vs(gpu, shape, q, k, patterns)?.download(gpu, shape)?;
            let mut flat: Vec<i32> = Vec::new();
            let mut offs = Vec::new();
            for (h, p) in patterns.iter().enumerate() {
                if !matches!(p, HeadPattern::VerticalSlash { .. }) {
                    offs.push("null".to_string());
                    continue;
                }
                let s = &sel[h];
                let v_off = flat.len();
                flat.extend(s.verticals.iter().map(|&x| x as i32));
                let s_off = flat.len();
                flat.extend(s.slashes.iter().map(|&x| x as i32));
                offs.push(format!("[{v_off},{},{s_off},{}]", s.verticals.len(), s.slashes.len()));
            }
            let file = format!("{regime_tag}_vs.bin");
            write_bytes(&self.dir, &file, &le_bytes32(&flat, i32::to_le_bytes))?;
            let _ = write!(json, ",\"vs\":{},\"vs_offsets\":[{}]", json_str(&file), offs.join(","));
        } else {
            json.push_str(",\"vs\":null,\"vs_offsets\":null");
        }

        // Our CSR index.
        match index {
            Some(ix) => {
                let host = ix.download(gpu, shape)?;
                let names = ["tile_ptr", "tile_start", "col_ptr", "col_index"];
                let bytes = [
                    le_bytes32(&host.tile_ptr, u32::to_le_bytes),
                    le_bytes32(&host.tile_start, i32::to_le_bytes),
                    le_bytes32(&host.col_ptr, u32::to_le_bytes),
                    le_bytes32(&host.col_index, i32::to_le_bytes),
                ];
                let mut parts = Vec::new();
                for (name, b) in names.iter().zip(bytes.iter()) {
                    let file = format!("{regime_tag}_{name}.bin");
                    write_bytes(&self.dir, &file, b)?;
                    parts.push(format!("{}:{}", json_str(name), json_str(&file)));
                }
                let _ = write!(json, ",\"csr\":{{{}}}", parts.join(","));
            }
            None => json.push_str(",\"csr\":null"),
        }

        // Sample rows of our output, [heads, rows, D].
        let d = shape.head_dim;
        let row_bytes = d * elem_bytes(out.dtype);
        let rows = sample_rows(n);
        let mut host = vec![0u8; shape.heads * rows.len() * row_bytes];
        for h in 0..shape.heads {
            for (i, &r) in rows.iter().enumerate() {
                let dst = (h * rows.len() + i) * row_bytes;
                out.read_bytes(gpu, (h * n + r) * d, &mut host[dst..dst + row_bytes])?;
            }
        }
        gpu.sync()?;
        let file = format!("{regime_tag}_out_rows.bin");
        write_bytes(&self.dir, &file, &host)?;
        let _ = write!(
            json,
            ",\"out_rows\":{},\"ours\":{{\"estimate_ms\":{},\"index_ms\":{},\"attention_ms\":{},\"total_ms\":{},\"density\":{},\"effective_tflops\":{}}}}}",
            json_str(&file),
            num(ours.estimate_ms as f64),
            num(ours.index_ms as f64),
            num(ours.attention_ms as f64),
            num((ours.estimate_ms + ours.index_ms + ours.attention_ms) as f64),
            num(ours.density),
            num(ours.effective_tflops)
        );
        entry.sets.push(json);
        Ok(())
    }

    fn close_entry(&mut self) {
        if let Some(e) = self.current.take() {
            let dense = e.dense.map_or("null".to_string(), |ms| num(ms as f64));
            self.entries.push(format!("{},\"dense\":{dense},\"sets\":[\n  {}]}}", e.head, e.sets.join(",\n  ")));
        }
    }

    /// Writes `manifest.json`; returns its path.
    pub fn finish(mut self) -> Result<PathBuf> {
        self.close_entry();
        let text = format!(
            "{{\"format\":\"minference-peer-export/1\",\"card\":{},\"heads\":{},\"kv_heads\":{},\"head_dim\":{},\"dtype\":\"bf16\",\n\"entries\":[\n{}]}}\n",
            json_str(&self.card),
            self.heads,
            self.kv_heads,
            self.head_dim,
            self.entries.join(",\n")
        );
        let path = self.dir.join("manifest.json");
        std::fs::write(&path, text).map_err(|e| io_err(&path, e))?;
        Ok(path)
    }
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_rows_span_the_sequence() {
        let r = sample_rows(16_384);
        assert_eq!(r.len(), SAMPLE_ROWS);
        assert_eq!((r[0], *r.last().unwrap()), (0, 16_383));
        assert!(r.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample_rows(3), vec![0, 1, 2]);
    }

    #[test]
    fn json_strings_are_escaped_and_patterns_named() {
        assert_eq!(json_str("a\"b\\"), "\"a\\\"b\\\\\"");
        assert_eq!(pattern_json(&HeadPattern::BlockSparse { k_b: 100 }), "{\"kind\":\"bs\",\"k_b\":100}");
        assert_eq!(sanitize("vs(1000,6096)"), "vs_1000_6096_");
    }
}
