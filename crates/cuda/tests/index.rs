//! GPU index kernels against core: VS conversion bit-exact, VS and BS estimation equal to core's
//! selections up to float-summation near-ties, determinism.

use minference_backend_suite::{banded_vs_selection, random_vs_selection, varlen_shape};
use minference_core::{
    clamp_vs_budget, convert_vs_head, estimate_bs_head, estimate_vs_head, gather_last_q, generate_qkv, head_coverage,
    index_head_coverage, AttnShape, DType, HeadPattern, HostRoundTrip, OwnedTensor, RowBlockIndex, SeqLen, SparseIndex,
    SynthConfig, VsSelection,
};
use minference_cpu::rng::TestRng;
use std::collections::HashSet;

fn offsets_shape() -> AttnShape {
    AttnShape {
        heads: 4,
        kv_heads: 2,
        head_dim: 64,
        seqs: vec![
            SeqLen { q_len: 300, kv_len: 1000 },
            SeqLen { q_len: 65, kv_len: 65 },
            SeqLen { q_len: 1, kv_len: 130 },
        ],
    }
}

/// core's index for VS selections (BS/dense heads empty).
fn core_vs_index(shape: &AttnShape, patterns: &[HeadPattern], vs: &[VsSelection]) -> SparseIndex {
    let mut rows = Vec::new();
    for (b, seq) in shape.seqs.iter().enumerate() {
        for (h, p) in patterns.iter().enumerate() {
            if matches!(p, HeadPattern::VerticalSlash { .. }) {
                rows.extend(convert_vs_head(&vs[b * shape.heads + h], *seq).expect("valid selection"));
            } else {
                rows.extend(std::iter::repeat_n(RowBlockIndex::default(), seq.row_blocks()));
            }
        }
    }
    SparseIndex::from_slots(shape, rows).expect("index")
}

fn random_inputs(shape: &AttnShape, dtype: DType, seed: u64) -> (OwnedTensor, OwnedTensor) {
    let mut rng = TestRng::new(seed);
    (
        OwnedTensor::from_f32(&rng.normals(shape.q_elems()), dtype),
        OwnedTensor::from_f32(&rng.normals(shape.kv_elems()), dtype),
    )
}

#[test]
fn vs_conversion_is_bit_exact() {
    let Some(backend) = minference_test_support::cuda_backend() else {
        return;
    };
    let mut rng = TestRng::new(7);
    let mut shapes: Vec<AttnShape> =
        [1usize, 63, 64, 65, 300, 1000, 4133].iter().map(|&n| AttnShape::single(4, 2, 64, n)).collect();
    shapes.push(varlen_shape(2, 1, 64));
    shapes.push(offsets_shape());
    for shape in shapes {
        for &(k_v, k_s) in &[(30usize, 100usize), (100, 800), (1000, 200), (5, 60), (0, 3000)] {
            let patterns = vec![HeadPattern::VerticalSlash { k_v, k_s }; shape.heads];
            let mut vs = Vec::new();
            for seq in &shape.seqs {
                for h in 0..shape.heads {
                    let mut sel = random_vs_selection(*seq, k_v, k_s, &mut rng);
                    // Regression case (spec §8 item 10): no d = 0 but vertical 0 present.
                    if h == 1 && sel.slashes.len() > 1 {
                        sel.slashes.pop();
                    }
                    vs.push(sel);
                }
            }
            let (q, k) = random_inputs(&shape, DType::Bf16, 1);
            let gpu = backend.build_index(&shape, q.view(), k.view(), &patterns, &vs).expect("gpu index");
            let cpu = core_vs_index(&shape, &patterns, &vs);
            assert_eq!(gpu, cpu, "shape {:?} budget ({k_v}, {k_s})", shape.seqs);
        }
    }
}

#[test]
fn vs_conversion_is_bit_exact_on_banded_selections() {
    let Some(backend) = minference_test_support::cuda_backend() else {
        return;
    };
    let mut rng = TestRng::new(11);
    let mut shapes: Vec<AttnShape> = [63usize, 777, 4133].iter().map(|&n| AttnShape::single(3, 1, 64, n)).collect();
    shapes.push(offsets_shape());
    for shape in shapes {
        let mut vs = Vec::new();
        for seq in &shape.seqs {
            for _ in 0..shape.heads {
                vs.push(banded_vs_selection(seq.kv_len, &mut rng));
            }
        }
        let budget = shape.seqs.iter().map(|s| s.kv_len).max().unwrap_or(1);
        let patterns = vec![HeadPattern::VerticalSlash { k_v: budget, k_s: budget }; shape.heads];
        let (q, k) = random_inputs(&shape, DType::Bf16, 3);
        let gpu = backend.build_index(&shape, q.view(), k.view(), &patterns, &vs).expect("gpu index");
        assert_eq!(gpu, core_vs_index(&shape, &patterns, &vs), "shape {:?}", shape.seqs);
    }
}

