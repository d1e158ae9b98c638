//! GGUF reader: dequantization against gguf-py (fixture from scripts/hf_reference.py), metadata
//! of every value type, and one clear error for each kind of malformed file.

mod common;

use common::GgufBuilder;
use minference_model::gguf::{dequant, GgmlType, GgufFile, MetaValue};
use minference_model::ModelError;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0)).collect()
}

#[test]
fn dequantization_matches_gguf_py_for_every_supported_type() {
    let fx = common::fixture("dequant_blocks.json");
    let mut seen = Vec::new();
    for block in fx["blocks"].as_array().into_iter().flatten() {
        let ty = GgmlType(block["type_id"].as_u64().unwrap_or(u64::MAX) as u32);
        let bytes = hex(block["hex"].as_str().unwrap_or_default());
        let want: Vec<f32> =
            block["values"].as_array().into_iter().flatten().map(|v| v.as_f64().unwrap_or(f64::NAN) as f32).collect();
        let mut got = vec![0f32; want.len()];
        assert!(dequant::dequantize(ty, &bytes, &mut got), "{}", ty.name());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{} value {i}: {g} vs {w}", ty.name());
        }
        seen.push(ty.name());
    }
    for name in ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"] {
        assert!(seen.iter().any(|s| s == name), "fixture lacks {name}");
    }
}

#[test]
fn real_model_tensors_match_gguf_py() {
    let Some(path) = common::default_model() else { return };
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let fx = common::fixture("dequant_blocks.json");
    for t in fx["real_tensors"].as_array().into_iter().flatten() {
        let name = t["name"].as_str().unwrap_or_default();
        let values = file.tensor_f32(name).unwrap_or_else(|e| panic!("{e}"));
        for (i, w) in t["first"].as_array().into_iter().flatten().enumerate() {
            let w = w.as_f64().unwrap_or(f64::NAN) as f32;
            assert!((values[i] - w).abs() <= 1e-6 * w.abs().max(1.0), "{name}[{i}]: {} vs {w}", values[i]);
        }
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        let want = t["sum"].as_f64().unwrap_or(f64::NAN);
        assert!((sum - want).abs() <= 1e-6 * want.abs().max(1.0) + 1e-3, "{name} sum {sum} vs {want}");
    }
    assert_eq!(file.tensor("blk.0.attn_q.weight").map(|t| t.kind), Some(GgmlType::Q4_1));
}

