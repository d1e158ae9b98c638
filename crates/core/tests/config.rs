//! Per-head pattern configs (spec §3.3, §8 item 25).

use minference_core::config::DENSE_AS_VS_BUDGET;
use minference_core::{CoreError, HeadEntry, HeadPattern, LayerPatterns, ModelPatternConfig};
use proptest::prelude::*;

const FIXTURE: &str = include_str!("fixtures/minference_two_layers.json");

#[test]
fn parses_minference_format_fixture() {
    let cfg = ModelPatternConfig::from_json_str(FIXTURE, "minference_two_layers.json").unwrap();
    assert_eq!(cfg.layers.len(), 2);
    assert_eq!(cfg.pattern(0, 0).unwrap(), HeadPattern::VerticalSlash { k_v: 1000, k_s: 6096 });
    assert_eq!(cfg.pattern(0, 1).unwrap(), HeadPattern::VerticalSlash { k_v: 30, k_s: 800 });
    assert_eq!(cfg.pattern(0, 3).unwrap(), HeadPattern::AShape { n_init: 100, n_local: 800 });
    assert_eq!(cfg.pattern(1, 3).unwrap(), HeadPattern::BlockSparse { k_b: 8 });
    assert_eq!(cfg.layers[0].heads[&2].score, 4777248.0);
    assert_eq!(cfg.layers[1].heads[&0].score, 0.9731);
    // Head 1 of layer 1 is absent: MInference's default.
    assert_eq!(cfg.pattern(1, 1).unwrap(), HeadPattern::DEFAULT);
    assert_eq!(HeadPattern::DEFAULT, HeadPattern::VerticalSlash { k_v: 1000, k_s: 6096 });
    cfg.validate_model(2, 4).unwrap();
}

