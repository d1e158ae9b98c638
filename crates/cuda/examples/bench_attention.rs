//! Attention benchmark (until `minference bench attention` is wired in the CLI).
//!
//! bench_attention [--lengths 16k,32k,...] [--sets vs-mix,vs,bs,ashape] [--regimes structured,random]
//!                 [--dense-max N] [--random-max N] [--reps R] [--qk-file captured.safetensors]

use minference_cuda::bench::{format_row, run_attention_bench, BenchConfig, PatternSet, Regime, TABLE_HEADER};
use minference_cuda::{CudaError, Gpu};

fn parse_len(s: &str) -> Option<usize> {
    let s = s.trim().to_ascii_lowercase();
    if let Some(x) = s.strip_suffix('k') {
        x.parse::<usize>().ok().map(|v| v * 1024)
    } else if let Some(x) = s.strip_suffix('m') {
        x.parse::<usize>().ok().map(|v| v * 1024 * 1024)
    } else {
        s.parse().ok()
    }
}

fn main() {
    let mut cfg = BenchConfig::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < args.len() {
        let v = &args[i + 1];
        match args[i].as_str() {
            "--lengths" => cfg.lengths = v.split(',').filter_map(parse_len).collect(),
            "--dense-max" => cfg.dense_max = parse_len(v).unwrap_or(cfg.dense_max),
            "--random-max" => cfg.random_max = parse_len(v).unwrap_or(cfg.random_max),
            "--reps" => cfg.reps = v.parse().unwrap_or(cfg.reps),
            "--qk-file" => cfg.qk_file = Some(v.into()),
            "--sets" => {
                cfg.sets = v
                    .split(',')
                    .filter_map(|s| match s {
                        "vs-mix" => Some(PatternSet::LlamaMix),
                        "vs" => Some(PatternSet::VsOnly),
                        "bs" => Some(PatternSet::BsTop100),
                        "ashape" => Some(PatternSet::AShape),
                        _ => None,
                    })
                    .collect()
            }
            "--regimes" => {
                cfg.regimes = v
                    .split(',')
                    .filter_map(|s| match s {
                        "structured" => Some(Regime::Structured),
                        "random" => Some(Regime::Random),
                        _ => None,
                    })
                    .collect()
            }
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    let gpu = match Gpu::open(0) {
        Ok(g) => g,
        Err(CudaError::NoGpu(m)) => {
            eprintln!("no GPU: {m}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!("card: {}", gpu.name());
    println!("{TABLE_HEADER}");
    let res = run_attention_bench(&gpu, &cfg, |r| println!("{}", format_row(r)));
    if let Err(e) = res {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}
