//! `cargo run --release -p minference-engine-gpu --example bench_e2e -- --shape qwen2.5-7b
//!  --lengths 32k,128k --attention dense,minference [--dense-max 128k] [--csv out.csv]`
//! (the CLI's `minference bench e2e` calls the same `bench_e2e`).

use minference_cuda::Gpu;
use minference_engine_gpu::{bench_e2e, E2eAttention, E2eOptions};
use std::sync::Arc;

fn parse_len(s: &str) -> Result<usize, String> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mul) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1usize << 10),
        Some('m') => (&s[..s.len() - 1], 1usize << 20),
        _ => (s.as_str(), 1),
    };
    num.parse::<usize>()
        .map(|v| v * mul)
        .map_err(|e| format!("bad length `{s}`: {e}"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let shape = get("--shape").unwrap_or_else(|| "qwen2.5-7b".into());
    let lengths = get("--lengths")
        .unwrap_or_else(|| "32k,128k".into())
        .split(',')
        .map(parse_len)
        .collect::<Result<Vec<_>, _>>()?;
    let kinds = get("--attention")
        .unwrap_or_else(|| "dense,minference".into())
        .split(',')
        .map(E2eAttention::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let mut opts = E2eOptions::default();
    if let Some(m) = get("--dense-max") {
        opts.dense_max_tokens = Some(parse_len(&m)?);
    }
    let gpu = Arc::new(Gpu::open(0)?);
    let table = bench_e2e(gpu, &shape, &lengths, &kinds, &opts, &mut |line| {
        eprintln!("{line}")
    })?;
    println!("{}", table.to_markdown());
    if let Some(path) = get("--csv") {
        std::fs::write(&path, table.to_csv())?;
        eprintln!("wrote {path}");
    }
    Ok(())
}
