//! VS online estimation on the GPU (spec §1.3.2, core's vs_estimate.rs): last-64 logits, fp32
//! softmax in two passes, raw vertical and diagonal sums, adaptive budgets (core's adaptive.rs, in
//! `kernels/adaptive.cu`), forcing and exact top-k; all VS heads of all sequences in one set of
//! launches.

use crate::context::{Arg, Gpu};
use crate::error::{CudaError, Result};
use crate::layout::{check_patterns, check_problem, dtype_suffix, max_kv, Meta};
use crate::tensor::DeviceTensor;
use cudarc::driver::CudaSlice;
use minference_core::vs_estimate::clamp_vs_budget;
use minference_core::{AttnShape, HeadPattern, VsScores, VsSelection};

/// One VS (sequence, head): offsets into the score, diagonal and selection buffers.
/// `k_v` / `k_s` are the selection's capacity: the clamped budgets of a fixed head; for an adaptive
/// head the clamped maxima, of which the device picks at most as many ([`DeviceVsSelection::budgets`]).
#[derive(Debug, Clone, Copy)]
pub struct VsItem {
    pub b: usize,
    pub h: usize,
    pub score_off: usize,
    pub diag_off: usize,
    pub k_v: usize,
    pub k_s: usize,
    pub sel_v_off: usize,
    pub sel_s_off: usize,
}

/// VS selections living on the device (verticals ascending, slashes descending per item). The
/// device copy of the items holds each item's chosen budgets.
pub struct DeviceVsSelection {
    pub items: Vec<VsItem>,
    pub(crate) items_dev: CudaSlice<i32>,
    pub(crate) sel_v: CudaSlice<i32>,
    pub(crate) sel_s: CudaSlice<i32>,
}

fn items_for(
    shape: &AttnShape,
    patterns: &[HeadPattern],
    budgets: impl Fn(usize, usize) -> Option<(usize, usize)>,
) -> Vec<VsItem> {
    let mut items = Vec::new();
    let (mut score, mut diag, mut sv, mut ss) = (0, 0, 0, 0);
    for (b, seq) in shape.seqs.iter().enumerate() {
        for (h, pattern) in patterns.iter().enumerate().take(shape.heads) {
            if !pattern.is_vertical_slash() {
                continue;
            }
            let Some((k_v, k_s)) = budgets(b, h) else {
                continue;
            };
            items.push(VsItem { b, h, score_off: score, diag_off: diag, k_v, k_s, sel_v_off: sv, sel_s_off: ss });
            score += seq.kv_len;
            diag += seq.kv_len.div_ceil(64) * 127;
            sv += k_v;
            ss += k_s;
        }
    }
    items
}

fn pack_items(items: &[VsItem]) -> Result<Vec<i32>> {
    let mut out = Vec::with_capacity(items.len() * 8);
    for it in items {
        for x in [it.b, it.h, it.score_off, it.diag_off, it.k_v, it.k_s, it.sel_v_off, it.sel_s_off] {
            out.push(i32::try_from(x).map_err(|_| CudaError::Invalid("VS buffers exceed int32 offsets".into()))?);
        }
    }
    Ok(out)
}

/// Per item, `kernels/adaptive.cu`'s int[6]: `gamma_ppm` (0 for a fixed head), then `min_v, max_v,
/// min_s, max_s` capped at `kv_len` (which changes no budget: the count never exceeds `kv_len`).
fn pack_adaptive(shape: &AttnShape, patterns: &[HeadPattern], items: &[VsItem]) -> Result<(Vec<i32>, bool)> {
    let mut out = Vec::with_capacity(items.len() * 6);
    let mut any = false;
    for it in items {
        let n = shape.seqs[it.b].kv_len;
        let cap = |x: usize| i32::try_from(x.min(n)).unwrap_or(i32::MAX);
        match patterns[it.h] {
            HeadPattern::AdaptiveVs { gamma_ppm, min_v, max_v, min_s, max_s } => {
                let ppm = i32::try_from(gamma_ppm)
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| CudaError::Invalid(format!("head {}: adaptive gamma_ppm {gamma_ppm}", it.h)))?;
                out.extend([ppm, cap(min_v), cap(max_v), cap(min_s), cap(max_s), 0]);
                any = true;
            }
            _ => out.extend([0; 6]),
        }
    }
    Ok((out, any))
}

