//! Captures real Q and K (after RoPE) of one layer and head of the default model into a
//! safetensors file, for attention benchmarks on real sparse indices.
//!
//! cargo run -p minference-engine --release --example capture_qk -- [TOKENS] [LAYER] [HEAD] [OUT] [TEXT_FILE]
//! Defaults: 8192 tokens (the model's context), layer 15, head 0, out/qk_l15_h0.safetensors; the
//! prompt is TEXT_FILE's contents (repeated to length) or a generated document with a needle.

use minference_cpu::CpuBackend;
use minference_engine::{save_qk, CpuEngine as Engine};
use minference_model::Model;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg =
        |i: usize, d: usize| -> Result<usize, std::num::ParseIntError> { args.get(i).map_or(Ok(d), |s| s.parse()) };
    let (n, layer, head) = (arg(0, 8192)?, arg(1, 15)?, arg(2, 0)?);
    let out =
        args.get(3).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(format!("out/qk_l{layer}_h{head}.safetensors")));
    let model = Model::load(&minference_model::ensure_default_model()?)?;
    let tok = model.tokenizer()?;
    let base = match args.get(4) {
        Some(path) => std::fs::read_to_string(path)?,
        None => generated_document(),
    };
    let mut ids = Vec::new();
    while ids.len() < n {
        ids.extend(tok.encode(&base)?);
    }
    ids.truncate(n);
    let name = model.config().name.clone();
    let mut engine = Engine::new(model, CpuBackend::new());
    let qk = engine.capture_qk(&ids, layer, head)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    save_qk(&out, &qk, &name)?;
    println!("wrote {} (layer {layer}, head {head}, {} tokens, head dim {})", out.display(), qk.tokens, qk.head_dim);
    Ok(())
}

/// A long structured document: sections, lists of facts, and one needle in the middle.
fn generated_document() -> String {
    let mut s = String::from("# Annual report of the northern railway company\n\n");
    for section in 0..40 {
        s.push_str(&format!("## Section {section}: operations in district {}\n", section * 3 + 1));
        for i in 0..6 {
            s.push_str(&format!(
                "- Station {}-{i} handled {} passengers and {} tonnes of freight; delays averaged {} minutes.\n",
                section,
                (section * 131 + i * 17) % 9000 + 1000,
                (section * 71 + i * 29) % 500,
                (section + i) % 13
            ));
        }
        if section == 20 {
            s.push_str("\nNote: the access code for the archive room is 7-4-1-9-2. Keep it confidential.\n");
        }
        s.push('\n');
    }
    s
}
