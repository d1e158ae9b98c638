//! Prints how long the CPU reference steps take on one 64K-token head (no thresholds: timing
//! depends on the machine). Run with `--nocapture` to see the figures.

use std::time::Instant;

use minference_core::{
    convert_vs_head, estimate_bs_head, estimate_vs_head, gather_last_q, generate_qkv, head_coverage, AttnShape,
    HeadPattern, HostTensor, SeqLen, SynthConfig,
};

#[test]
fn one_head_at_64k() {
    let (n, d) = (1 << 16, 128);
    let shape = AttnShape::single(1, 1, d, n);
    let (q, k, _) = generate_qkv(&shape, &SynthConfig::structured(), 2);
    let seq = SeqLen::prefill(n);

    let t = Instant::now();
    let q_last = gather_last_q(HostTensor::F32(&q), 0, d, n).unwrap();
    let sel = estimate_vs_head(&q_last, HostTensor::F32(&k), 0, d, seq, 1000, 6096).unwrap();
    let t_est = t.elapsed();
    let t = Instant::now();
    let rows = convert_vs_head(&sel, seq).unwrap();
    let t_conv = t.elapsed();
    let cov = head_coverage(&HeadPattern::VerticalSlash { k_v: 1000, k_s: 6096 }, &rows, seq).unwrap();
    let t = Instant::now();
    let bs = estimate_bs_head(HostTensor::F32(&q), 0, HostTensor::F32(&k), 0, d, seq, 100).unwrap();
    let t_bs = t.elapsed();
    println!(
        "64K head, D=128: VS estimate {:.0} ms, convert {:.1} ms (density {:.1}%, {} tiles), BS estimate {:.0} ms",
        t_est.as_secs_f64() * 1e3,
        t_conv.as_secs_f64() * 1e3,
        100.0 * cov.density(),
        cov.tiles64,
        t_bs.as_secs_f64() * 1e3
    );
    assert_eq!(bs.len(), seq.row_blocks());
}
