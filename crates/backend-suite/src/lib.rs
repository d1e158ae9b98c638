//! Property checks that run against ANY [`AttentionBackend`] and compare with the f64 reference
//! (spec §8 items 13–22). Each check is `(backend, seed) -> Result<(), String>`; the error names the
//! case that failed. `minference-cpu`'s tests run them on [`minference_cpu::CpuBackend`]; the CUDA crate runs
//! the same functions on its backend.
//!
//! Tolerances vs the f64 reference on unit-variance inputs: f32 inputs max-abs ≤ 1e-4; bf16/f16
//! inputs max-abs ≤ 2e-2 and mean-abs ≤ 2e-3 (the reference sees the same rounded inputs).
//!
//! Checks that take an input dtype exist as `check_x` (f32), `check_x_bf16` and `check_x_with`;
//! [`all_checks`] lists the f32 set plus the dtype-specific checks, [`all_checks_bf16`] the bf16 set.

use minference_core::{
    kernel_mask_keep, AttentionBackend, AttnShape, DType, HeadPattern, OwnedTensor, SeqLen, SparseIndex, VsSelection,
    TILE,
};
use minference_cpu::reference::{dense_reference_f64, masked_attention_f64_flagged};
use minference_cpu::rng::TestRng;

/// A check as a plain function pointer, for running the whole list generically.
pub type Check<B> = fn(&B, u64) -> Result<(), String>;

/// Every `(backend, seed)` check of this module, by name.
pub fn all_checks<B: AttentionBackend>() -> Vec<(&'static str, Check<B>)> {
    vec![
        ("dense_matches_reference", check_dense_matches_reference::<B>),
        ("dense_half_dtypes", check_dense_half_dtypes::<B>),
        ("varlen_offsets", check_varlen_offsets::<B>),
        ("ashape_matches_masked", check_ashape_matches_masked::<B>),
        ("vs_estimated_matches_masked", check_vs_estimated_matches_masked::<B>),
        ("vs_random_selection_matches_masked", check_vs_random_selection_matches_masked::<B>),
        ("bs_matches_masked", check_bs_matches_masked::<B>),
        ("random_index_matches_masked", check_random_index_matches_masked::<B>),
        ("full_budget_equals_dense", check_full_budget_equals_dense::<B>),
        ("causality", check_causality::<B>),
        ("column_permutation", check_column_permutation::<B>),
        ("no_nan_every_row_written", check_no_nan_every_row_written::<B>),
        ("padding_independence", check_padding_independence::<B>),
        ("rejects_bad_input", check_rejects_bad_input::<B>),
        ("short_prompt_vs_equals_dense", check_short_prompt_vs_equals_dense::<B>),
        ("dense_pattern_equals_dense", check_dense_pattern_equals_dense::<B>),
    ]
}

/// The dtype-parameterised checks with bf16 inputs (for backends that compute in bf16).
pub fn all_checks_bf16<B: AttentionBackend>() -> Vec<(&'static str, Check<B>)> {
    vec![
        ("dense_matches_reference_bf16", check_dense_matches_reference_bf16::<B>),
        ("varlen_offsets_bf16", check_varlen_offsets_bf16::<B>),
        ("ashape_matches_masked_bf16", check_ashape_matches_masked_bf16::<B>),
        ("vs_estimated_matches_masked_bf16", check_vs_estimated_matches_masked_bf16::<B>),
        ("vs_random_selection_matches_masked_bf16", check_vs_random_selection_matches_masked_bf16::<B>),
        ("bs_matches_masked_bf16", check_bs_matches_masked_bf16::<B>),
        ("random_index_matches_masked_bf16", check_random_index_matches_masked_bf16::<B>),
        ("full_budget_equals_dense_bf16", check_full_budget_equals_dense_bf16::<B>),
        ("causality_bf16", check_causality_bf16::<B>),
        ("column_permutation_bf16", check_column_permutation_bf16::<B>),
        ("padding_independence_bf16", check_padding_independence_bf16::<B>),
        ("short_prompt_vs_equals_dense_bf16", check_short_prompt_vs_equals_dense_bf16::<B>),
    ]
}

/// Sequence lengths around the 64-row block boundaries (spec §8 item 20).
pub const LENGTHS: [usize; 7] = [1, 17, 63, 64, 65, 130, 257];
/// `(heads, kv_heads)`: GQA ratios 1, 3, 4, 7.
pub const GQA: [(usize, usize); 4] = [(2, 2), (6, 2), (4, 1), (7, 1)];

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

    fn dtype(&self) -> DType {
        self.q.view().dtype()
    }
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
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