/// The selection capacity of a VS head at `kv_len`: its clamped budgets, or for an adaptive head
/// its clamped maxima (the budgets it can pick are never larger).
fn capacity(pattern: &HeadPattern, kv_len: usize) -> Option<(usize, usize)> {
    match *pattern {
        HeadPattern::VerticalSlash { k_v, k_s } => Some(clamp_vs_budget(k_v, k_s, kv_len)),
        HeadPattern::AdaptiveVs { max_v, max_s, .. } => Some(clamp_vs_budget(max_v, max_s, kv_len)),
        _ => None,
    }
}

/// Estimates every VS head of `patterns` on the device (adaptive heads pick their budgets there).
pub fn estimate_vs(
    gpu: &Gpu,
    shape: &AttnShape,
    q: &DeviceTensor,
    k: &DeviceTensor,
    patterns: &[HeadPattern],
) -> Result<DeviceVsSelection> {
    Ok(estimate(gpu, shape, q, k, patterns, false)?.0)
}

/// [`estimate_vs`] that also brings back every VS head's raw scores (core's [`VsScores`], in the
/// trait's `b * heads + h` order, empty for other heads): the scores the budgets were picked from.
pub fn estimate_vs_scores(
    gpu: &Gpu,
    shape: &AttnShape,
    q: &DeviceTensor,
    k: &DeviceTensor,
    patterns: &[HeadPattern],
) -> Result<(DeviceVsSelection, Vec<VsScores>)> {
    let (sel, scores) = estimate(gpu, shape, q, k, patterns, true)?;
    Ok((sel, scores.unwrap_or_default()))
}

