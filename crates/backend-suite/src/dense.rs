//! Dense attention against the f64 reference: lengths at the block edges, half dtypes, varlen
//! batches with offsets, mixed patterns, every row written.

use super::*;

/// Dense == f64 reference for every length of [`LENGTHS`], D ∈ {64, 128, 96}, GQA ratios 1/3/4/7.
pub fn check_dense_matches_reference_with<B: BackendTransfer>(
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
pub fn check_dense_half_dtypes<B: BackendTransfer>(backend: &B, seed: u64) -> Result<(), String> {
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
pub fn check_varlen_offsets_with<B: BackendTransfer>(backend: &B, seed: u64, dtype: DType) -> Result<(), String> {
    let case = Case::random(varlen_shape(8, 2, 64), dtype, seed);
    dense_vs_reference(backend, &case, "dense varlen")?;
    sparse_vs_masked(backend, &case, &mixed_patterns(8), None, "mixed patterns varlen").map(|_| ())
}

/// Mixed patterns on an arbitrary shape and dtype (for property tests over random shapes).
pub fn check_mixed_patterns_on<B: BackendTransfer>(
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

/// Every valid row is finite and written (non-zero for random V), for lengths at block edges and
/// the first row block (row 0 sees only key 0) (spec §8 item 20).
pub fn check_no_nan_every_row_written<B: BackendTransfer>(backend: &B, seed: u64) -> Result<(), String> {
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
pub fn check_padding_independence_with<B: BackendTransfer>(backend: &B, seed: u64, dtype: DType) -> Result<(), String> {
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
pub fn check_short_prompt_vs_equals_dense_with<B: BackendTransfer>(
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
pub fn check_dense_pattern_equals_dense<B: BackendTransfer>(backend: &B, seed: u64) -> Result<(), String> {
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
pub fn check_rejects_bad_input<B: BackendTransfer>(backend: &B, seed: u64) -> Result<(), String> {
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
        pub fn $f32<B: BackendTransfer>(backend: &B, seed: u64) -> Result<(), String> {
            $with(backend, seed, DType::F32)
        }
        pub fn $bf16<B: BackendTransfer>(backend: &B, seed: u64) -> Result<(), String> {
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
    check_adaptive_vs_matches_masked_with => check_adaptive_vs_matches_masked, check_adaptive_vs_matches_masked_bf16;
    check_bs_matches_masked_with => check_bs_matches_masked, check_bs_matches_masked_bf16;
    check_random_index_matches_masked_with => check_random_index_matches_masked, check_random_index_matches_masked_bf16;
    check_full_budget_equals_dense_with => check_full_budget_equals_dense, check_full_budget_equals_dense_bf16;
    check_causality_with => check_causality, check_causality_bf16;
    check_column_permutation_with => check_column_permutation, check_column_permutation_bf16;
    check_padding_independence_with => check_padding_independence, check_padding_independence_bf16;
    check_short_prompt_vs_equals_dense_with => check_short_prompt_vs_equals_dense, check_short_prompt_vs_equals_dense_bf16;
}
