//! A-shape, Vertical-Slash and Block-Sparse against the masked f64 reference, and the properties
//! every sparse kernel must keep (full budgets = dense, causality, column order).

use super::*;

/// A-shape == masked reference with the exact §1.2 predicate, sinks inside and outside the window.
pub fn check_ashape_matches_masked_with<B: BackendTransfer>(
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
pub fn check_vs_estimated_matches_masked_with<B: BackendTransfer>(
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
            if !pattern.is_vertical_slash() {
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

/// Slashes in bands of adjacent diagonals separated by gaps around one and two tiles (60..140 keys
/// decide whether the next band joins the run), verticals in short clusters: the walks' run joins,
/// gallops and gap seeks, which uniformly random selections rarely reach.
pub fn banded_vs_selection(n: usize, rng: &mut TestRng) -> VsSelection {
    let mut slashes = Vec::new();
    let mut d = 0; // slash 0 present: every row sees a key (the converter's precondition)
    while d < n {
        let widest = if rng.below(4) == 0 { 300 } else { 8 };
        let band = 1 + rng.below(widest);
        slashes.extend((d..(d + band).min(n)).map(|x| x as u32));
        d += band + 60 + rng.below(81);
    }
    let mut verticals = Vec::new();
    let mut v = rng.below(40);
    while v < n {
        let cluster = 1 + rng.below(5);
        verticals.extend((v..(v + cluster).min(n)).map(|x| x as u32));
        v += cluster + rng.below(150);
    }
    slashes.reverse();
    VsSelection { verticals, slashes }
}

/// VS with random (unclustered) selections, incl. varlen and offsets.
pub fn check_vs_random_selection_matches_masked_with<B: BackendTransfer>(
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
pub fn check_bs_matches_masked_with<B: BackendTransfer>(backend: &B, seed: u64, dtype: DType) -> Result<(), String> {
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
pub fn check_random_index_matches_masked_with<B: BackendTransfer>(
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
pub fn check_full_budget_equals_dense_with<B: BackendTransfer>(
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

pub(crate) fn perturb_after(case: &Case, seq: usize, key_after: usize, rng: &mut TestRng) -> Case {
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
pub fn check_causality_with<B: BackendTransfer>(backend: &B, seed: u64, dtype: DType) -> Result<(), String> {
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
pub fn check_column_permutation_with<B: BackendTransfer>(backend: &B, seed: u64, dtype: DType) -> Result<(), String> {
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
