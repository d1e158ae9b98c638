//! CPU-specific documented behaviour that the generic suite leaves to each backend.

use minference_backend_suite::{Case, KernelMask};
use minference_core::{
    AttentionBackend, AttnShape, DType, HeadPattern, HostRoundTrip, HostTensor, RowBlockIndex, SparseIndex,
};
use minference_cpu::reference::masked_attention_f64_flagged;
use minference_cpu::{CpuBackend, CpuError};

/// A row whose kernel mask is empty gets output 0, and the reference flags exactly those rows.
#[test]
fn empty_mask_rows_are_zero_and_flagged() {
    let shape = AttnShape::single(1, 1, 64, 130);
    let case = Case::random(shape.clone(), DType::F32, 5);
    // Row block 1 (rows 64..127): one tile at key 100 → rows 64..99 see nothing. Block 0 and 2: empty.
    let rows =
        vec![RowBlockIndex::default(), RowBlockIndex { tiles: vec![100], columns: vec![] }, RowBlockIndex::default()];
    let index = SparseIndex::from_slots(&shape, rows).expect("valid index");
    let patterns = [HeadPattern::VerticalSlash { k_v: 30, k_s: 100 }];
    let (q, k, v) = (case.q.view(), case.k.view(), case.v.view());
    let out = CpuBackend::new().sparse(&shape, q, k, v, &patterns, &index).expect("sparse runs");
    let mask = KernelMask::new(&shape, &patterns, &index);
    let reference = masked_attention_f64_flagged(&shape, q, k, v, |b, h, i, j| mask.keeps(b, h, i, j));
    let empty: Vec<usize> = reference.empty_rows.iter().map(|&(_, _, i)| i).collect();
    let expected: Vec<usize> = (0..64).chain(64..100).chain(128..130).collect();
    assert_eq!(empty, expected);
    for (i, row) in out.chunks(64).enumerate() {
        let zero = row.iter().all(|&x| x == 0.0);
        assert_eq!(zero, expected.contains(&i), "row {i}");
        let want = &reference.out[i * 64..(i + 1) * 64];
        assert!(row.iter().zip(want).all(|(a, b)| (*a as f64 - b).abs() < 1e-4), "row {i}");
    }
}

/// NaN/Inf anywhere in Q, K or V is rejected with `NonFinite`, naming the tensor.
#[test]
fn non_finite_inputs_are_rejected_by_name() {
    let shape = AttnShape::single(2, 1, 64, 10);
    let case = Case::random(shape.clone(), DType::F32, 1);
    let mut v = case.v.view().to_f32_vec();
    v[3] = f32::NEG_INFINITY;
    let err = CpuBackend::new().dense(&shape, case.q.view(), case.k.view(), HostTensor::F32(&v));
    assert_eq!(err, Err(CpuError::NonFinite("v")));
}

/// The index must fit the shape: a slot table for another shape is an error, not a panic.
#[test]
fn index_of_another_shape_is_rejected() {
    let shape = AttnShape::single(2, 1, 64, 130);
    let other = AttnShape::single(2, 1, 64, 200);
    let case = Case::random(shape.clone(), DType::F32, 1);
    let patterns = [HeadPattern::BlockSparse { k_b: 2 }; 2];
    let result = CpuBackend::new().sparse(
        &shape,
        case.q.view(),
        case.k.view(),
        case.v.view(),
        &patterns,
        &SparseIndex::empty(&other),
    );
    assert!(matches!(result, Err(CpuError::InvalidIndex(_))), "{result:?}");
}

/// On the CPU the dense path and a `Dense` head of `sparse` are the same mainloop with the same
/// iterator, so their outputs are bit-identical (decode steps and dense layers agree exactly).
#[test]
fn dense_pattern_is_bit_identical_to_dense() {
    let shape = minference_backend_suite::varlen_shape(4, 2, 64);
    let case = Case::random(shape.clone(), DType::Bf16, 9);
    let (q, k, v) = (case.q.view(), case.k.view(), case.v.view());
    let backend = CpuBackend::new();
    let dense = backend.dense(&shape, q, k, v).expect("dense runs");
    let patterns = vec![HeadPattern::Dense; shape.heads];
    let sparse = backend.sparse(&shape, q, k, v, &patterns, &SparseIndex::empty(&shape)).expect("sparse runs");
    assert!(dense.iter().zip(&sparse).all(|(a, b)| a.to_bits() == b.to_bits()));
}

/// A dedicated pool gives the same results as the global one (work items are independent).
#[test]
fn dedicated_thread_pool_matches_global_pool() {
    let shape = AttnShape::single(4, 1, 64, 200);
    let case = Case::random(shape.clone(), DType::F32, 4);
    let (q, k, v) = (case.q.view(), case.k.view(), case.v.view());
    let single = CpuBackend::new().with_threads(1).expect("pool starts");
    assert!(single.name().contains("1 threads"), "{}", single.name());
    let a = single.dense(&shape, q, k, v).expect("dense runs");
    let b = CpuBackend::new().dense(&shape, q, k, v).expect("dense runs");
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

/// The tiles the CPU iterators visit are exactly what core's coverage accounting charges
/// (`tiles64 + gather_groups` per head), so the bench's executed-FLOP figures describe real work.
#[test]
fn iterated_tiles_match_core_coverage() {
    use minference_backend_suite::{mixed_patterns, varlen_shape};
    use minference_core::{index_head_coverage, TILE};
    use minference_cpu::tiles::{AShapeMask, KeyTile, RowSpan, TileIter};

    let shape = varlen_shape(8, 2, 64);
    let case = Case::random(shape.clone(), DType::F32, 3);
    let patterns = mixed_patterns(shape.heads);
    let backend = CpuBackend::new();
    let (q, k) = (case.q.view(), case.k.view());
    let vs = backend.estimate_vs(&shape, q, k, &patterns).expect("estimate runs");
    let index = backend.build_index(&shape, q, k, &patterns, &vs).expect("index builds");
    for (b, seq) in shape.seqs.iter().enumerate() {
        for (h, pattern) in patterns.iter().enumerate() {
            let mut visited = 0u64;
            for m in 0..seq.row_blocks() {
                let first = seq.offset() + m * TILE;
                let last = (first + TILE - 1).min(seq.kv_len - 1);
                let span = RowSpan { first, last, kv_len: seq.kv_len };
                let slot = index.slot(&shape, b, h, m);
                let tiles = match *pattern {
                    HeadPattern::Dense => TileIter::dense(span),
                    HeadPattern::AShape { n_init, n_local } => TileIter::ashape(span, AShapeMask { n_init, n_local }),
                    _ => TileIter::index(index.tiles(slot), index.columns(slot), seq.kv_len),
                };
                visited +=
                    tiles.filter(|t| !matches!(t, KeyTile::Range { start, end, .. } if start == end)).count() as u64;
            }
            let cov = index_head_coverage(pattern, &index, &shape, b, h).expect("coverage");
            assert_eq!(visited, cov.tiles64 + cov.gather_groups, "sequence {b} head {h} {pattern:?}");
        }
    }
}
