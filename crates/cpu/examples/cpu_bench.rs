//! `cargo run -p minference-cpu --release --example cpu_bench -- [N ...] [--random] [--f32]
//! [--no-calibration] [--threads T]`
//! Prints the CPU benchmark's markdown table (until `minference bench cpu` wires it).

use minference_core::{DType, SynthConfig};
use minference_cpu::bench::{run_cpu_bench, CpuBenchConfig};

fn main() {
    let mut cfg = CpuBenchConfig::default();
    let mut lengths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--threads" => cfg.threads = args.next().and_then(|t| t.parse().ok()),
            "--random" => cfg.synth = SynthConfig::random(),
            "--f32" => cfg.dtype = DType::F32,
            "--no-calibration" => cfg.calibration_len = 0,
            n => match n.parse() {
                Ok(n) => lengths.push(n),
                Err(_) => {
                    eprintln!("unknown argument `{n}`");
                    std::process::exit(2);
                }
            },
        }
    }
    if !lengths.is_empty() {
        cfg.lengths = lengths;
    }
    match run_cpu_bench(&cfg) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
