//! Prints the preflight memory plan of named model shapes at several prompt lengths.
//!
//! cargo run -p minference-model --release --example memory_plan -- [DEVICE_GIB]   (default 78, one H100)

use minference_model::{plan_memory, ModelConfig};

fn main() {
    let device_gib: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(78.0);
    let device = (device_gib * (1u64 << 30) as f64) as u64;
    for shape in ["qwen2.5-7b", "llama-3-8b", "smollm2-135m"] {
        let Ok(cfg) = ModelConfig::named_shape(shape) else { continue };
        for n in [32_768usize, 131_072, 524_288, 1_048_576, 2_097_152] {
            match plan_memory(&cfg, n, device) {
                Ok(plan) => println!("{shape}: {}", plan.describe()),
                Err(e) => println!("{shape}: {n} tokens: refused: {e}"),
            }
        }
    }
}
