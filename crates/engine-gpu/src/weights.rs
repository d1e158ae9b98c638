//! Model weights on the device in bf16 (norm weights and biases in f32), laid out for the
//! group-wise forward: each layer's Q/K/V rows are regrouped per KV head as
//! `[q rows of the group's heads; k rows; v rows]`, and gate/up are stacked into one matrix.

use crate::error::{EngineError, Result};
use crate::ops::Ops;
use crate::view::DeviceView;
use cudarc::driver::CudaSlice;
use minference_cuda::Gpu;
use minference_model::weights::Weights;
use minference_model::ModelConfig;
use std::ops::Range;

use crate::precision::Precision;
use crate::shard::TensorShard;

pub struct DeviceLayer {
    pub attn_norm: CudaSlice<f32>,
    /// `[kv_heads * (group + 2) * head_dim, hidden]`, group-interleaved.
    pub w_qkv: CudaSlice<u16>,
    /// Same order as `w_qkv`'s rows.
    pub qkv_bias: Option<CudaSlice<f32>>,
    /// `[hidden, q_dim]`.
    pub w_o: CudaSlice<u16>,
    pub mlp_norm: CudaSlice<f32>,
    /// `[2 * intermediate, hidden]`: gate rows, then up rows.
    pub w_gate_up: CudaSlice<u16>,
    /// `[hidden, intermediate]`.
    pub w_down: CudaSlice<u16>,
}

pub struct DeviceWeights {
    /// `[vocab, hidden]`.
    pub embed: CudaSlice<u16>,
    pub layers: Vec<DeviceLayer>,
    pub final_norm: CudaSlice<f32>,
    /// `[vocab, hidden]`; `None` when tied to the embedding.
    pub lm_head: Option<CudaSlice<u16>>,
}

/// Bytes of the device weights for `cfg` (bf16 matrices, f32 norms and biases).
pub fn weight_bytes(cfg: &ModelConfig) -> u64 {
    let (h, i, q, kv) = (cfg.hidden as u64, cfg.intermediate as u64, cfg.q_dim() as u64, cfg.kv_dim() as u64);
    let per_layer =
        2 * (h * (q + 2 * kv) + q * h + 3 * h * i) + 4 * (2 * h) + if cfg.qkv_bias { 4 * (q + 2 * kv) } else { 0 };
    let vocab = cfg.vocab as u64 * h * 2;
    cfg.layers as u64 * per_layer + vocab * if cfg.tie_embeddings { 1 } else { 2 } + 4 * h
}

/// Columns `cols` of a row-major matrix with `width` columns.
fn columns(m: &[f32], width: usize, cols: &Range<usize>) -> Vec<f32> {
    m.chunks_exact(width).flat_map(|row| &row[cols.clone()]).copied().collect()
}

/// Row order of the fused QKV matrix for the KV heads `groups`: for each KV head g, its query
/// heads' rows, its K rows, its V rows. Returns (matrix, row) pairs: 0 = Q, 1 = K, 2 = V.
pub fn qkv_row_order(cfg: &ModelConfig, groups: Range<usize>) -> Vec<(usize, usize)> {
    let (d, gs) = (cfg.head_dim, cfg.heads / cfg.kv_heads);
    let mut rows = Vec::with_capacity(groups.len() * (gs + 2) * d);
    for g in groups {
        rows.extend((g * gs * d..(g + 1) * gs * d).map(|r| (0, r)));
        rows.extend((g * d..(g + 1) * d).map(|r| (1, r)));
        rows.extend((g * d..(g + 1) * d).map(|r| (2, r)));
    }
    rows
}