#[test]
fn reads_every_metadata_value_type() {
    let mut b = GgufBuilder::new();
    b.raw_kv("u8", 0, vec![7])
        .raw_kv("i8", 1, vec![0xFF])
        .raw_kv("u16", 2, 500u16.to_le_bytes().to_vec())
        .raw_kv("i16", 3, (-500i16).to_le_bytes().to_vec())
        .u32("u32", 70000)
        .raw_kv("i32", 5, (-70000i32).to_le_bytes().to_vec())
        .f32("f32", 1.5)
        .bool("bool", true)
        .string("string", "héllo")
        .raw_kv("u64", 10, (1u64 << 40).to_le_bytes().to_vec())
        .raw_kv("i64", 11, (-(1i64 << 40)).to_le_bytes().to_vec())
        .raw_kv("f64", 12, 2.25f64.to_le_bytes().to_vec())
        .i32_array("arr", &[1, -2, 3])
        .u32("general.alignment", 64);
    // An array of arrays of u8.
    let mut nested = 9u32.to_le_bytes().to_vec();
    nested.extend_from_slice(&2u64.to_le_bytes());
    for n in [1u8, 2] {
        nested.extend_from_slice(&0u32.to_le_bytes());
        nested.extend_from_slice(&(n as u64).to_le_bytes());
        nested.extend(std::iter::repeat_n(n, n as usize));
    }
    b.raw_kv("nested", 9, nested);
    b.alignment = 64;
    b.tensor_f32("t", &[4, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let f = GgufFile::from_bytes(b.build()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.get("u8"), Some(&MetaValue::U8(7)));
    assert_eq!(f.get("i8"), Some(&MetaValue::I8(-1)));
    assert_eq!(f.get("u16"), Some(&MetaValue::U16(500)));
    assert_eq!(f.get("i16"), Some(&MetaValue::I16(-500)));
    assert_eq!(f.get("u32").and_then(MetaValue::as_u64), Some(70000));
    assert_eq!(f.get("i32"), Some(&MetaValue::I32(-70000)));
    assert_eq!(f.get("f32").and_then(MetaValue::as_f64), Some(1.5));
    assert_eq!(f.get("bool").and_then(MetaValue::as_bool), Some(true));
    assert_eq!(f.get("string").and_then(MetaValue::as_str), Some("héllo"));
    assert_eq!(f.get("u64"), Some(&MetaValue::U64(1 << 40)));
    assert_eq!(f.get("i64"), Some(&MetaValue::I64(-(1 << 40))));
    assert_eq!(f.get("f64"), Some(&MetaValue::F64(2.25)));
    assert_eq!(f.get("arr").and_then(MetaValue::as_array).map(|a| a.len()), Some(3));
    let nested = f.get("nested").and_then(MetaValue::as_array).unwrap_or(&[]);
    assert_eq!(nested.len(), 2);
    assert_eq!(nested[1], MetaValue::Array(vec![MetaValue::U8(2), MetaValue::U8(2)]));
    assert_eq!(f.alignment, 64);
    let t = f.tensor("t").unwrap_or_else(|| panic!("tensor t"));
    assert_eq!(t.offset % 64, 0);
    assert_eq!(f.tensor_f32("t").unwrap_or_default(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
}

fn gguf_err(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes(bytes) {
        Ok(_) => panic!("malformed file accepted"),
        Err(e @ ModelError::Gguf(_)) => e.to_string(),
        Err(e) => panic!("wrong error kind: {e}"),
    }
}

fn small_file() -> GgufBuilder {
    let mut b = GgufBuilder::new();
    b.string("general.architecture", "llama").tensor_f32("w", &[8, 2], &[0.5; 16]);
    b
}

#[test]
fn malformed_headers_give_named_errors() {
    assert!(gguf_err(b"GGUX\x03\0\0\0".to_vec()).contains("magic"));
    let mut v1 = small_file().build();
    v1[4] = 1;
    assert!(gguf_err(v1).contains("version 1"));
    let mut huge_count = small_file().build();
    huge_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(gguf_err(huge_count).contains("tensor count"));
    let mut b = small_file();
    b.raw_kv("bad", 99, vec![0]);
    assert!(gguf_err(b.build()).contains("unknown value type 99"));
    let mut b = small_file();
    b.raw_kv("bool", 7, vec![2]);
    assert!(gguf_err(b.build()).contains("invalid bool"));
    let mut b = small_file();
    b.u32("general.alignment", 3);
    assert!(gguf_err(b.build()).contains("alignment"));
    let mut b = small_file();
    b.raw_kv("s", 8, [&5u64.to_le_bytes()[..], &[0xFF, 0xFE, 0xFD, 0xFC, 0xFB]].concat());
    assert!(gguf_err(b.build()).contains("UTF-8"));
}

#[test]
fn truncated_file_is_an_error_at_every_length() {
    let bytes = small_file().build();
    for len in 0..bytes.len() {
        let r = GgufFile::from_bytes(bytes[..len].to_vec());
        assert!(matches!(r, Err(ModelError::Gguf(_))), "length {len} of {}", bytes.len());
    }
    assert!(GgufFile::from_bytes(bytes).is_ok());
}

#[test]
fn tensor_data_outside_the_file_is_rejected() {
    let mut b = GgufBuilder::new();
    b.tensor_f32("w", &[8, 2], &[0.5; 16]);
    let mut bytes = b.build();
    let len = bytes.len();
    bytes.truncate(len - 4);
    assert!(gguf_err(bytes).contains("past the file end"));
    let mut b = GgufBuilder::new();
    b.tensor_raw("q", &[30], GgmlType::Q4_0.0, vec![0; 18]);
    assert!(gguf_err(b.build()).contains("block size"));
    let mut b = GgufBuilder::new();
    b.tensor_raw("five", &[1, 1, 1, 1, 1], 0, vec![0; 4]);
    assert!(gguf_err(b.build()).contains("dimensions"));
    let mut b = GgufBuilder::new();
    b.tensor_f32("a", &[u64::MAX / 2, 4], &[0.0]);
    assert!(gguf_err(b.build()).contains("overflow"));
}

#[test]
fn unsupported_quantization_is_named() {
    let mut b = GgufBuilder::new();
    b.tensor_raw("q5", &[32], 6, vec![0; 22]); // Q5_0
    let f = GgufFile::from_bytes(b.build()).unwrap_or_else(|e| panic!("{e}"));
    match f.tensor_f32("q5") {
        Err(ModelError::UnsupportedQuantization { tensor, kind }) => {
            assert_eq!((tensor.as_str(), kind.as_str()), ("q5", "Q5_0"));
        }
        other => panic!("expected UnsupportedQuantization, got {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random corruption of a valid file never panics: it parses or gives a GGUF error.
    #[test]
    fn corrupted_files_never_panic(flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8), cut in 0usize..4096) {
        let mut bytes = common::tiny_llama(&common::TINY, "llama").build();
        for (pos, val) in flips {
            let i = pos % bytes.len();
            bytes[i] = val;
        }
        let cut = bytes.len() - cut % bytes.len().max(1);
        bytes.truncate(cut);
        if let Ok(f) = GgufFile::from_bytes(bytes) {
            for t in f.tensors.clone() {
                let _ = f.tensor_f32(&t.name);
            }
            let _ = minference_model::Model::from_gguf(&f);
        }
    }
}
