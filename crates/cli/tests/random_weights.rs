//! The `minference` binary on random weights, on the CPU: `run --random-weights`, and a small
//! `bench serve` run end to end (the server in-process, HTTP on loopback). No timing is asserted.

use std::path::PathBuf;
use std::process::{Command, Output};

fn minference(args: &[&str]) -> Output {
    // In a scratch folder: nothing the binary writes lands in the checkout.
    let dir = scratch("cwd");
    Command::new(env!("CARGO_BIN_EXE_minference"))
        .args(args)
        .current_dir(&dir)
        .env_remove("MINFERENCE_API_KEY")
        .output()
        .unwrap_or_else(|e| panic!("starting minference: {e}"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("minference-cli-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The cells of the markdown row that starts with `start`.
fn row<'a>(table: &'a str, start: &str) -> Vec<&'a str> {
    let line = table.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no row `{start}`:\n{table}"));
    line.trim_matches('|').split('|').map(str::trim).collect()
}

#[test]
fn run_with_random_weights_prints_token_ids_and_its_report() {
    let tiny = ["--device", "cpu", "--random-weights", "smollm2-135m", "--layers", "1"];
    let out = minference(&[&["run"], &tiny[..], &["--prompt-tokens", "64", "--max-new-tokens", "3"]].concat());
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let ids: Vec<u32> = stdout.split_whitespace().map(|t| t.parse().unwrap_or(u32::MAX)).collect();
    assert_eq!(ids.len(), 3, "{stdout}");
    assert!(ids.iter().all(|&id| id < 49152), "{stdout}");
    assert!(stderr.contains("random weights") && stderr.contains("prompt 64 seeded token ids"), "{stderr}");
    assert!(stderr.contains("time to first token"), "{stderr}");

    // No tokenizer: a text prompt is refused with what to do instead.
    let out = minference(&[&["run"], &tiny[..], &["--prompt", "hello"]].concat());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--prompt-tokens"), "{}", text(&out.stderr));
}

#[test]
fn bench_serve_smoke_on_a_tiny_random_model() {
    let csv = scratch("csv").join("serve.csv");
    let csv_arg = csv.display().to_string();
    let out = minference(&[
        "bench",
        "serve",
        "--device",
        "cpu",
        "--random-weights",
        "smollm2-135m",
        "--layers",
        "1",
        "--prompt-tokens",
        "256",
        "--reps",
        "1",
        "--requests",
        "8",
        "--csv",
        &csv_arg,
    ]);
    let (table, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}\n{table}");
    assert!(table.contains("256-token prompt") && table.contains("random weights"), "{table}");
    assert_eq!(row(&table, "| 1 |")[1], "run", "{table}");
    for label in ["| best |", "| median |"] {
        let cells = row(&table, label);
        assert!(cells[2].parse::<f64>().is_ok_and(|s| s > 0.0), "{label}: {cells:?}");
        assert!(cells[6].parse::<f64>().is_ok_and(|r| r > 0.0), "{label}: {cells:?}");
    }
    let load = row(&table, "| 8 | 8 |");
    assert_eq!(load.len(), 9, "{load:?}");
    assert_eq!((load[7], load[8]), ("0", "0"), "non-200 and stream errors: {table}");
    assert!(load[3].parse::<f64>().is_ok_and(|r| r > 0.0), "requests/s: {load:?}");
    assert!(load[4].parse::<f64>().is_ok_and(|t| t > 0.0), "generated tokens/s: {load:?}");

    let csv = std::fs::read_to_string(&csv).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("model,device,") && lines[0].contains("non_200,stream_errors,date,commit"));
}
