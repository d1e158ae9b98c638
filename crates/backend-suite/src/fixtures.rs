//! Inputs, comparisons and masks the checks share.

use super::*;

/// Random unit-variance Q/K/V for a shape.
#[derive(Debug, Clone)]
pub struct Case {
    pub shape: AttnShape,
    pub q: OwnedTensor,
    pub k: OwnedTensor,
    pub v: OwnedTensor,
}

impl Case {
    pub fn random(shape: AttnShape, dtype: DType, seed: u64) -> Case {
        let mut rng = TestRng::new(seed);
        let q = OwnedTensor::from_f32(&rng.normals(shape.q_elems()), dtype);
        let k = OwnedTensor::from_f32(&rng.normals(shape.kv_elems()), dtype);
        let v = OwnedTensor::from_f32(&rng.normals(shape.kv_elems()), dtype);
        Case { shape, q, k, v }
    }

    pub(crate) fn dtype(&self) -> DType {
        self.q.view().dtype()
    }
}

pub(crate) fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: backend error: {e}")
}

/// Max-abs / mean-abs comparison with the dtype's tolerance.
pub fn compare(got: &[f32], want: &[f64], dtype: DType, what: &str) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: output has {} elements, expected {}", got.len(), want.len()));
    }
    let (max_tol, mean_tol) = match dtype {
        DType::F32 => (1e-4, 1e-4),
        DType::F16 | DType::Bf16 => (2e-2, 2e-3),
    };
    let mut max = 0.0f64;
    let mut sum = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if !g.is_finite() {
            return Err(format!("{what}: non-finite output {g} at element {i}"));
        }
        let e = (g as f64 - w).abs();
        sum += e;
        max = max.max(e);
    }
    let mean = sum / got.len().max(1) as f64;
    if max > max_tol || mean > mean_tol {
        return Err(format!("{what}: max-abs {max:.3e} (tol {max_tol:.0e}), mean-abs {mean:.3e} (tol {mean_tol:.0e})"));
    }
    Ok(())
}

pub(crate) fn exact(a: &[f32], b: &[f32], what: &str) -> Result<(), String> {
    match a.iter().zip(b).position(|(x, y)| x.to_bits() != y.to_bits()) {
        None if a.len() == b.len() => Ok(()),
        None => Err(format!("{what}: lengths {} vs {}", a.len(), b.len())),
        Some(i) => Err(format!("{what}: element {i} differs: {} vs {}", a[i], b[i])),
    }
}

/// The mask a sparse kernel computes (core's [`kernel_mask_keep`]): per head dense causal, the §1.2
/// A-shape predicate, or (tiles ∪ columns) of the row block's index slot; always ∩ causal ∩
/// `key < kv_len`.
pub struct KernelMask<'a> {
    shape: &'a AttnShape,
    patterns: &'a [HeadPattern],
    index: &'a SparseIndex,
}

impl<'a> KernelMask<'a> {
    pub fn new(shape: &'a AttnShape, patterns: &'a [HeadPattern], index: &'a SparseIndex) -> Self {
        KernelMask { shape, patterns, index }
    }

    pub fn keeps(&self, b: usize, h: usize, row: usize, key: usize) -> bool {
        let seq = self.shape.seqs[b];
        let slot = self.index.slot(self.shape, b, h, row / TILE);
        let (tiles, columns) = (self.index.tiles(slot), self.index.columns(slot));
        kernel_mask_keep(&self.patterns[h], tiles, columns, row + seq.offset(), key, seq.kv_len)
    }
}

/// Runs estimate (unless `vs` is given) → build_index → sparse, and compares with the masked
/// reference of the resulting kernel mask. Returns the index used.
pub fn sparse_vs_masked<B: BackendTransfer>(
    backend: &B,
    case: &Case,
    patterns: &[HeadPattern],
    vs: Option<Vec<VsSelection>>,
    what: &str,
) -> Result<SparseIndex, String> {
    let (shape, q, k, v) = (&case.shape, case.q.view(), case.k.view(), case.v.view());
    let vs = match vs {
        Some(vs) => vs,
        None => backend.estimate_vs(shape, q, k, patterns).map_err(err(what))?,
    };
    let index = backend.build_index(shape, q, k, patterns, &vs).map_err(err(what))?;
    let out = backend.sparse(shape, q, k, v, patterns, &index).map_err(err(what))?;
    let mask = KernelMask::new(shape, patterns, &index);
    let reference = masked_attention_f64_flagged(shape, q, k, v, |b, h, i, j| mask.keeps(b, h, i, j));
    if let Some(&(b, h, i)) = reference.empty_rows.first() {
        return Err(format!("{what}: row {i} of sequence {b}, head {h} has an empty kernel mask"));
    }
    compare(&out, &reference.out, case.dtype(), what)?;
    Ok(index)
}

pub(crate) fn dense_vs_reference<B: BackendTransfer>(backend: &B, case: &Case, what: &str) -> Result<Vec<f32>, String> {
    let (q, k, v) = (case.q.view(), case.k.view(), case.v.view());
    let out = backend.dense(&case.shape, q, k, v).map_err(err(what))?;
    compare(&out, &dense_reference_f64(&case.shape, q, k, v), case.dtype(), what)?;
    Ok(out)
}
