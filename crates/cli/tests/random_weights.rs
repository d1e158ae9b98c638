//! The `minference` binary on random weights, on the CPU: `run --random-weights`. No timing is
//! asserted.

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
