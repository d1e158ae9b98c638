//! GGUF bytes → reader, every tensor's dequantization, config, weights and tokenizer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minference_model::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else { return };
    for t in file.tensors.clone() {
        let _ = file.tensor_f32(&t.name);
    }
    let _ = minference_model::Tokenizer::from_gguf(&file);
    let _ = minference_model::Model::from_gguf(&file);
});