#[test]
fn missing_layer_is_an_error() {
    let cfg = ModelPatternConfig::from_json_str(FIXTURE, "f.json").unwrap();
    match cfg.pattern(2, 0) {
        Err(CoreError::Config { location, message, .. }) => {
            assert_eq!(location, "layer 2");
            assert!(message.contains("2 layers"), "{message}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn model_validation_names_the_problem() {
    let cfg = ModelPatternConfig::from_json_str(FIXTURE, "f.json").unwrap();
    let e = cfg.validate_model(32, 4).unwrap_err().to_string();
    assert!(e.contains("2 layers") && e.contains("32"), "{e}");
    let e = cfg.validate_model(2, 3).unwrap_err().to_string();
    assert!(e.contains("layer 0, head \"3\""), "{e}");
}

#[test]
fn tensor_parallel_ids_are_global() {
    let cfg = ModelPatternConfig::from_json_str(FIXTURE, "f.json").unwrap();
    // 4 heads over 2 ranks: rank 1's local head 1 is global head 3.
    assert_eq!(cfg.pattern_for_rank(0, 1, 1, 2).unwrap(), HeadPattern::AShape { n_init: 100, n_local: 800 });
    assert_eq!(cfg.pattern_for_rank(0, 0, 1, 2).unwrap(), HeadPattern::VerticalSlash { k_v: 3500, k_s: 100 });
    assert!(cfg.pattern_for_rank(0, 2, 0, 2).is_err());
}

#[test]
fn ratio_scales_vs_and_ashape_budgets() {
    let cfg = ModelPatternConfig::from_json_str(FIXTURE, "f.json").unwrap();
    let half = cfg.with_ratio(0.5).unwrap();
    assert_eq!(half.pattern(0, 0).unwrap(), HeadPattern::VerticalSlash { k_v: 500, k_s: 3048 });
    assert_eq!(half.pattern(0, 1).unwrap(), HeadPattern::VerticalSlash { k_v: 15, k_s: 400 });
    assert_eq!(half.pattern(0, 3).unwrap(), HeadPattern::AShape { n_init: 50, n_local: 400 });
    assert_eq!(half.pattern(1, 3).unwrap(), HeadPattern::BlockSparse { k_b: 8 });
    // Truncation: 0.3 · 100 = 30, 0.3 · 800 = 240 (not rounded up from 239.99…).
    let r = cfg.with_ratio(0.3).unwrap();
    assert_eq!(r.pattern(1, 0).unwrap(), HeadPattern::VerticalSlash { k_v: 30, k_s: 240 });
    assert!(cfg.with_ratio(0.0).is_err());
    assert!(cfg.with_ratio(f64::NAN).is_err());
    assert!(cfg.with_ratio(-1.0).is_err());
}

#[test]
fn dense_is_written_as_huge_vs_budgets_and_read_back() {
    let cfg = ModelPatternConfig::uniform(1, 2, HeadPattern::Dense);
    let text = cfg.to_json_string();
    assert!(text.contains(&format!("[\"vertical_and_slash\",{DENSE_AS_VS_BUDGET},{DENSE_AS_VS_BUDGET},0]")), "{text}");
    assert_eq!(ModelPatternConfig::from_json_str(&text, "t").unwrap(), cfg);
}

#[test]
fn adaptive_heads_carry_their_rule_in_a_fifth_element() {
    let text = r#"[{"0": ["adaptive_vertical_and_slash", 3000, 6096, 0.5, {"gamma": 0.95, "min_v": 40, "min_s": 200}],
                    "1": ["adaptive_vertical_and_slash", 1000, 2000, 0, {"gamma": 0.8}]}]"#;
    let cfg = ModelPatternConfig::from_json_str(text, "a.json").unwrap();
    assert_eq!(
        cfg.pattern(0, 0).unwrap(),
        HeadPattern::AdaptiveVs { gamma_ppm: 950_000, min_v: 40, max_v: 3000, min_s: 200, max_s: 6096 }
    );
    // min_v / min_s left out: MInference's floors 30 and 100.
    assert_eq!(
        cfg.pattern(0, 1).unwrap(),
        HeadPattern::AdaptiveVs { gamma_ppm: 800_000, min_v: 30, max_v: 1000, min_s: 100, max_s: 2000 }
    );
    let written = cfg.to_json_string();
    assert!(
        written.contains(r#"["adaptive_vertical_and_slash",3000,6096,0.5,{"gamma":0.95,"min_s":200,"min_v":40}]"#),
        "{written}"
    );
    assert_eq!(ModelPatternConfig::from_json_str(&written, "b.json").unwrap(), cfg);
    // The ratio scales the bounds, not gamma.
    let half = cfg.with_ratio(0.5).unwrap();
    assert_eq!(
        half.pattern(0, 0).unwrap(),
        HeadPattern::AdaptiveVs { gamma_ppm: 950_000, min_v: 20, max_v: 1500, min_s: 100, max_s: 3048 }
    );
}

#[test]
fn malformed_inputs_name_file_layer_and_head() {
    let cases: &[(&str, &str, &str)] = &[
        ("{}", "top level", "list"),
        ("[1]", "layer 0", "object"),
        (r#"[{}, {"7": ["vertical_and_slash", 0, 800, 1]}]"#, "layer 1, head \"7\"", "> 0"),
        (r#"[{"7": ["vertical_and_slash", -5, 800, 1]}]"#, "layer 0, head \"7\"", "negative"),
        (r#"[{"7": ["vertical_and_slash", 1.5, 800, 1]}]"#, "layer 0, head \"7\"", "integer"),
        (r#"[{"7": ["vertical_and_slash", "30", 800, 1]}]"#, "layer 0, head \"7\"", "number"),
        (r#"[{"7": ["vertical_and_slash", 30, 800]}]"#, "layer 0, head \"7\"", "4 elements"),
        (r#"[{"7": ["vertical_and_slash", 30, 800, 1, {"gamma": 0.9}]}]"#, "layer 0, head \"7\"", "fifth"),
        (r#"[{"7": ["adaptive_vertical_and_slash", 30, 800, 1]}]"#, "layer 0, head \"7\"", "gamma"),
        (r#"[{"7": ["adaptive_vertical_and_slash", 30, 800, 1, 0.9]}]"#, "layer 0, head \"7\"", "a number"),
        (r#"[{"7": ["adaptive_vertical_and_slash", 30, 800, 1, {}]}]"#, "layer 0, head \"7\"", "gamma is missing"),
        (r#"[{"7": ["adaptive_vertical_and_slash", 30, 800, 1, {"gamma": 1.5}]}]"#, "layer 0, head \"7\"", "(0, 1]"),
        (r#"[{"7": ["adaptive_vertical_and_slash", 30, 800, 1, {"gamma": 0}]}]"#, "layer 0, head \"7\"", "(0, 1]"),
        (r#"[{"7": ["adaptive_vertical_and_slash", 30, 800, 1, {"gamma": "x"}]}]"#, "layer 0, head \"7\"", "gamma"),
        (
            r#"[{"7": ["adaptive_vertical_and_slash", 30, 800, 1, {"gamma": 0.9, "max_v": 3}]}]"#,
            "layer 0, head \"7\"",
            "max_v",
        ),
        (
            r#"[{"7": ["adaptive_vertical_and_slash", 30, 800, 1, {"gamma": 0.9, "min_v": 31}]}]"#,
            "layer 0, head \"7\"",
            "min_v <= max_v",
        ),
        (
            r#"[{"7": ["adaptive_vertical_and_slash", 30, 800, 1, {"gamma": 0.9, "min_s": -1}]}]"#,
            "layer 0, head \"7\"",
            "negative",
        ),
        (r#"[{"7": ["adaptive_vertical_and_slash", 0, 800, 1, {"gamma": 0.9}]}]"#, "layer 0, head \"7\"", "> 0"),
        (
            r#"[{"7": ["adaptive_vertical_and_slash", 30, 800, 1, {"gamma": 0.9}, 2]}]"#,
            "layer 0, head \"7\"",
            "found 6",
        ),
        (r#"[{"7": ["vertical_and_slash", 30, 800, "x"]}]"#, "layer 0, head \"7\"", "score"),
        (r#"[{"7": ["diagonal", 30, 800, 1]}]"#, "layer 0, head \"7\"", "diagonal"),
        (r#"[{"7": [3, 30, 800, 1]}]"#, "layer 0, head \"7\"", "string"),
        (r#"[{"7": {"a": 1}}]"#, "layer 0, head \"7\"", "[pattern"),
        (r#"[{"x": ["vertical_and_slash", 30, 800, 1]}]"#, "layer 0, head \"x\"", "decimal"),
        (r#"[{"-1": ["vertical_and_slash", 30, 800, 1]}]"#, "layer 0, head \"-1\"", "decimal"),
        (r#"[{"07": ["vertical_and_slash", 30, 800, 1]}]"#, "layer 0, head \"07\"", "leading"),
        (r#"[{"0": ["stream_llm", 100, 0, 1]}]"#, "layer 0, head \"0\"", "> 0"),
        (r#"[{"0": ["block_sparse", 0, 0, 1]}]"#, "layer 0, head \"0\"", "> 0"),
        ("[{", "JSON", "EOF"),
    ];
    for (text, location, needle) in cases {
        match ModelPatternConfig::from_json_str(text, "model.json") {
            Err(e @ CoreError::Config { .. }) => {
                let msg = e.to_string();
                assert!(msg.starts_with("config model.json: "), "{msg}");
                assert!(msg.contains(location), "{text}: {msg}");
                assert!(msg.contains(needle), "{text}: {msg}");
            }
            other => panic!("{text}: expected config error, got {other:?}"),
        }
    }
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

fn score_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![(0u32..20_000_000).prop_map(|x| x as f64), 0.0f64..1.0]
}

proptest! {
    #[test]
    fn write_then_read_round_trips(
        layers in prop::collection::vec(
            prop::collection::btree_map(0usize..64, (pattern_strategy(), score_strategy()), 0..8), 0..5)
    ) {
        let cfg = ModelPatternConfig {
            layers: layers.into_iter().map(|heads| LayerPatterns {
                heads: heads.into_iter().map(|(h, (pattern, score))| (h, HeadEntry { pattern, score })).collect(),
            }).collect(),
        };
        let text = cfg.to_json_string();
        let back = ModelPatternConfig::from_json_str(&text, "roundtrip.json").unwrap();
        prop_assert_eq!(back, cfg);
    }
}