impl DeviceWeights {
    /// Uploads `shard`'s part of host f32 weights (of the whole model `cfg`), rounding matrices
    /// to bf16: its KV groups' QKV rows, the matching columns of the output projection, its
    /// slice of gate/up rows and down-projection columns; embeddings and norms whole.
    pub fn upload(
        gpu: &Gpu,
        cfg: &ModelConfig,
        w: &Weights,
        shard: &TensorShard,
        precision: Precision,
    ) -> Result<DeviceWeights> {
        let to_bits = |v: &[f32]| -> Vec<u16> { v.iter().map(|x| precision.bits(*x)).collect() };
        let h = cfg.hidden;
        let order = qkv_row_order(cfg, shard.kv_heads.clone());
        let heads =
            shard.first_head(cfg) * cfg.head_dim..shard.kv_heads.end * (cfg.heads / cfg.kv_heads) * cfg.head_dim;
        let inter = shard.intermediate.clone();
        let mut layers = Vec::with_capacity(cfg.layers);
        for lw in &w.layers {
            let mats = [&lw.wq, &lw.wk, &lw.wv];
            let mut qkv = Vec::with_capacity(order.len() * h);
            let mut bias = Vec::with_capacity(order.len());
            for &(m, r) in &order {
                qkv.extend_from_slice(&mats[m].weight[r * h..(r + 1) * h]);
                bias.push(mats[m].bias.as_ref().map_or(0.0, |b| b[r]));
            }
            let has_bias = mats.iter().any(|m| m.bias.is_some());
            let mut gate_up = lw.w_gate.weight[inter.start * h..inter.end * h].to_vec();
            gate_up.extend_from_slice(&lw.w_up.weight[inter.start * h..inter.end * h]);
            layers.push(DeviceLayer {
                attn_norm: gpu.upload(&lw.attn_norm)?,
                w_qkv: gpu.upload(&to_bits(&qkv))?,
                qkv_bias: if has_bias { Some(gpu.upload(&bias)?) } else { None },
                w_o: gpu.upload(&to_bits(&columns(&lw.wo.weight, cfg.q_dim(), &heads)))?,
                mlp_norm: gpu.upload(&lw.mlp_norm)?,
                w_gate_up: gpu.upload(&to_bits(&gate_up))?,
                w_down: gpu.upload(&to_bits(&columns(&lw.w_down.weight, cfg.intermediate, &inter)))?,
            });
        }
        let out = DeviceWeights {
            embed: gpu.upload(&to_bits(&w.embed))?,
            layers,
            final_norm: gpu.upload(&w.final_norm)?,
            lm_head: match &w.lm_head {
                Some(l) => Some(gpu.upload(&to_bits(&l.weight))?),
                None => None,
            },
        };
        gpu.sync()?;
        Ok(out)
    }

    /// Random weights of the (local) config `cfg` generated on the device from `seed` (uniform, scale `sqrt(3 / fan_in)` as the
    /// CPU's `Weights::random`; unit norms; zero biases are left out). Nothing large crosses PCIe.
    pub fn random(gpu: &Gpu, ops: &Ops, cfg: &ModelConfig, seed: u64) -> Result<DeviceWeights> {
        cfg.validate()?;
        let h = cfg.hidden;
        let mut tensor_id = 0u64;
        let mut mat = |rows: usize, cols: usize| -> Result<CudaSlice<u16>> {
            let n = rows.checked_mul(cols).ok_or_else(|| EngineError::Input("weight size overflows".into()))?;
            let s = gpu.alloc::<u16>(n)?;
            tensor_id += 1;
            let tensor_seed = seed ^ tensor_id.wrapping_mul(0xD6E8_FEB8_6659_FD93);
            let out = DeviceView::of_slice(gpu, &s, ops.dtype(), cols);
            ops.init_uniform(gpu, out, tensor_seed, (3.0 / cols as f32).sqrt())?;
            Ok(s)
        };
        let ones = vec![1.0f32; h];
        let qkv_rows = cfg.q_dim() + 2 * cfg.kv_dim();
        let mut layers = Vec::with_capacity(cfg.layers);
        for _ in 0..cfg.layers {
            layers.push(DeviceLayer {
                attn_norm: gpu.upload(&ones)?,
                w_qkv: mat(qkv_rows, h)?,
                qkv_bias: None,
                w_o: mat(h, cfg.q_dim())?,
                mlp_norm: gpu.upload(&ones)?,
                w_gate_up: mat(2 * cfg.intermediate, h)?,
                w_down: mat(h, cfg.intermediate)?,
            });
        }
        let embed = mat(cfg.vocab, h)?;
        let lm_head = if cfg.tie_embeddings { None } else { Some(mat(cfg.vocab, h)?) };
        let out = DeviceWeights { embed, layers, final_norm: gpu.upload(&ones)?, lm_head };
        gpu.sync()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qkv_order_is_a_permutation_grouped_by_kv_head() {
        let cfg = ModelConfig::named_shape("qwen2.5-7b").unwrap_or_else(|e| panic!("{e}"));
        let order = qkv_row_order(&cfg, 0..cfg.kv_heads);
        assert_eq!(order.len(), cfg.q_dim() + 2 * cfg.kv_dim());
        let mut seen = std::collections::HashSet::new();
        assert!(order.iter().all(|r| seen.insert(*r)));
        let block = (cfg.heads / cfg.kv_heads + 2) * cfg.head_dim;
        // The K rows of group 1 follow its 7 query heads.
        assert_eq!(order[block + 7 * cfg.head_dim], (1, cfg.head_dim));
    }

    #[test]
    fn weight_bytes_of_qwen_7b_is_about_15_gb() {
        let cfg = ModelConfig::named_shape("qwen2.5-7b").unwrap_or_else(|e| panic!("{e}"));
        let b = weight_bytes(&cfg) as f64 / 1e9;
        assert!((15.0..15.5).contains(&b), "{b}");
    }
}