#[test]
fn vs_conversion_full_budget_is_bit_exact() {
    let Some(backend) = minference_test_support::cuda_backend() else {
        return;
    };
    for n in [64usize, 500, 777] {
        let shape = AttnShape::single(2, 1, 128, n);
        let patterns = vec![HeadPattern::VerticalSlash { k_v: n, k_s: n }; 2];
        let full = VsSelection { verticals: (0..n as u32).collect(), slashes: (0..n as u32).rev().collect() };
        let vs = vec![full.clone(), full];
        let (q, k) = random_inputs(&shape, DType::Bf16, 2);
        let gpu = backend.build_index(&shape, q.view(), k.view(), &patterns, &vs).expect("gpu index");
        assert_eq!(gpu, core_vs_index(&shape, &patterns, &vs), "N={n}");
    }
}

fn overlap(a: &[u32], b: &[u32]) -> f64 {
    let sa: HashSet<u32> = a.iter().copied().collect();
    let common = b.iter().filter(|x| sa.contains(x)).count();
    common as f64 / a.len().max(1) as f64
}

fn core_vs(shape: &AttnShape, q: &OwnedTensor, k: &OwnedTensor, patterns: &[HeadPattern]) -> Vec<VsSelection> {
    let d = shape.head_dim;
    let mut out = vec![VsSelection::default(); shape.seqs.len() * shape.heads];
    for (b, seq) in shape.seqs.iter().enumerate() {
        for (h, p) in patterns.iter().enumerate() {
            let HeadPattern::VerticalSlash { k_v, k_s } = *p else {
                continue;
            };
            let q_last = gather_last_q(q.view(), h * shape.total_q() + shape.q_start(b), d, seq.q_len).expect("q_last");
            let k_row0 = shape.kv_head_of(h) * shape.total_kv() + shape.kv_start(b);
            out[b * shape.heads + h] =
                estimate_vs_head(&q_last, k.view(), k_row0, d, *seq, k_v, k_s).expect("core estimate");
        }
    }
    out
}

#[test]
fn vs_estimation_matches_core() {
    let Some(backend) = minference_test_support::cuda_backend() else {
        return;
    };
    let budgets = [(30usize, 100usize), (100, 800), (1000, 200), (3, 60), (500, 50)];
    let patterns: Vec<HeadPattern> =
        budgets.iter().map(|&(k_v, k_s)| HeadPattern::VerticalSlash { k_v, k_s }).collect();
    let shapes = [
        AttnShape::single(5, 1, 128, 3000),
        AttnShape::single(5, 5, 64, 700),
        AttnShape { heads: 5, kv_heads: 5, ..offsets_shape() },
    ];
    for shape in &shapes {
        for (mode, cfg) in [("random", SynthConfig::random()), ("structured", SynthConfig::structured())] {
            for dtype in [DType::F32, DType::Bf16] {
                let (qf, kf, _) = generate_qkv(shape, &cfg, 5);
                let (q, k) = (OwnedTensor::from_f32(&qf, dtype), OwnedTensor::from_f32(&kf, dtype));
                let gpu = backend.estimate_vs(shape, q.view(), k.view(), &patterns).expect("gpu estimate");
                let again = backend.estimate_vs(shape, q.view(), k.view(), &patterns).expect("gpu estimate");
                assert_eq!(gpu, again, "GPU estimate is not deterministic");
                let cpu = core_vs(shape, &q, &k, &patterns);
                for (i, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
                    let what = format!("{mode} {dtype:?} {:?} item {i}", shape.seqs);
                    let (b, h) = (i / shape.heads, i % shape.heads);
                    let HeadPattern::VerticalSlash { k_v, k_s } = patterns[h] else { unreachable!() };
                    let (kv, ks) = clamp_vs_budget(k_v, k_s, shape.seqs[b].kv_len);
                    assert_eq!((g.verticals.len(), g.slashes.len()), (kv, ks), "{what}: sizes");
                    assert!(g.verticals.windows(2).all(|w| w[0] < w[1]), "{what}: verticals ascending");
                    assert!(g.slashes.windows(2).all(|w| w[0] > w[1]), "{what}: slashes descending");
                    let (ov, os) = (overlap(&c.verticals, &g.verticals), overlap(&c.slashes, &g.slashes));
                    assert!(ov >= 0.97 && os >= 0.97, "{what}: overlap with core verticals {ov:.3}, slashes {os:.3}");
                }
            }
        }
    }
}

