//! The inputs of the attention benchmark: generated on the device (random), on the host
//! (structured, one KV group replicated over the others) or read from a safetensors file.

use crate::gpu_attention::{BenchConfig, Regime};
use minference_core::{generate_qkv, AttnShape, DType, OwnedTensor, SynthConfig};
use minference_cuda::{fill_normal, CudaError, DeviceTensor, Gpu, Result};

pub(crate) fn inputs(gpu: &Gpu, shape: &AttnShape, regime: Regime, seed: u64) -> Result<[DeviceTensor; 3]> {
    let mut q = DeviceTensor::alloc(gpu, DType::Bf16, shape.q_elems())?;
    let mut k = DeviceTensor::alloc(gpu, DType::Bf16, shape.kv_elems())?;
    let mut v = DeviceTensor::alloc(gpu, DType::Bf16, shape.kv_elems())?;
    fill_normal(gpu, &mut v, seed ^ 0x76, 1.0)?;
    match regime {
        Regime::Random => {
            fill_normal(gpu, &mut q, seed ^ 0x71, 1.0)?;
            fill_normal(gpu, &mut k, seed ^ 0x6b, 1.0)?;
        }
        Regime::File => return Err(CudaError::Invalid("file inputs come from load_file_inputs".into())),
        Regime::Structured => {
            let group = shape.heads / shape.kv_heads;
            let one = AttnShape { heads: group, kv_heads: 1, ..shape.clone() };
            let (qf, kf, _) = generate_qkv(&one, &SynthConfig::structured(), seed);
            let (qh, kh) = (OwnedTensor::from_f32(&qf, DType::Bf16), OwnedTensor::from_f32(&kf, DType::Bf16));
            drop((qf, kf));
            let (qg, kg) = (DeviceTensor::upload(gpu, qh.view())?, DeviceTensor::upload(gpu, kh.view())?);
            for g in 0..shape.kv_heads {
                q.copy_from(gpu, &qg, g * qg.len)?;
                k.copy_from(gpu, &kg, g * kg.len)?;
            }
        }
    }
    gpu.sync()?;
    Ok([q, k, v])
}

/// Reads Q/K/V from a safetensors file (see [`BenchConfig::qk_file`]) into bf16 device tensors.
pub(crate) fn load_file_inputs(
    gpu: &Gpu,
    path: &std::path::Path,
    cfg: &BenchConfig,
) -> Result<(AttnShape, [DeviceTensor; 3])> {
    let bad = |m: String| CudaError::Invalid(format!("{}: {m}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let read = |name: &str| -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let t = match st.tensor(name) {
            Ok(t) => t,
            Err(_) => return Ok(None),
        };
        let data = t.data();
        let vals: Vec<f32> = match t.dtype() {
            safetensors::Dtype::F32 => {
                data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            safetensors::Dtype::BF16 => {
                data.chunks_exact(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect()
            }
            safetensors::Dtype::F16 => {
                data.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect()
            }
            other => return Err(bad(format!("tensor `{name}` has dtype {other:?}; expected f32, bf16 or f16"))),
        };
        Ok(Some((t.shape().to_vec(), vals)))
    };
    let (qs, qv) = read("q")?.ok_or_else(|| bad("no tensor `q`".into()))?;
    let (ks, kv) = read("k")?.ok_or_else(|| bad("no tensor `k`".into()))?;
    let v = read("v")?;
    // [rows, D] → one head replicated; [heads, rows, D] → as given.
    let (heads, q_len, d, q_rep) = match qs[..] {
        [n, d] => (cfg.heads, n, d, cfg.heads),
        [h, n, d] => (h, n, d, 1),
        _ => return Err(bad(format!("`q` must be 2-D or 3-D, got {qs:?}"))),
    };
    let (kv_heads, kv_len, k_rep) = match ks[..] {
        [n, dk] if dk == d => (cfg.kv_heads.min(heads), n, cfg.kv_heads.min(heads)),
        [h, n, dk] if dk == d => (h, n, 1),
        _ => return Err(bad(format!("`k` must be [N_kv, {d}] or [H_kv, N_kv, {d}], got {ks:?}"))),
    };
    let shape = AttnShape { heads, kv_heads, head_dim: d, seqs: vec![minference_core::SeqLen { q_len, kv_len }] };
    shape.validate()?;
    let repeat = |x: &[f32], times: usize| -> Vec<f32> { x.iter().copied().cycle().take(x.len() * times).collect() };
    let q = OwnedTensor::from_f32(&repeat(&qv, q_rep), DType::Bf16);
    let k = OwnedTensor::from_f32(&repeat(&kv, k_rep), DType::Bf16);
    let qd = DeviceTensor::upload(gpu, q.view())?;
    let kd = DeviceTensor::upload(gpu, k.view())?;
    let vd = match v {
        Some((vs, vv)) if vs == ks => {
            DeviceTensor::upload(gpu, OwnedTensor::from_f32(&repeat(&vv, k_rep), DType::Bf16).view())?
        }
        Some((vs, _)) => return Err(bad(format!("`v` shape {vs:?} differs from `k` {ks:?}"))),
        None => {
            let mut t = DeviceTensor::alloc(gpu, DType::Bf16, shape.kv_elems())?;
            fill_normal(gpu, &mut t, cfg.seed, 1.0)?;
            t
        }
    };
    if qd.len != shape.q_elems() || kd.len != shape.kv_elems() {
        return Err(bad("tensor sizes do not match their shapes".into()));
    }
    Ok((shape, [qd, kd, vd]))
}
