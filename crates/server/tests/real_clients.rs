//! SmolLM2 through the server when it is present, and the official `openai` Python client when it
//! is installed.

mod harness;

use harness::*;
use minference_engine::{cpu_engine, PrefillEngine};
use minference_model::Model;
use minference_server::{EngineFactory, Server, ServerConfig};
use serde_json::json;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_answers_when_present() {
    let Some(path) = minference_test_support::default_model() else {
        return;
    };
    let model = Arc::new(Model::load(&path).unwrap_or_else(|e| panic!("{e}")));
    let mut cfg = ServerConfig::new("smollm2");
    cfg.max_tokens_cap = 32;
    let m = Arc::clone(&model);
    let factory: EngineFactory = Box::new(move || Ok(vec![Box::new(cpu_engine(m)) as Box<dyn PrefillEngine>]));
    let base = spawn(Server::start(model, cfg, factory).unwrap_or_else(|e| panic!("{e}"))).await;
    let body = json!({"model": "smollm2", "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16, "temperature": 0});
    let (s, v) = post(&client(), &format!("{base}/v1/chat/completions"), &body).await;
    assert_eq!(s, 200, "{v}");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    assert!(text.contains("Paris"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_client() {
    let has_openai =
        std::process::Command::new("python3").args(["-c", "import openai"]).output().is_ok_and(|o| o.status.success());
    if !has_openai {
        eprintln!("skipped: the `openai` Python package is not installed (python3 -m pip install openai)");
        return;
    }
    let mut cfg = config();
    cfg.api_key = Some("test-key".into());
    let base = start(cfg, 2, Hooks::default()).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(format!("{base}/v1"))
        .arg(MODEL)
        .arg("test-key")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openai client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
}