fn estimate(
    gpu: &Gpu,
    shape: &AttnShape,
    q: &DeviceTensor,
    k: &DeviceTensor,
    patterns: &[HeadPattern],
    keep_scores: bool,
) -> Result<(DeviceVsSelection, Option<Vec<VsScores>>)> {
    check_problem(shape, (q.dtype, q.len), (k.dtype, k.len), None)?;
    check_patterns(shape, patterns)?;
    let items = items_for(shape, patterns, |b, h| capacity(&patterns[h], shape.seqs[b].kv_len));
    let n = items.len();
    let total_v: usize = items.iter().map(|i| i.k_v).sum();
    let total_s: usize = items.iter().map(|i| i.k_s).sum();
    let items_dev = gpu.upload(&pack_items(&items)?)?;
    let sel_v = gpu.alloc::<i32>(total_v)?;
    let sel_s = gpu.alloc::<i32>(total_s)?;
    if n == 0 {
        let scores = keep_scores.then(|| vec![VsScores::default(); shape.seqs.len() * shape.heads]);
        return Ok((DeviceVsSelection { items, items_dev, sel_v, sel_s }, scores));
    }
    let (adapt, any_adaptive) = pack_adaptive(shape, patterns, &items)?;
    let meta = Meta::new(gpu, shape, patterns)?;
    let d = shape.head_dim;
    let kv_max = max_kv(shape);
    let tiles_max = kv_max.div_ceil(64);
    // Enough CTAs to fill the GPU: about 2048 over all items.
    let chunk_tiles = (tiles_max * n).div_ceil(2048).max(1);
    let n_chunks = tiles_max.div_ceil(chunk_tiles);
    let suffix = format!("{}_d{d}", dtype_suffix(q.dtype));
    // EstLogits' tiles (Q + two K buffers for half inputs, Q + K for f32) and the [64][65] logits;
    // vs_scores adds its four warps' partial sums (VS_RED_STRIDE floats each).
    // vs_rowstats reduces half inputs in registers, so only the f32 path keeps the logits there.
    let f32_in = q.dtype == minference_core::DType::F32;
    let tile_smem = if f32_in { 2 * 64 * (d + 1) * 4 } else { 3 * 64 * d * 2 };
    let logits_smem = 64 * 65 * 4;
    let rowstats_smem = tile_smem + if f32_in { logits_smem } else { 0 };
    // Half inputs at D >= 128 keep vs_scores' normalised tile in the Q tile's buffer (VsPInQ).
    let p_in_q = !f32_in && 64 * d * 2 >= 64 * 64 * 4;
    let scores_smem = tile_smem + if p_in_q { 0 } else { logits_smem } + 4 * crate::kernels::VS_RED_STRIDE * 4;
    let total_score: usize = items.iter().map(|i| shape.seqs[i.b].kv_len).sum();
    let total_diag: usize = items.iter().map(|i| shape.seqs[i.b].kv_len.div_ceil(64) * 127).sum();
    let stats = gpu.alloc::<f32>(2 * n * n_chunks * 64)?;
    let rowfin = gpu.alloc::<f32>(2 * n * 64)?;
    let vscore = gpu.alloc::<f32>(total_score)?;
    let sscore = gpu.alloc::<f32>(total_score)?;
    let diag = gpu.alloc::<f32>(total_diag)?;
    let scale_log2 = std::f32::consts::LOG2_E / (d as f32).sqrt();
    let common = [
        Arg::P(q.ptr(gpu)),
        Arg::P(k.ptr(gpu)),
        Arg::P(meta.seqs(gpu)),
        Arg::P(gpu.ptr(&items_dev)),
        Arg::I(shape.heads as i32),
        Arg::I(shape.kv_heads as i32),
        Arg::I(shape.total_q() as i32),
        Arg::I(shape.total_kv() as i32),
        Arg::F(scale_log2),
    ];
    let mut a = common.to_vec();
    a.extend([Arg::I(chunk_tiles as i32), Arg::I(n_chunks as i32), Arg::P(gpu.ptr(&stats))]);
    gpu.launch(&format!("vs_rowstats_{suffix}"), (n_chunks as u32, n as u32, 1), 128, rowstats_smem, &a)?;
    gpu.launch(
        "vs_combine",
        (n as u32, 1, 1),
        64,
        0,
        &[Arg::P(gpu.ptr(&stats)), Arg::I(n_chunks as i32), Arg::P(gpu.ptr(&rowfin))],
    )?;
    let mut a = common.to_vec();
    a.extend([Arg::I(chunk_tiles as i32), Arg::P(gpu.ptr(&rowfin)), Arg::P(gpu.ptr(&vscore)), Arg::P(gpu.ptr(&diag))]);
    gpu.launch(&format!("vs_scores_{suffix}"), (n_chunks as u32, n as u32, 1), 128, scores_smem, &a)?;
    gpu.launch(
        "vs_slash_reduce",
        (kv_max.div_ceil(256) as u32, n as u32, 1),
        256,
        0,
        &[Arg::P(meta.seqs(gpu)), Arg::P(gpu.ptr(&items_dev)), Arg::P(gpu.ptr(&diag)), Arg::P(gpu.ptr(&sscore))],
    )?;
    if any_adaptive {
        let adapt_dev = gpu.upload(&adapt)?;
        gpu.launch(
            "vs_adaptive",
            (n as u32, 2, 1),
            1024,
            0,
            &[
                Arg::P(meta.seqs(gpu)),
                Arg::P(gpu.ptr(&items_dev)),
                Arg::P(gpu.ptr(&adapt_dev)),
                Arg::P(gpu.ptr(&vscore)),
                Arg::P(gpu.ptr(&sscore)),
            ],
        )?;
    }
    gpu.launch(
        "vs_topk",
        (n as u32, 2, 1),
        1024,
        0,
        &[
            Arg::P(meta.seqs(gpu)),
            Arg::P(gpu.ptr(&items_dev)),
            Arg::P(gpu.ptr(&vscore)),
            Arg::P(gpu.ptr(&sscore)),
            Arg::P(gpu.ptr(&sel_v)),
            Arg::P(gpu.ptr(&sel_s)),
        ],
    )?;
    let scores = if keep_scores {
        let v = gpu.download(&vscore, total_score)?;
        let s = gpu.download(&sscore, total_score)?;
        let mut out = vec![VsScores::default(); shape.seqs.len() * shape.heads];
        for it in &items {
            let range = it.score_off..it.score_off + shape.seqs[it.b].kv_len;
            out[it.b * shape.heads + it.h] = VsScores { vertical: v[range.clone()].to_vec(), slash: s[range].to_vec() };
        }
        Some(out)
    } else {
        None
    };
    Ok((DeviceVsSelection { items, items_dev, sel_v, sel_s }, scores))
}

