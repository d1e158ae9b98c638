//! The structured attention workload (`minference_model::structured`) applied to random weights
//! made on the device: the same [`Design`] the CPU engine applies to its host weights, written into
//! this shard's rows (attention norms, Q/K biases, the zeroed Q and replaced K channel rows in the
//! group-interleaved QKV order, the reserved tokens' embedding rows). Only these small parts cross
//! PCIe.

use crate::error::{driver, EngineError, Result};
use crate::precision::Precision;
use crate::shard::TensorShard;
use crate::weights::{qkv_row_order, DeviceWeights};
use cudarc::driver::CudaSlice;
use minference_cuda::Gpu;
use minference_model::structured::Design;
use minference_model::ModelConfig;
use std::collections::{HashMap, HashSet};

/// Writes `rows` (`[n][width]` host values, by destination row) into the row-major `dst`.
fn write_rows(gpu: &Gpu, dst: &mut CudaSlice<u16>, width: usize, rows: &[(usize, Vec<u16>)], what: &str) -> Result<()> {
    for (r, bits) in rows {
        let range = r * width..(r + 1) * width;
        if bits.len() != width || range.end > dst.len() {
            return Err(EngineError::Input(format!("structured {what} row {r} does not fit the device matrix")));
        }
        let mut view = dst.slice_mut(range);
        gpu.stream().memcpy_htod(bits, &mut view).map_err(driver("structured weight rows"))?;
    }
    Ok(())
}

/// Applies `design` (made for the whole model `cfg`) to `shard`'s part of `w`.
pub fn apply_design(
    gpu: &Gpu,
    cfg: &ModelConfig,
    shard: &TensorShard,
    design: &Design,
    precision: Precision,
    w: &mut DeviceWeights,
) -> Result<()> {
    let h = cfg.hidden;
    if design.layers.len() != w.layers.len() {
        return Err(EngineError::Input("structured design does not match the device weights' layers".into()));
    }
    let bits = |v: &[f32]| -> Vec<u16> { v.iter().map(|x| precision.bits(*x)).collect() };
    let order = qkv_row_order(cfg, shard.kv_heads.clone());
    for (layer, ld) in w.layers.iter_mut().zip(&design.layers) {
        layer.attn_norm = gpu.upload(&vec![design.attn_norm; h])?;
        let bias: Vec<f32> = order
            .iter()
            .map(|&(m, r)| match m {
                0 => ld.q_bias[r],
                1 => ld.k_bias[r],
                _ => 0.0,
            })
            .collect();
        layer.qkv_bias = Some(gpu.upload(&bias)?);
        let zero: HashSet<usize> = ld.q_zero_rows.iter().copied().collect();
        let k_rows: HashMap<usize, &Vec<f32>> = ld.k_rows.iter().map(|(r, row)| (*r, row)).collect();
        let rows: Vec<(usize, Vec<u16>)> = order
            .iter()
            .enumerate()
            .filter_map(|(i, &(m, r))| match m {
                0 if zero.contains(&r) => Some((i, vec![precision.bits(0.0); h])),
                1 => k_rows.get(&r).map(|row| (i, bits(row))),
                _ => None,
            })
            .collect();
        write_rows(gpu, &mut layer.w_qkv, h, &rows, "QKV")?;
    }
    let embed: Vec<(usize, Vec<u16>)> =
        design.special_embeddings.iter().map(|(t, row)| (*t as usize, bits(row))).collect();
    write_rows(gpu, &mut w.embed, h, &embed, "embedding")?;
    gpu.sync()?;
    Ok(())
}
