//! MInference configs inside an HF `config.json` (`sparse_attention_config`, issue 14 item 4).
//!
//! Fixtures (hand-written, not generated): `fixtures/hf_config_two_layers.json` is a trimmed
//! Llama `config.json` whose `sparse_attention_config` is `fixtures/minference_two_layers.json`
//! verbatim, with `sparse_attention_threshold` 4096; `fixtures/hf_config_no_key.json` is the same
//! model keys without any sparse-attention key. Edit them by hand; the tests below say what they
//! must hold.

use minference_core::hf_config::{HF_DEFAULT_LAST_Q, HF_DEFAULT_THRESHOLD};
use minference_core::{
    is_hf_config, read_hf_config, write_hf_config, HeadEntry, HeadPattern, LayerPatterns, ModelPatternConfig,
};
use proptest::prelude::*;

const HF: &str = include_str!("fixtures/hf_config_two_layers.json");
const HF_NO_KEY: &str = include_str!("fixtures/hf_config_no_key.json");
const MINFERENCE: &str = include_str!("fixtures/minference_two_layers.json");

#[test]
fn reads_the_key_and_its_settings() {
    assert!(is_hf_config(HF) && !is_hf_config(MINFERENCE));
    let hf = read_hf_config(HF, "config.json").unwrap();
    assert_eq!(hf.patterns, ModelPatternConfig::from_json_str(MINFERENCE, "m.json").unwrap());
    assert_eq!((hf.enabled, hf.threshold, hf.last_q, hf.nested), (true, 4096, 64, false));
    hf.patterns.validate_model(2, 4).unwrap();
}

#[test]
fn defaults_apply_and_the_nested_dual_chunk_form_is_read() {
    let text = format!(
        r#"{{"model_type": "qwen2", "dual_chunk_attention_config": {{"chunk_size": 262144, "sparse_attention_config": {MINFERENCE}}}}}"#
    );
    let hf = read_hf_config(&text, "c.json").unwrap();
    assert_eq!((hf.enabled, hf.threshold, hf.last_q, hf.nested), (true, HF_DEFAULT_THRESHOLD, HF_DEFAULT_LAST_Q, true));
    assert_eq!(hf.patterns.layers.len(), 2);
    // Writing updates the nested key and keeps chunk_size.
    let written = write_hf_config(&text, &ModelPatternConfig::uniform(2, 4, HeadPattern::Dense), "c.json").unwrap();
    let back = read_hf_config(&written, "c.json").unwrap();
    assert!(back.nested && written.contains("262144"), "{written}");
    assert_eq!(back.patterns, ModelPatternConfig::uniform(2, 4, HeadPattern::Dense));
}

#[test]
fn a_config_without_the_key_names_it() {
    let e = read_hf_config(HF_NO_KEY, "models/x/config.json").unwrap_err().to_string();
    assert!(e.contains("sparse_attention_config") && e.contains("models/x/config.json"), "{e}");
    assert!(e.contains("--hf-config"), "{e}");
    // A null key is absent too, and writing fills it in place.
    let null = r#"{"model_type": "llama", "sparse_attention_config": null, "torch_dtype": "bfloat16"}"#;
    assert!(read_hf_config(null, "c.json").unwrap_err().to_string().contains("no `sparse_attention_config` key"));
    let cfg = ModelPatternConfig::uniform(1, 2, HeadPattern::DEFAULT);
    let written = write_hf_config(null, &cfg, "c.json").unwrap();
    assert!(written.find("sparse_attention_config") < written.find("torch_dtype"), "{written}");
    assert_eq!(read_hf_config(&written, "c.json").unwrap().patterns, cfg);
}