#[test]
fn bs_estimation_matches_core() {
    let Some(backend) = minference_test_support::cuda_backend() else {
        return;
    };
    let patterns = vec![
        HeadPattern::BlockSparse { k_b: 2 },
        HeadPattern::BlockSparse { k_b: 5 },
        HeadPattern::BlockSparse { k_b: 100 },
        HeadPattern::BlockSparse { k_b: 1 },
    ];
    // 66 000 keys: 1032 key blocks, more than one bs_scores span (kernels::BS_SPAN) per row.
    let long = AttnShape::single(4, 2, 64, 66_000);
    assert!(long.seqs[0].kv_len.div_ceil(64) > minference_cuda::kernels::BS_SPAN);
    for shape in [AttnShape::single(4, 2, 128, 3000), AttnShape::single(4, 4, 64, 64), offsets_shape(), long] {
        for cfg in [SynthConfig::random(), SynthConfig::structured()] {
            let (qf, kf, _) = generate_qkv(&shape, &cfg, 9);
            let (q, k) = (OwnedTensor::from_f32(&qf, DType::Bf16), OwnedTensor::from_f32(&kf, DType::Bf16));
            let vs = vec![VsSelection::default(); shape.seqs.len() * shape.heads];
            let gpu = backend.build_index(&shape, q.view(), k.view(), &patterns, &vs).expect("gpu index");
            let (mut same, mut total) = (0usize, 0usize);
            for (b, seq) in shape.seqs.iter().enumerate() {
                for (h, p) in patterns.iter().enumerate() {
                    let HeadPattern::BlockSparse { k_b } = *p else { unreachable!() };
                    let d = shape.head_dim;
                    let rows = estimate_bs_head(
                        q.view(),
                        h * shape.total_q() + shape.q_start(b),
                        k.view(),
                        shape.kv_head_of(h) * shape.total_kv() + shape.kv_start(b),
                        d,
                        *seq,
                        k_b,
                    )
                    .expect("core bs");
                    for (m, want) in rows.iter().enumerate() {
                        let got = gpu.tiles(gpu.slot(&shape, b, h, m));
                        assert_eq!(got.len(), want.tiles.len(), "seq {b} head {h} row block {m}: tile count");
                        assert!(got.windows(2).all(|w| w[0] < w[1]), "tiles ascending");
                        let first_pos = seq.offset() + 64 * m;
                        assert!(
                            got.contains(&0) && got.contains(&((first_pos / 64 * 64) as i32)),
                            "forced blocks kept"
                        );
                        let w: HashSet<i32> = want.tiles.iter().copied().collect();
                        same += got.iter().filter(|t| w.contains(t)).count();
                        total += got.len();
                    }
                }
            }
            let frac = same as f64 / total.max(1) as f64;
            assert!(frac >= 0.97, "BS selection overlap with core {frac:.4} on {:?}", shape.seqs);
        }
    }
}

/// The pairs a layer reports as computed (`LayerTimings::kernel_entries`, counted on the device)
/// are core's coverage of the index that layer built, head by head, on varlen batches with offsets.
#[test]
fn layer_pair_counts_are_cores_coverage_of_its_index() {
    let Some(gpu) = minference_test_support::gpu() else {
        return;
    };
    let backend = minference_cuda::CudaBackend::of(std::sync::Arc::clone(&gpu));
    let patterns = vec![
        HeadPattern::VerticalSlash { k_v: 40, k_s: 300 },
        HeadPattern::BlockSparse { k_b: 3 },
        HeadPattern::Dense,
        HeadPattern::AShape { n_init: 70, n_local: 200 },
    ];
    for shape in [offsets_shape(), AttnShape::single(4, 2, 64, 3000), AttnShape::single(4, 4, 128, 63)] {
        let mut rng = TestRng::new(11);
        let mut up = |n: usize| {
            let t = OwnedTensor::from_f32(&rng.normals(n), DType::Bf16);
            minference_cuda::DeviceTensor::upload(&gpu, t.view()).expect("upload")
        };
        let (q, k, v) = (up(shape.q_elems()), up(shape.kv_elems()), up(shape.kv_elems()));
        let mut out = minference_cuda::DeviceTensor::alloc(&gpu, DType::Bf16, shape.q_elems()).expect("alloc");
        let (t, index) =
            minference_cuda::layer_attention(&backend, &shape, &q, &k, &v, &patterns, &mut out).expect("layer");
        let index = index.expect("VS and BS heads build an index");
        let per_head = index.entries_per_head(&gpu, &shape).expect("device counts");
        let host = index.download(&gpu, &shape).expect("download");
        let (mut computed, mut causal) = (0u64, 0u64);
        for (h, p) in patterns.iter().enumerate() {
            let mut head = 0u64;
            for (b, seq) in shape.seqs.iter().enumerate() {
                let cov = if p.reads_index() {
                    index_head_coverage(p, &host, &shape, b, h).expect("coverage")
                } else {
                    head_coverage(p, &[], *seq).expect("coverage")
                };
                head += cov.entries;
                causal += cov.causal;
            }
            let want_device = if p.reads_index() { head } else { 0 };
            assert_eq!(per_head[h], want_device, "{:?} head {h} {p:?}: device count", shape.seqs);
            computed += head;
        }
        assert_eq!((t.kernel_entries, t.causal_entries), (computed, causal), "{:?}", shape.seqs);
        assert!(computed <= causal, "{:?}", shape.seqs);
        if shape.seqs[0].kv_len >= 1000 {
            assert!(computed < causal, "{:?}: the sparse heads skip pairs at this length", shape.seqs);
        }
    }
}
