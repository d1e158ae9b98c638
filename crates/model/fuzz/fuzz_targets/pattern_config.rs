//! MInference pattern config JSON → parser, model check, lookups, ratio scaling, plan building.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minference_core::ModelPatternConfig;
use minference_model::{MInferencePlan, ModelConfig};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(config) = ModelPatternConfig::from_json_str(&text, "fuzz.json") else { return };
    let _ = config.to_json_string();
    let _ = config.with_ratio(0.5);
    let _ = config.pattern_for_rank(0, 1, 2, 3);
    if let Ok(shape) = ModelConfig::named_shape("smollm2-135m") {
        let _ = MInferencePlan::from_config(&shape, &config);
    }
});