#[test]
fn malformed_settings_are_errors_naming_the_key() {
    let cases: &[(&str, &str)] = &[
        (r#"{"sparse_attention_config": "sparse.json"}"#, "not a file name"),
        (r#"{"sparse_attention_config": {"0": {}}}"#, "per-layer list"),
        (r#"{"sparse_attention_config": [{"0": ["diagonal", 1, 2, 0]}]}"#, "layer 0, head \"0\""),
        (r#"{"sparse_attention_config": [1]}"#, "sparse_attention_config"),
        (r#"{"sparse_attention_config": [], "sparse_attention_threshold": -1}"#, "sparse_attention_threshold"),
        (r#"{"sparse_attention_config": [], "sparse_attention_threshold": "32k"}"#, "sparse_attention_threshold"),
        (r#"{"sparse_attention_config": [], "sparse_attention_last_q": 0}"#, "sparse_attention_last_q"),
        (r#"{"sparse_attention_config": [], "sparse_attention_enabled": 1}"#, "sparse_attention_enabled"),
        ("[{}]", "JSON object"),
        ("{", "JSON"),
    ];
    for (text, needle) in cases {
        let e = read_hf_config(text, "config.json").unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains("config.json"), "{text}: {e}");
    }
}

#[test]
fn writing_keeps_other_keys_in_order_and_adds_the_key_when_absent() {
    let cfg = ModelPatternConfig::from_json_str(MINFERENCE, "m.json").unwrap();
    let written = write_hf_config(HF_NO_KEY, &cfg, "config.json").unwrap();
    let keys: Vec<usize> =
        ["architectures", "model_type", "num_hidden_layers", "torch_dtype", "sparse_attention_config"]
            .iter()
            .map(|k| written.find(&format!("\"{k}\"")).unwrap_or_else(|| panic!("{k} missing: {written}")))
            .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "order not kept: {written}");
    assert!(written.ends_with("}\n"));
    assert_eq!(read_hf_config(&written, "config.json").unwrap().patterns, cfg);
    // Replacing keeps the threshold the file had.
    let replaced =
        write_hf_config(HF, &ModelPatternConfig::uniform(2, 4, HeadPattern::DEFAULT), "config.json").unwrap();
    let back = read_hf_config(&replaced, "config.json").unwrap();
    assert_eq!(back.threshold, 4096);
    assert_eq!(back.patterns, ModelPatternConfig::uniform(2, 4, HeadPattern::DEFAULT));
    assert!(write_hf_config("[1, 2]", &cfg, "config.json").is_err());
}

fn pattern_strategy() -> impl Strategy<Value = HeadPattern> {
    prop_oneof![
        Just(HeadPattern::Dense),
        (1usize..100_000, 1usize..100_000).prop_map(|(k_v, k_s)| HeadPattern::VerticalSlash { k_v, k_s }),
        (1usize..10_000, 1usize..10_000).prop_map(|(n_init, n_local)| HeadPattern::AShape { n_init, n_local }),
        (1usize..1000).prop_map(|k_b| HeadPattern::BlockSparse { k_b }),
        (1u32..=1_000_000, 0usize..5000, 0usize..5000, 1usize..100_000, 1usize..100_000).prop_map(
            |(gamma_ppm, a, b, max_v, max_s)| HeadPattern::AdaptiveVs {
                gamma_ppm,
                min_v: a.min(max_v),
                max_v,
                min_s: b.min(max_s),
                max_s,
            }
        ),
    ]
}

proptest! {
    #[test]
    fn write_into_hf_then_read_round_trips(
        layers in prop::collection::vec(
            prop::collection::btree_map(0usize..64, (pattern_strategy(), 0u32..1_000_000), 0..8), 0..5),
        extra in prop::collection::btree_map("[a-z_]{1,12}", -1000i64..1000, 0..6),
        threshold in prop::option::of(0usize..1_000_000),
    ) {
        let cfg = ModelPatternConfig {
            layers: layers.into_iter().map(|heads| LayerPatterns {
                heads: heads.into_iter().map(|(h, (pattern, s))| (h, HeadEntry { pattern, score: s as f64 })).collect(),
            }).collect(),
        };
        let mut base = serde_json::Map::new();
        for (k, v) in &extra {
            base.insert(k.clone(), (*v).into());
        }
        if let Some(t) = threshold {
            base.insert("sparse_attention_threshold".into(), t.into());
        }
        let text = serde_json::to_string(&base).unwrap();
        let written = write_hf_config(&text, &cfg, "config.json").unwrap();
        let back = read_hf_config(&written, "config.json").unwrap();
        prop_assert_eq!(&back.patterns, &cfg);
        prop_assert_eq!(back.threshold, threshold.unwrap_or(HF_DEFAULT_THRESHOLD));
        let reparsed: serde_json::Value = serde_json::from_str(&written).unwrap();
        for (k, v) in &extra {
            if k != "sparse_attention_config" && k != "sparse_attention_threshold" {
                prop_assert_eq!(&reparsed[k], &serde_json::Value::from(*v));
            }
        }
        // Writing the same patterns again changes nothing.
        prop_assert_eq!(write_hf_config(&written, &cfg, "config.json").unwrap(), written);
    }
}