fn exact(a: &[f32], b: &[f32], what: &str) -> Result<(), String> {
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
pub fn sparse_vs_masked<B: AttentionBackend>(
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

fn dense_vs_reference<B: AttentionBackend>(backend: &B, case: &Case, what: &str) -> Result<Vec<f32>, String> {
    let (q, k, v) = (case.q.view(), case.k.view(), case.v.view());
    let out = backend.dense(&case.shape, q, k, v).map_err(err(what))?;
    compare(&out, &dense_reference_f64(&case.shape, q, k, v), case.dtype(), what)?;
    Ok(out)
}

/// Dense == f64 reference for every length of [`LENGTHS`], D ∈ {64, 128, 96}, GQA ratios 1/3/4/7.
pub fn check_dense_matches_reference_with<B: AttentionBackend>(
    backend: &B,
    seed: u64,
    dtype: DType,
) -> Result<(), String> {
    for (i, &n) in LENGTHS.iter().enumerate() {
        for (j, d) in [64usize, 128, 96].into_iter().enumerate() {
            let (heads, kv_heads) = GQA[(i + j) % GQA.len()];
            let shape = AttnShape::single(heads, kv_heads, d, n);
            let case = Case::random(shape, dtype, seed ^ (n * 1000 + d) as u64);
            dense_vs_reference(backend, &case, &format!("dense N={n} D={d} H={heads}/{kv_heads}"))?;
        }
    }
    Ok(())
}

/// bf16 and f16 inputs agree with the f64 reference of the rounded inputs (spec §8 item 22).
pub fn check_dense_half_dtypes<B: AttentionBackend>(backend: &B, seed: u64) -> Result<(), String> {
    for dtype in [DType::Bf16, DType::F16] {
        for n in [65usize, 257] {
            let case = Case::random(AttnShape::single(4, 1, 128, n), dtype, seed ^ n as u64);
            dense_vs_reference(backend, &case, &format!("dense {dtype:?} N={n}"))?;
        }
    }
    Ok(())
}

/// A packed batch of sequences of different lengths, some with `q_len < kv_len` (prefix cache).
pub fn varlen_shape(heads: usize, kv_heads: usize, head_dim: usize) -> AttnShape {
    let seqs = [(17, 17), (40, 130), (64, 200), (1, 77), (130, 130)];
    AttnShape {
        heads,
        kv_heads,
        head_dim,
        seqs: seqs.iter().map(|&(q_len, kv_len)| SeqLen { q_len, kv_len }).collect(),
    }
}

/// One head of each pattern, cycling, sized to matter at the test lengths.
pub fn mixed_patterns(heads: usize) -> Vec<HeadPattern> {
    let menu = [
        HeadPattern::VerticalSlash { k_v: 40, k_s: 120 },
        HeadPattern::BlockSparse { k_b: 2 },
        HeadPattern::AShape { n_init: 10, n_local: 50 },
        HeadPattern::Dense,
    ];
    (0..heads).map(|h| menu[h % menu.len()]).collect()
}

/// Dense and every sparse pattern on a varlen batch with offsets.
pub fn check_varlen_offsets_with<B: AttentionBackend>(backend: &B, seed: u64, dtype: DType) -> Result<(), String> {
    let case = Case::random(varlen_shape(8, 2, 64), dtype, seed);
    dense_vs_reference(backend, &case, "dense varlen")?;
    sparse_vs_masked(backend, &case, &mixed_patterns(8), None, "mixed patterns varlen").map(|_| ())
}

/// Mixed patterns on an arbitrary shape and dtype (for property tests over random shapes).
pub fn check_mixed_patterns_on<B: AttentionBackend>(
    backend: &B,
    shape: AttnShape,
    dtype: DType,
    seed: u64,
) -> Result<(), String> {
    let patterns = mixed_patterns(shape.heads);
    let what = format!("mixed patterns {:?} {dtype:?}", shape);
    let case = Case::random(shape, dtype, seed);
    dense_vs_reference(backend, &case, &format!("dense {:?}", case.shape))?;
    sparse_vs_masked(backend, &case, &patterns, None, &what).map(|_| ())
}

/// A-shape == masked reference with the exact §1.2 predicate, sinks inside and outside the window.
pub fn check_ashape_matches_masked_with<B: AttentionBackend>(
    backend: &B,
    seed: u64,
    dtype: DType,
) -> Result<(), String> {
    let params = [(4, 64), (100, 30), (0, 1), (7, 200), (64, 64), (1, 129)];
    let patterns: Vec<HeadPattern> =
        params.iter().map(|&(n_init, n_local)| HeadPattern::AShape { n_init, n_local }).collect();
    for (n, d) in [(257usize, 64usize), (130, 128), (1, 64)] {
        let case = Case::random(AttnShape::single(6, 3, d, n), dtype, seed ^ n as u64);
        sparse_vs_masked(backend, &case, &patterns, None, &format!("A-shape N={n} D={d}"))?;
    }
    Ok(())
}

/// VS with online-estimated selections (the real pipeline) == masked reference; the ideal VS mask
/// is contained in the kernel mask (spec §8 items 13, 15).
pub fn check_vs_estimated_matches_masked_with<B: AttentionBackend>(
    backend: &B,
    seed: u64,
    dtype: DType,
) -> Result<(), String> {
    let budgets = [(30, 100), (40, 150), (3, 60), (100, 50)];
    let patterns: Vec<HeadPattern> =
        budgets.iter().map(|&(k_v, k_s)| HeadPattern::VerticalSlash { k_v, k_s }).collect();
    for (n, d) in [(257usize, 128usize), (200, 64), (63, 64), (130, 96)] {
        let case = Case::random(AttnShape::single(4, 2, d, n), dtype, seed ^ n as u64);
        let what = format!("VS estimated N={n} D={d}");
        let vs = backend.estimate_vs(&case.shape, case.q.view(), case.k.view(), &patterns).map_err(err(&what))?;
        let index = sparse_vs_masked(backend, &case, &patterns, Some(vs.clone()), &what)?;
        check_ideal_in_kernel(&case.shape, &patterns, &vs, &index, &what)?;
    }
    Ok(())
}

/// Every (row, key) of the ideal VS mask (`key ∈ V` or `pos - key ∈ S`, causal) is in the kernel mask.
pub fn check_ideal_in_kernel(
    shape: &AttnShape,
    patterns: &[HeadPattern],
    vs: &[VsSelection],
    index: &SparseIndex,
    what: &str,
) -> Result<(), String> {
    let mask = KernelMask::new(shape, patterns, index);
    for (b, seq) in shape.seqs.iter().enumerate() {
        for (h, pattern) in patterns.iter().enumerate() {
            if !matches!(pattern, HeadPattern::VerticalSlash { .. }) {
                continue;
            }
            let sel = &vs[b * shape.heads + h];
            for i in 0..seq.q_len {
                let pos = i + seq.offset();
                let ideal = sel.verticals.iter().map(|&j| j as usize).filter(|&j| j <= pos && j < seq.kv_len);
                let slashes = sel.slashes.iter().filter_map(|&dist| pos.checked_sub(dist as usize));
                if let Some(j) = ideal.chain(slashes).find(|&j| !mask.keeps(b, h, i, j)) {
                    return Err(format!(
                        "{what}: ideal entry (row {i}, key {j}) of seq {b} head {h} not in kernel mask"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A random VS selection with the forced sets (first 30 columns, diagonals 0..99) plus random
/// far verticals and slashes; sorted as the converter expects.
pub fn random_vs_selection(seq: SeqLen, k_v: usize, k_s: usize, rng: &mut TestRng) -> VsSelection {
    let n = seq.kv_len;
    let mut verticals: Vec<u32> = (0..30.min(n) as u32).collect();
    let mut slashes: Vec<u32> = (0..100.min(n) as u32).collect();
    for _ in 0..k_v {
        verticals.push(rng.below(n) as u32);
    }
    for _ in 0..k_s {
        slashes.push(rng.below(n) as u32);
    }
    verticals.sort_unstable();
    verticals.dedup();
    slashes.sort_unstable_by(|a, b| b.cmp(a));
    slashes.dedup();
    VsSelection { verticals, slashes }
}

/// VS with random (unclustered) selections, incl. varlen and offsets.
pub fn check_vs_random_selection_matches_masked_with<B: AttentionBackend>(
    backend: &B,
    seed: u64,
    dtype: DType,
) -> Result<(), String> {
    let mut rng = TestRng::new(seed);
    for shape in [AttnShape::single(3, 1, 64, 300), varlen_shape(2, 1, 128)] {
        let patterns = vec![HeadPattern::VerticalSlash { k_v: 60, k_s: 120 }; shape.heads];
        let mut vs = Vec::new();
        for seq in &shape.seqs {
            for _ in 0..shape.heads {
                vs.push(random_vs_selection(*seq, 20, 8, &mut rng));
            }
        }
        let case = Case::random(shape, dtype, seed ^ 7);
        let what = format!("VS random selection {:?}", case.shape.seqs);
        let index = sparse_vs_masked(backend, &case, &patterns, Some(vs.clone()), &what)?;
        check_ideal_in_kernel(&case.shape, &patterns, &vs, &index, &what)?;
    }
    Ok(())
}

/// BS == masked reference; row block `m < k_b` sees all causal keys (spec §8 item 19),
/// including `N mod 64 == 0`.
pub fn check_bs_matches_masked_with<B: AttentionBackend>(backend: &B, seed: u64, dtype: DType) -> Result<(), String> {
    let patterns =
        [HeadPattern::BlockSparse { k_b: 1 }, HeadPattern::BlockSparse { k_b: 2 }, HeadPattern::BlockSparse { k_b: 3 }];
    for (n, d) in [(320usize, 64usize), (257, 128), (64, 64)] {
        let case = Case::random(AttnShape::single(3, 1, d, n), dtype, seed ^ n as u64);
        let what = format!("BS N={n} D={d}");
        let index = sparse_vs_masked(backend, &case, &patterns, None, &what)?;
        let mask = KernelMask::new(&case.shape, &patterns, &index);
        for (h, p) in patterns.iter().enumerate() {
            let HeadPattern::BlockSparse { k_b } = *p else { continue };
            for i in 0..n.min(k_b * TILE) {
                if let Some(j) = (0..=i).find(|&j| !mask.keeps(0, h, i, j)) {
                    return Err(format!("{what}: head {h} k_b={k_b}: row {i} misses causal key {j}"));
                }
            }
        }
    }
    Ok(())
}

/// A hand-made valid index: per row block, disjoint 64-key tiles (one always covers the block's
/// first position) and columns before the block, outside every tile.
pub fn random_index(shape: &AttnShape, rng: &mut TestRng) -> SparseIndex {
    let mut rows = Vec::new();
    for seq in &shape.seqs {
        for _ in 0..shape.heads {
            for m in 0..seq.row_blocks() {
                let first = seq.offset() + m * TILE;
                let anchor = first - rng.below(first.min(TILE - 1) + 1);
                let mut tiles = vec![anchor as i32];
                // Extra tiles left of the anchor, disjoint from it and from each other.
                let mut right = anchor;
                for _ in 0..rng.below(3) {
                    if right < TILE {
                        break;
                    }
                    let start = rng.below(right - TILE + 1);
                    tiles.push(start as i32);
                    right = start;
                }
                if rng.below(2) == 1 && anchor + TILE < seq.kv_len {
                    tiles.push((anchor + TILE) as i32);
                }
                tiles.sort_unstable();
                let covered = |key: usize| tiles.iter().any(|&t| (t as usize..t as usize + TILE).contains(&key));
                let mut columns: Vec<i32> =
                    (0..first).filter(|&c| !covered(c) && rng.below(3) == 0).map(|c| c as i32).collect();
                columns.truncate(TILE + 17);
                rows.push(minference_core::RowBlockIndex { tiles, columns });
            }
        }
    }
    SparseIndex::from_slots(shape, rows).unwrap_or_else(|_| SparseIndex::empty(shape))
}

/// The sparse kernel alone, on hand-made indices (no estimation involved).
pub fn check_random_index_matches_masked_with<B: AttentionBackend>(
    backend: &B,
    seed: u64,
    dtype: DType,
) -> Result<(), String> {
    let mut rng = TestRng::new(seed);
    for (shape, dtype) in [
        (AttnShape::single(4, 4, 64, 330), dtype),
        (varlen_shape(3, 1, 128), dtype),
        (AttnShape::single(4, 1, 128, 300), DType::Bf16),
    ] {
        let case = Case::random(shape, dtype, rng.next_u64());
        let index = random_index(&case.shape, &mut rng);
        let patterns = vec![HeadPattern::VerticalSlash { k_v: 1, k_s: 1 }; case.shape.heads];
        let (q, k, v) = (case.q.view(), case.k.view(), case.v.view());
        let what = format!("random index {:?} {dtype:?}", case.shape.seqs);
        let out = backend.sparse(&case.shape, q, k, v, &patterns, &index).map_err(err(&what))?;
        let mask = KernelMask::new(&case.shape, &patterns, &index);
        let reference = masked_attention_f64_flagged(&case.shape, q, k, v, |b, h, i, j| mask.keeps(b, h, i, j));
        compare(&out, &reference.out, dtype, &what)?;
    }
    Ok(())
}

/// Full budgets reproduce dense: VS with every column and distance, BS with `k_b >= R`, A-shape
/// with `n_local >= N` (spec §8 item 14).
pub fn check_full_budget_equals_dense_with<B: AttentionBackend>(
    backend: &B,
    seed: u64,
    dtype: DType,
) -> Result<(), String> {
    for n in [130usize, 257] {
        let shape = AttnShape::single(3, 1, 64, n);
        let case = Case::random(shape.clone(), dtype, seed ^ n as u64);
        let (q, k, v) = (case.q.view(), case.k.view(), case.v.view());
        let patterns = [
            HeadPattern::VerticalSlash { k_v: n, k_s: n },
            HeadPattern::BlockSparse { k_b: n.div_ceil(TILE) },
            HeadPattern::AShape { n_init: 0, n_local: n },
        ];
        let full = VsSelection { verticals: (0..n as u32).collect(), slashes: (0..n as u32).rev().collect() };
        let vs = vec![full, VsSelection::default(), VsSelection::default()];
        let what = format!("full budget N={n}");
        let index = backend.build_index(&shape, q, k, &patterns, &vs).map_err(err(&what))?;
        let out = backend.sparse(&shape, q, k, v, &patterns, &index).map_err(err(&what))?;
        compare(&out, &dense_reference_f64(&shape, q, k, v), dtype, &what)?;
    }
    Ok(())
}

fn perturb_after(case: &Case, seq: usize, key_after: usize, rng: &mut TestRng) -> Case {
    let shape = &case.shape;
    let d = shape.head_dim;
    let (mut k, mut v) = (case.k.view().to_f32_vec(), case.v.view().to_f32_vec());
    let kv0 = shape.kv_start(seq);
    for kvh in 0..shape.kv_heads {
        for j in key_after + 1..shape.seqs[seq].kv_len {
            let row = (kvh * shape.total_kv() + kv0 + j) * d;
            for x in row..row + d {
                k[x] = 10.0 * rng.normal();
                v[x] = 1e3 * rng.normal();
            }
        }
    }
    let dtype = case.dtype();
    Case {
        shape: shape.clone(),
        q: case.q.clone(),
        k: OwnedTensor::from_f32(&k, dtype),
        v: OwnedTensor::from_f32(&v, dtype),
    }
}

/// Perturbing K/V rows `j > t` leaves every output row at position `<= t` bit-identical, for all
/// patterns with one fixed index (spec §8 item 16).
pub fn check_causality_with<B: AttentionBackend>(backend: &B, seed: u64, dtype: DType) -> Result<(), String> {
    let mut rng = TestRng::new(seed);
    let shape = AttnShape::single(8, 2, 64, 260);
    let case = Case::random(shape.clone(), dtype, rng.next_u64());
    let patterns = mixed_patterns(shape.heads);
    let (q, k, v) = (case.q.view(), case.k.view(), case.v.view());
    let vs = backend.estimate_vs(&shape, q, k, &patterns).map_err(err("causality"))?;
    let index = backend.build_index(&shape, q, k, &patterns, &vs).map_err(err("causality"))?;
    let base_sparse = backend.sparse(&shape, q, k, v, &patterns, &index).map_err(err("causality"))?;
    let base_dense = backend.dense(&shape, q, k, v).map_err(err("causality"))?;
    for t in [0usize, 63, 64, 100, 258] {
        let p = perturb_after(&case, 0, t, &mut rng);
        let (pq, pk, pv) = (p.q.view(), p.k.view(), p.v.view());
        let sparse = backend.sparse(&shape, pq, pk, pv, &patterns, &index).map_err(err("causality"))?;
        let dense = backend.dense(&shape, pq, pk, pv).map_err(err("causality"))?;
        let d = shape.head_dim;
        for h in 0..shape.heads {
            let rows = h * 260 * d..(h * 260 + t + 1) * d;
            exact(&sparse[rows.clone()], &base_sparse[rows.clone()], &format!("causality sparse head {h} t={t}"))?;
            exact(&dense[rows.clone()], &base_dense[rows], &format!("causality dense head {h} t={t}"))?;
        }
    }
    Ok(())
}

/// Shuffling the columns of every slot changes the output only within rounding (spec §8 item 17).
pub fn check_column_permutation_with<B: AttentionBackend>(backend: &B, seed: u64, dtype: DType) -> Result<(), String> {
    let mut rng = TestRng::new(seed);
    let shape = AttnShape::single(2, 1, 128, 400);
    let case = Case::random(shape.clone(), dtype, rng.next_u64());
    let patterns = vec![HeadPattern::VerticalSlash { k_v: 150, k_s: 100 }; 2];
    let vs: Vec<VsSelection> = (0..2).map(|_| random_vs_selection(shape.seqs[0], 150, 0, &mut rng)).collect();
    let (q, k, v) = (case.q.view(), case.k.view(), case.v.view());
    let index = backend.build_index(&shape, q, k, &patterns, &vs).map_err(err("permutation"))?;
    if index.col_index.len() < TILE {
        return Err(format!("permutation: expected many columns, index has {}", index.col_index.len()));
    }
    let mut shuffled = index.clone();
    for s in 0..index.slots() {
        let range = index.col_ptr[s] as usize..index.col_ptr[s + 1] as usize;
        rng.shuffle(&mut shuffled.col_index[range]);
    }
    let a = backend.sparse(&shape, q, k, v, &patterns, &index).map_err(err("permutation"))?;
    let b = backend.sparse(&shape, q, k, v, &patterns, &shuffled).map_err(err("permutation"))?;
    let b64: Vec<f64> = b.iter().map(|&x| x as f64).collect();
    compare(&a, &b64, dtype, "column permutation")
}

/// Every valid row is finite and written (non-zero for random V), for lengths at block edges and
/// the first row block (row 0 sees only key 0) (spec §8 item 20).
pub fn check_no_nan_every_row_written<B: AttentionBackend>(backend: &B, seed: u64) -> Result<(), String> {
    for n in [1usize, 2, 63, 64, 65, 128, 129] {
        let shape = AttnShape::single(4, 2, 64, n);
        let case = Case::random(shape.clone(), DType::Bf16, seed ^ n as u64);
        let patterns = mixed_patterns(4);
        let (q, k, v) = (case.q.view(), case.k.view(), case.v.view());
        let what = format!("no-NaN N={n}");
        let dense = backend.dense(&shape, q, k, v).map_err(err(&what))?;
        let vs = backend.estimate_vs(&shape, q, k, &patterns).map_err(err(&what))?;
        let index = backend.build_index(&shape, q, k, &patterns, &vs).map_err(err(&what))?;
        let sparse = backend.sparse(&shape, q, k, v, &patterns, &index).map_err(err(&what))?;
        for (name, out) in [("dense", &dense), ("sparse", &sparse)] {
            if out.len() != shape.q_elems() {
                return Err(format!("{what} {name}: {} outputs", out.len()));
            }
            for (r, row) in out.chunks(64).enumerate() {
                if row.iter().any(|x| !x.is_finite()) || row.iter().all(|&x| x == 0.0) {
                    return Err(format!("{what} {name}: row {r} is non-finite or unwritten"));
                }
            }
        }
        // Row 0 sees only key 0: its output is V[0] of its KV head.
        let v0 = case.v.view().to_f32_vec();
        for h in 0..shape.heads {
            let kvh = shape.kv_head_of(h);
            let want: Vec<f64> = v0[kvh * n * 64..kvh * n * 64 + 64].iter().map(|&x| x as f64).collect();
            compare(&dense[h * n * 64..h * n * 64 + 64], &want, DType::Bf16, &format!("{what}: row 0 head {h}"))?;
        }
    }
    Ok(())
}

/// Outputs of one sequence of a packed batch do not depend on its neighbours' contents, and equal
/// the output of that sequence run alone (spec §8 item 21).
pub fn check_padding_independence_with<B: AttentionBackend>(
    backend: &B,
    seed: u64,
    dtype: DType,
) -> Result<(), String> {
    let mut rng = TestRng::new(seed);
    let shape = varlen_shape(4, 2, 64);
    let case = Case::random(shape.clone(), dtype, rng.next_u64());
    let patterns = mixed_patterns(4);
    let (q, k, v) = (case.q.view(), case.k.view(), case.v.view());
    let vs = backend.estimate_vs(&shape, q, k, &patterns).map_err(err("padding"))?;
    let index = backend.build_index(&shape, q, k, &patterns, &vs).map_err(err("padding"))?;
    let base = backend.sparse(&shape, q, k, v, &patterns, &index).map_err(err("padding"))?;
    // Replace sequence 1's K/V with noise; sequence 2's rows must not move.
    let noisy = perturb_after(&case, 1, 0, &mut rng);
    let out = backend
        .sparse(&shape, noisy.q.view(), noisy.k.view(), noisy.v.view(), &patterns, &index)
        .map_err(err("padding"))?;
    let d = shape.head_dim;
    let (q2, n2) = (shape.q_start(2), shape.seqs[2].q_len);
    for h in 0..shape.heads {
        let rows = (h * shape.total_q() + q2) * d..(h * shape.total_q() + q2 + n2) * d;
        exact(&out[rows.clone()], &base[rows], &format!("padding: neighbour changed seq 2 head {h}"))?;
    }
    // Sequence 2 alone, dense, vs its rows in the batch.
    let alone_shape = AttnShape { seqs: vec![shape.seqs[2]], ..shape.clone() };
    let pick = |t: &OwnedTensor, per_head: usize, start: usize, len: usize| {
        let all = t.view().to_f32_vec();
        let heads = all.len() / (per_head * d);
        let mut out = Vec::new();
        for h in 0..heads {
            out.extend_from_slice(&all[(h * per_head + start) * d..(h * per_head + start + len) * d]);
        }
        OwnedTensor::from_f32(&out, dtype)
    };
    let seq = shape.seqs[2];
    let aq = pick(&case.q, shape.total_q(), q2, seq.q_len);
    let ak = pick(&case.k, shape.total_kv(), shape.kv_start(2), seq.kv_len);
    let av = pick(&case.v, shape.total_kv(), shape.kv_start(2), seq.kv_len);
    let alone = backend.dense(&alone_shape, aq.view(), ak.view(), av.view()).map_err(err("padding"))?;
    let batched = backend.dense(&shape, q, k, v).map_err(err("padding"))?;
    let batched_seq2 = pick(&OwnedTensor::F32(batched), shape.total_q(), q2, seq.q_len).view().to_f32_vec();
    let alone64: Vec<f64> = alone.iter().map(|&x| x as f64).collect();
    compare(&batched_seq2, &alone64, dtype, "padding: batched vs alone")
}

/// Short prompts with MInference's default budget VS(1000, 6096) reproduce dense: the clamped
/// budget covers every column and diagonal (spec §8 item 26), with estimated selections.
pub fn check_short_prompt_vs_equals_dense_with<B: AttentionBackend>(
    backend: &B,
    seed: u64,
    dtype: DType,
) -> Result<(), String> {
    for n in [65usize, 257] {
        let shape = AttnShape::single(4, 2, 64, n);
        let case = Case::random(shape.clone(), dtype, seed ^ n as u64);
        let (q, k, v) = (case.q.view(), case.k.view(), case.v.view());
        let patterns = vec![HeadPattern::DEFAULT; 4];
        let what = format!("short prompt VS(1000, 6096) N={n}");
        let vs = backend.estimate_vs(&shape, q, k, &patterns).map_err(err(&what))?;
        let index = backend.build_index(&shape, q, k, &patterns, &vs).map_err(err(&what))?;
        let out = backend.sparse(&shape, q, k, v, &patterns, &index).map_err(err(&what))?;
        compare(&out, &dense_reference_f64(&shape, q, k, v), dtype, &what)?;
    }
    Ok(())
}

/// `sparse` with every head `Dense` equals `dense` (dense layers / decode steps go either way),
/// on a varlen batch with offsets and a one-row sequence.
pub fn check_dense_pattern_equals_dense<B: AttentionBackend>(backend: &B, seed: u64) -> Result<(), String> {
    let case = Case::random(varlen_shape(4, 1, 128), DType::F32, seed);
    let (shape, q, k, v) = (&case.shape, case.q.view(), case.k.view(), case.v.view());
    let patterns = vec![HeadPattern::Dense; shape.heads];
    let dense = backend.dense(shape, q, k, v).map_err(err("dense pattern"))?;
    let sparse = backend.sparse(shape, q, k, v, &patterns, &SparseIndex::empty(shape)).map_err(err("dense pattern"))?;
    let dense64: Vec<f64> = dense.iter().map(|&x| x as f64).collect();
    compare(&sparse, &dense64, DType::F32, "sparse with dense patterns vs dense")
}

/// Bad inputs are errors, never panics: wrong lengths, mixed dtypes, pattern count, NaN/Inf,
/// invalid shapes, out-of-range index columns.
pub fn check_rejects_bad_input<B: AttentionBackend>(backend: &B, seed: u64) -> Result<(), String> {
    let shape = AttnShape::single(2, 1, 64, 70);
    let case = Case::random(shape.clone(), DType::F32, seed);
    let (q, k, v) = (case.q.view(), case.k.view(), case.v.view());
    let qv = case.q.view().to_f32_vec();
    let short = minference_core::HostTensor::F32(&qv[1..]);
    let mut nan = qv.clone();
    nan[5] = f32::NAN;
    let mut inf = qv.clone();
    inf[9] = f32::INFINITY;
    let half = OwnedTensor::from_f32(&case.v.view().to_f32_vec(), DType::Bf16);
    let patterns = mixed_patterns(2);
    let bad_shapes = [
        AttnShape::single(3, 2, 64, 70),
        AttnShape { seqs: vec![SeqLen { q_len: 80, kv_len: 70 }], ..shape.clone() },
        AttnShape { seqs: vec![], ..shape.clone() },
        AttnShape::single(2, 1, 0, 70),
    ];
    let expect_err =
        |what: &str, is_err: bool| if is_err { Ok(()) } else { Err(format!("rejects: {what} was accepted")) };
    expect_err("short q", backend.dense(&shape, short, k, v).is_err())?;
    expect_err("NaN q", backend.dense(&shape, minference_core::HostTensor::F32(&nan), k, v).is_err())?;
    expect_err("Inf q", backend.dense(&shape, minference_core::HostTensor::F32(&inf), k, v).is_err())?;
    expect_err("mixed dtypes", backend.dense(&shape, q, k, half.view()).is_err())?;
    for s in &bad_shapes {
        expect_err(&format!("shape {s:?}"), backend.dense(s, q, k, v).is_err())?;
    }
    expect_err("pattern count", backend.estimate_vs(&shape, q, k, &patterns[..1]).is_err())?;
    let index = SparseIndex::empty(&shape);
    expect_err("sparse pattern count", backend.sparse(&shape, q, k, v, &patterns[..1], &index).is_err())?;
    let mut bad_index = random_index(&shape, &mut TestRng::new(seed));
    if let Some(c) = bad_index.col_index.first_mut() {
        *c = 70;
    } else {
        bad_index.col_index.push(70);
        let last = bad_index.col_ptr.len() - 1;
        bad_index.col_ptr[last] += 1;
    }
    let vs_patterns = vec![HeadPattern::VerticalSlash { k_v: 30, k_s: 100 }; 2];
    expect_err("column out of range", backend.sparse(&shape, q, k, v, &vs_patterns, &bad_index).is_err())?;
    let mut truncated = index.clone();
    truncated.tile_ptr.pop();
    expect_err("truncated tile_ptr", backend.sparse(&shape, q, k, v, &vs_patterns, &truncated).is_err())?;
    Ok(())
}

/// The checks that take an input dtype, as `(backend, seed)` functions for f32 and bf16 inputs.
macro_rules! dtype_variants {
    ($($with:ident => $f32:ident, $bf16:ident;)*) => {$(
        pub fn $f32<B: AttentionBackend>(backend: &B, seed: u64) -> Result<(), String> {
            $with(backend, seed, DType::F32)
        }
        pub fn $bf16<B: AttentionBackend>(backend: &B, seed: u64) -> Result<(), String> {
            $with(backend, seed, DType::Bf16)
        }
    )*};
}

dtype_variants! {
    check_dense_matches_reference_with => check_dense_matches_reference, check_dense_matches_reference_bf16;
    check_varlen_offsets_with => check_varlen_offsets, check_varlen_offsets_bf16;
    check_ashape_matches_masked_with => check_ashape_matches_masked, check_ashape_matches_masked_bf16;
    check_vs_estimated_matches_masked_with => check_vs_estimated_matches_masked, check_vs_estimated_matches_masked_bf16;
    check_vs_random_selection_matches_masked_with => check_vs_random_selection_matches_masked, check_vs_random_selection_matches_masked_bf16;
    check_bs_matches_masked_with => check_bs_matches_masked, check_bs_matches_masked_bf16;
    check_random_index_matches_masked_with => check_random_index_matches_masked, check_random_index_matches_masked_bf16;
    check_full_budget_equals_dense_with => check_full_budget_equals_dense, check_full_budget_equals_dense_bf16;
    check_causality_with => check_causality, check_causality_bf16;
    check_column_permutation_with => check_column_permutation, check_column_permutation_bf16;
    check_padding_independence_with => check_padding_independence, check_padding_independence_bf16;
    check_short_prompt_vs_equals_dense_with => check_short_prompt_vs_equals_dense, check_short_prompt_vs_equals_dense_bf16;
}
