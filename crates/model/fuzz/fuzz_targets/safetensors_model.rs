//! `config.json` text + safetensors shard bytes → config parser, shard index, model weights.
//! Input layout: u16 little-endian length of the config text, the text, then one shard.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minference_model::source::{SafetensorsDir, TensorSource};
use minference_model::{Model, ModelConfig, ModelError};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let config = String::from_utf8_lossy(&data[2..2 + n]).into_owned();
    let shard = data[2 + n..].to_vec();
    let _ = ModelConfig::from_hf_json(&config);
    let Ok(dir) = SafetensorsDir::from_shard_bytes(vec![shard]) else { return };
    let names: Vec<String> = dir.names().map(str::to_string).collect();
    for name in &names {
        let _ = dir.load_f32(name);
    }
    let _ = Model::from_safetensors(&config, &dir, Err(ModelError::Tokenizer("none".into())));
});
