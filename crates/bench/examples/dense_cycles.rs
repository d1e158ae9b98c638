//! Dense attention on one thread for micro-kernel tuning: run under `perf stat -e cycles` so that
//! the figure does not depend on other load on the machine.
//! `RAYON_NUM_THREADS=1 cargo run -p minference-bench --release --example dense_cycles -- [N] [--portable]`

use minference_backend_suite::Case;
use minference_bench::process_cpu_seconds;
use minference_core::{AttentionBackend, AttnShape, DType, HeadPattern};
use minference_cpu::CpuBackend;

fn main() {
    let mut n = 4096;
    let mut backend = CpuBackend::new();
    for arg in std::env::args().skip(1) {
        if arg == "--portable" {
            backend = CpuBackend::portable();
        } else if let Ok(x) = arg.parse() {
            n = x;
        }
    }
    let case = Case::random(AttnShape::single(4, 1, 128, n), DType::Bf16, 1);
    let flops = case.shape.dense_causal_flops();
    let reps = 5;
    let dense = vec![HeadPattern::Dense; case.shape.heads];
    let mut out = Vec::new();
    let (t0, cpu0) = (std::time::Instant::now(), process_cpu_seconds().unwrap_or(0.0));
    for _ in 0..reps {
        if let Err(e) = backend.attend(&case.shape, case.q.view(), case.k.view(), case.v.view(), &dense, None, &mut out)
        {
            eprintln!("error: {e}");
            return;
        }
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), process_cpu_seconds().unwrap_or(0.0) - cpu0);
    println!(
        "{}: N={n} wall {:.1} GF/s, per CPU-second {:.1} GF/s",
        backend.name(),
        reps as f64 * flops / wall / 1e9,
        reps as f64 * flops / cpu / 1e9
    );
    let sgemm = minference_bench::sgemm_rate(1024, 20);
    println!("sgemm 1024³: best wall {:.1} GF/s, per CPU-second {:?} GF/s", sgemm.wall_gflops, sgemm.per_core_gflops);
}