impl DeviceVsSelection {
    /// Each item's budgets `(k_v, k_s)` as the device holds them (after clamping; an adaptive
    /// head's picked budgets), in item order.
    pub fn budgets(&self, gpu: &Gpu) -> Result<Vec<(usize, usize)>> {
        let packed = gpu.download(&self.items_dev, self.items.len() * 8)?;
        let mut out = Vec::with_capacity(self.items.len());
        for (it, dev) in self.items.iter().zip(packed.chunks_exact(8)) {
            let (k_v, k_s) = (usize::try_from(dev[4]).unwrap_or(0), usize::try_from(dev[5]).unwrap_or(0));
            if k_v > it.k_v || k_s > it.k_s {
                return Err(CudaError::Invalid(format!(
                    "device budgets ({k_v}, {k_s}) of sequence {}, head {} exceed the capacity ({}, {})",
                    it.b, it.h, it.k_v, it.k_s
                )));
            }
            out.push((k_v, k_s));
        }
        Ok(out)
    }

    /// Host copy in the trait's order (`b * heads + h`; non-VS heads empty).
    pub fn download(&self, gpu: &Gpu, shape: &AttnShape) -> Result<Vec<VsSelection>> {
        let mut out = vec![VsSelection::default(); shape.seqs.len() * shape.heads];
        let budgets = self.budgets(gpu)?;
        let total_v: usize = self.items.iter().map(|i| i.k_v).sum();
        let total_s: usize = self.items.iter().map(|i| i.k_s).sum();
        let v = gpu.download(&self.sel_v, total_v)?;
        let s = gpu.download(&self.sel_s, total_s)?;
        for (it, &(k_v, k_s)) in self.items.iter().zip(&budgets) {
            let sel = &mut out[it.b * shape.heads + it.h];
            sel.verticals = v[it.sel_v_off..it.sel_v_off + k_v].iter().map(|&x| x as u32).collect();
            sel.slashes = s[it.sel_s_off..it.sel_s_off + k_s].iter().map(|&x| x as u32).collect();
        }
        Ok(out)
    }

    /// Uploads host selections (validated like core's converter: sorted, in range, and holding
    /// vertical 0 or slash 0 so that no row is left without keys).
    pub fn upload(
        gpu: &Gpu,
        shape: &AttnShape,
        patterns: &[HeadPattern],
        vs: &[VsSelection],
    ) -> Result<DeviceVsSelection> {
        check_patterns(shape, patterns)?;
        if vs.len() != shape.seqs.len() * shape.heads {
            return Err(CudaError::Invalid(format!(
                "{} VS selections for {} (sequence, head) pairs",
                vs.len(),
                shape.seqs.len() * shape.heads
            )));
        }
        for (b, seq) in shape.seqs.iter().enumerate() {
            for h in 0..shape.heads {
                if !patterns[h].is_vertical_slash() {
                    continue;
                }
                validate_selection(&vs[b * shape.heads + h], seq.kv_len)
                    .map_err(|m| CudaError::Invalid(format!("VS selection of sequence {b}, head {h}: {m}")))?;
            }
        }
        let items = items_for(shape, patterns, |b, h| {
            let s = &vs[b * shape.heads + h];
            Some((s.verticals.len(), s.slashes.len()))
        });
        let mut v = Vec::new();
        let mut s = Vec::new();
        for it in &items {
            let sel = &vs[it.b * shape.heads + it.h];
            v.extend(sel.verticals.iter().map(|&x| x as i32));
            s.extend(sel.slashes.iter().map(|&x| x as i32));
        }
        Ok(DeviceVsSelection {
            items_dev: gpu.upload(&pack_items(&items)?)?,
            items,
            sel_v: gpu.upload(&v)?,
            sel_s: gpu.upload(&s)?,
        })
    }
}

fn validate_selection(sel: &VsSelection, kv_len: usize) -> std::result::Result<(), String> {
    if sel.verticals.windows(2).any(|w| w[0] >= w[1]) {
        return Err("verticals must be strictly ascending".into());
    }
    if sel.slashes.windows(2).any(|w| w[0] <= w[1]) {
        return Err("slashes must be strictly descending".into());
    }
    if sel.verticals.last().is_some_and(|&v| v as usize >= kv_len)
        || sel.slashes.first().is_some_and(|&d| d as usize >= kv_len)
    {
        return Err(format!("entries must be < kv_len {kv_len}"));
    }
    if sel.verticals.first() != Some(&0) && sel.slashes.last() != Some(&0) {
        return Err("needs vertical 0 or slash 0, otherwise some rows see no key".into());
    }
    Ok(())
}
