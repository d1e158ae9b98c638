//! End-to-end properties on a tiny synthetic Llama (GGUF built in the test): tokenizer rebuilt from
//! metadata, decode consistent with prefill, chunking invariance, GGUF ≡ safetensors, captures,
//! and one clear error per kind of bad input.

#[path = "../../model/tests/common/mod.rs"]
mod common;

use common::{tiny_llama, TINY};
use minference_core::HeadPattern;
use minference_cpu::CpuBackend;
use minference_engine::{AttentionChoice, CpuEngine as Engine, MInferencePlan};
use minference_model::gguf::GgufFile;
use minference_model::{Model, ModelError};
use std::collections::HashMap;

fn tiny() -> Model {
    let f = GgufFile::from_bytes(tiny_llama(&TINY, "llama").build()).unwrap_or_else(|e| panic!("{e}"));
    Model::from_gguf(&f).unwrap_or_else(|e| panic!("{e}"))
}

fn prompt(n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 37 + 11) % 256) as u32).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn tokenizer_is_rebuilt_from_gguf_metadata() {
    let m = tiny();
    let tok = m.tokenizer().unwrap_or_else(|e| panic!("{e}"));
    let ids = tok.encode("hello <|im_start|>").unwrap_or_else(|e| panic!("{e}"));
    let he = tok.token_to_id("he").unwrap_or(u32::MAX);
    let ll = tok.token_to_id("ll").unwrap_or(u32::MAX);
    let start = tok.token_to_id("<|im_start|>").unwrap_or(u32::MAX);
    assert_eq!(ids[..2], [he, ll], "merges applied");
    assert_eq!(*ids.last().unwrap_or(&0), start, "special token kept whole");
    assert_eq!(tok.decode(&ids, false).unwrap_or_default(), "hello <|im_start|>");
    assert_eq!(tok.eos, tok.token_to_id("<|im_end|>"));
    assert!(tok.stop_tokens.contains(&tok.token_to_id("<|im_end|>").unwrap_or(u32::MAX)));
    let unicode = "naïve — 数字 123";
    let ids = tok.encode(unicode).unwrap_or_default();
    assert_eq!(tok.decode(&ids, false).unwrap_or_default(), unicode);
}

#[test]
fn every_pre_tokenizer_round_trips_text() {
    let text = "It's 2026: naïve café, 12345 tokens!\n\n  spaced\tout <|im_end|>";
    for pre in ["default", "smollm", "qwen2", "llama-bpe"] {
        let f = GgufFile::from_bytes(common::tiny_llama_with_pre(&TINY, "llama", pre).build())
            .unwrap_or_else(|e| panic!("{e}"));
        let m = Model::from_gguf(&f).unwrap_or_else(|e| panic!("{e}"));
        let tok = m.tokenizer().unwrap_or_else(|e| panic!("{pre}: {e}"));
        let ids = tok.encode(text).unwrap_or_else(|e| panic!("{pre}: {e}"));
        assert_eq!(tok.decode(&ids, false).unwrap_or_default(), text, "{pre}");
        assert_eq!(ids.last().copied(), tok.token_to_id("<|im_end|>"), "{pre}");
    }
}

#[test]
fn prompts_get_bos_only_when_the_model_asks_for_it() {
    let tok_of = |add_bos: bool| {
        let mut b = tiny_llama(&TINY, "llama");
        b.bool("tokenizer.ggml.add_bos_token", add_bos);
        let f = GgufFile::from_bytes(b.build()).unwrap_or_else(|e| panic!("{e}"));
        Model::from_gguf(&f).unwrap_or_else(|e| panic!("{e}"))
    };
    let with = tok_of(true);
    let tok = with.tokenizer().unwrap_or_else(|e| panic!("{e}"));
    let bos = tok.bos.unwrap_or(u32::MAX);
    let ids = tok.encode_prompt("hi").unwrap_or_default();
    assert_eq!(ids[0], bos);
    assert_eq!(ids[1..], tok.encode("hi").unwrap_or_default()[..]);
    // Already present (e.g. written by a chat template): not doubled.
    let again = tok.encode_prompt("<|im_start|>hi").unwrap_or_default();
    assert_eq!(again.iter().filter(|&&t| t == bos).count(), 1);
    let without = tok_of(false);
    let tok = without.tokenizer().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tok.encode_prompt("hi").unwrap_or_default(), tok.encode("hi").unwrap_or_default());
}

#[test]
fn text_stream_emits_whole_characters_only() {
    let m = tiny();
    let tok = m.tokenizer().unwrap_or_else(|e| panic!("{e}"));
    let text = "naïve 数字 ok";
    let ids = tok.encode(text).unwrap_or_else(|e| panic!("{e}"));
    let mut stream = minference_engine::TextStream::new();
    let mut out = String::new();
    for id in ids {
        let piece = stream.push(tok, id).unwrap_or_else(|e| panic!("{e}"));
        assert!(!piece.contains('\u{FFFD}'), "partial character emitted: {piece:?}");
        out.push_str(&piece);
    }
    assert_eq!(out, text);
}

#[test]
fn decode_steps_match_a_longer_prefill() {
    let mut e = Engine::new(tiny(), CpuBackend::new());
    let p = prompt(40);
    let (full, _) = e.prefill(&p, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|err| panic!("{err}"));
    e.prefill(&p[..37], &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|err| panic!("{err}"));
    e.decode_step(p[37]).unwrap_or_else(|err| panic!("{err}"));
    e.decode_step(p[38]).unwrap_or_else(|err| panic!("{err}"));
    let stepped = e.decode_step(p[39]).unwrap_or_else(|err| panic!("{err}"));
    // Decode steps read the cache's K/V rounded to f16 (2^-11 relative); prefill attends in f32.
    assert!(max_abs_diff(&full, &stepped) < 3e-3, "{}", max_abs_diff(&full, &stepped));
    assert_eq!(e.cache().len(), 40);
}

#[test]
fn cache_grows_past_its_reserve() {
    let mut e = Engine::new(tiny(), CpuBackend::new());
    e.prefill(&prompt(3), &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|err| panic!("{err}"));
    for t in 0..300 {
        e.decode_step((t % 250) as u32).unwrap_or_else(|err| panic!("{err}"));
    }
    assert_eq!(e.cache().len(), 303);
}

#[test]
fn chunk_size_does_not_change_logits() {
    let m = std::sync::Arc::new(tiny());
    let p = prompt(150);
    let mut a = Engine::new(m.clone(), CpuBackend::new());
    let mut b = Engine::new(m, CpuBackend::new());
    b.set_chunk_tokens(7);
    let (la, _) = a.prefill(&p, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let (lb, _) = b.prefill(&p, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert!(max_abs_diff(&la, &lb) < 1e-4);
}

#[test]
fn full_budget_minference_equals_dense_and_starting_layer_is_respected() {
    let m = std::sync::Arc::new(tiny());
    let cfg = m.config().clone();
    let p = prompt(200);
    let mut e = Engine::new(m, CpuBackend::new());
    let (dense, _) = e.prefill(&p, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|err| panic!("{err}"));
    for pattern in [
        HeadPattern::VerticalSlash { k_v: 1000, k_s: 6096 },
        HeadPattern::AShape { n_init: 16, n_local: 4096 },
        HeadPattern::BlockSparse { k_b: 100 },
    ] {
        let plan = MInferencePlan::uniform(&cfg, pattern);
        let (sparse, stats) = e
            .prefill(&p, &AttentionChoice::MInference(plan.clone()), &mut |_| {})
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(max_abs_diff(&dense, &sparse) < 1e-3, "{pattern:?}: {}", max_abs_diff(&dense, &sparse));
        assert_eq!(stats.sparse_heads, cfg.layers * cfg.heads);
        // A budget covering the whole prompt computes every causal pair.
        assert_eq!(stats.kernel_density(), Some(1.0), "{pattern:?}");
        let (_, stats) = e
            .prefill(&p, &AttentionChoice::MInference(plan.clone().with_starting_layer(1)), &mut |_| {})
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(stats.sparse_heads, (cfg.layers - 1) * cfg.heads);
        let (_, stats) = e
            .prefill(&p, &AttentionChoice::MInference(plan.with_dense_below(1000)), &mut |_| {})
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(stats.sparse_heads, 0);
    }
}

#[test]
fn mixed_dense_and_sparse_heads_in_one_group() {
    let m = std::sync::Arc::new(tiny());
    let cfg = m.config().clone();
    let p = prompt(130);
    let mut e = Engine::new(m, CpuBackend::new());
    let (dense, _) = e.prefill(&p, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|err| panic!("{err}"));
    let plan = MInferencePlan::from_lookup(&cfg, |l, h| match (l + h) % 4 {
        0 => HeadPattern::Dense,
        1 => HeadPattern::VerticalSlash { k_v: 1000, k_s: 6096 },
        2 => HeadPattern::AShape { n_init: 4, n_local: 1000 },
        _ => HeadPattern::BlockSparse { k_b: 100 },
    });
    let (mixed, stats) =
        e.prefill(&p, &AttentionChoice::MInference(plan), &mut |_| {}).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(stats.sparse_heads + stats.dense_heads, cfg.layers * cfg.heads);
    assert!(max_abs_diff(&dense, &mixed) < 1e-3, "{}", max_abs_diff(&dense, &mixed));
}

#[test]
fn plan_from_an_minference_config_file() {
    let m = tiny();
    let cfg = m.config();
    let config = minference_core::ModelPatternConfig::uniform(
        cfg.layers,
        cfg.heads,
        HeadPattern::AShape { n_init: 4, n_local: 64 },
    );
    let plan = MInferencePlan::from_config(cfg, &config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.patterns[1][3], HeadPattern::AShape { n_init: 4, n_local: 64 });
    let short = minference_core::ModelPatternConfig::uniform(cfg.layers - 1, cfg.heads, HeadPattern::Dense);
    assert!(matches!(MInferencePlan::from_config(cfg, &short), Err(ModelError::Config(_))));
}

#[test]
fn capture_qk_writes_a_safetensors_file() {
    let mut e = Engine::new(tiny(), CpuBackend::new());
    let qk = e.capture_qk(&prompt(70), 1, 3).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!((qk.tokens, qk.head_dim, qk.q.len(), qk.k.len()), (70, 8, 70 * 8, 70 * 8));
    let dir = std::env::temp_dir().join(format!("mi-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("{err}"));
    let path = dir.join("qk.safetensors");
    minference_engine::save_qk(&path, &qk, "tiny").unwrap_or_else(|err| panic!("{err}"));
    let bytes = std::fs::read(&path).unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(st.tensor("q").map(|t| t.shape().to_vec()).unwrap_or_default(), vec![70, 8]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(matches!(e.capture_qk(&prompt(5), 9, 0), Err(ModelError::Input(_))));
    // A partial forward leaves no cache to decode from.
    assert!(matches!(e.decode_step(1), Err(ModelError::Input(_))));
}

/// The same weights as an HF safetensors directory (HF names, HF's half-split Q/K row order)
/// give the same logits: checks the safetensors loader and the GGUF Q/K un-permutation.
#[test]
fn safetensors_directory_matches_gguf() {
    for arch in ["llama", "qwen2"] {
        safetensors_matches_gguf(arch);
    }
}

fn safetensors_matches_gguf(arch: &str) {
    let bytes = tiny_llama(&TINY, arch).build();
    let f = GgufFile::from_bytes(bytes).unwrap_or_else(|e| panic!("{e}"));
    let gguf_model = Model::from_gguf(&f).unwrap_or_else(|e| panic!("{e}"));
    let cfg = gguf_model.config().clone();
    let rename = |n: &str| -> String {
        let map = [
            ("token_embd.weight", "model.embed_tokens.weight".to_string()),
            ("output_norm.weight", "model.norm.weight".to_string()),
        ];
        if let Some((_, v)) = map.iter().find(|(k, _)| *k == n) {
            return v.clone();
        }
        let parts: Vec<&str> = n.splitn(3, '.').collect();
        let (stem, suffix) = parts[2].rsplit_once('.').unwrap_or((parts[2], ""));
        if suffix == "bias" {
            let proj = &stem["attn_".len()..];
            return format!("model.layers.{}.self_attn.{proj}_proj.bias", parts[1]);
        }
        let hf = match parts[2] {
            "attn_norm.weight" => "input_layernorm.weight",
            "attn_q.weight" => "self_attn.q_proj.weight",
            "attn_k.weight" => "self_attn.k_proj.weight",
            "attn_v.weight" => "self_attn.v_proj.weight",
            "attn_output.weight" => "self_attn.o_proj.weight",
            "ffn_norm.weight" => "post_attention_layernorm.weight",
            "ffn_gate.weight" => "mlp.gate_proj.weight",
            "ffn_up.weight" => "mlp.up_proj.weight",
            "ffn_down.weight" => "mlp.down_proj.weight",
            other => panic!("unexpected tensor {other}"),
        };
        format!("model.layers.{}.{hf}", parts[1])
    };
    let mut data: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = Vec::new();
    for t in &f.tensors {
        let mut v = f.tensor_f32(&t.name).unwrap_or_else(|e| panic!("{e}"));
        let shape: Vec<usize> = t.dims.iter().rev().copied().collect();
        // llama.cpp permutes Llama's Q/K rows only; Qwen2 GGUFs keep HF's order.
        let heads = if arch != "llama" {
            0
        } else if t.name.ends_with("attn_q.weight") {
            cfg.heads
        } else if t.name.ends_with("attn_k.weight") {
            cfg.kv_heads
        } else {
            0
        };
        if heads > 0 {
            v = minference_model::weights::unpermute_rope_rows(&v, heads, cfg.head_dim, cfg.hidden);
        }
        // Norm weights (all 1.0, exact in any float type) go in as bf16 / f16 to exercise conversion.
        let (dtype, bytes): (safetensors::Dtype, Vec<u8>) =
            if t.name.ends_with("norm.weight") && t.name.starts_with("blk") {
                (safetensors::Dtype::BF16, v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect())
            } else if t.name == "output_norm.weight" {
                (safetensors::Dtype::F16, v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect())
            } else {
                (safetensors::Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
            };
        data.push((rename(&t.name), shape, dtype, bytes));
    }
    let dir = std::env::temp_dir().join(format!("mi-st-{arch}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, s, dt, b)| {
            (n.clone(), safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap_or_else(|e| panic!("{e}")))
        })
        .collect();
    let (first, second) = views.split_at(views.len() / 2);
    safetensors::serialize_to_file(
        first.to_vec(),
        None::<HashMap<String, String>>,
        &dir.join("model-00001-of-00002.safetensors"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    safetensors::serialize_to_file(
        second.to_vec(),
        None::<HashMap<String, String>>,
        &dir.join("model-00002-of-00002.safetensors"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = serde_json::json!({
        "model_type": arch, "hidden_size": cfg.hidden, "intermediate_size": cfg.intermediate,
        "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads, "num_key_value_heads": cfg.kv_heads,
        "vocab_size": cfg.vocab, "max_position_embeddings": cfg.context_length, "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_theta, "tie_word_embeddings": true
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let st_model = Model::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st_model.config().qkv_bias, arch == "qwen2");
    assert_eq!(gguf_model.config().qkv_bias, arch == "qwen2");
    // No tokenizer.json in the directory: loading works, asking for the tokenizer names the file.
    match st_model.tokenizer() {
        Err(ModelError::Tokenizer(msg)) => assert!(msg.contains("tokenizer.json"), "{msg}"),
        other => panic!("expected a missing-tokenizer error, got {other:?}"),
    }
    let p = prompt(30);
    let (a, _) = Engine::new(gguf_model, CpuBackend::new())
        .prefill(&p, &AttentionChoice::Dense, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let (b, _) = Engine::new(st_model, CpuBackend::new())
        .prefill(&p, &AttentionChoice::Dense, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(max_abs_diff(&a, &b) < 1e-4, "{arch}: {}", max_abs_diff(&a, &b));
}

#[test]
fn unknown_architecture_is_named() {
    let f = GgufFile::from_bytes(tiny_llama(&TINY, "mamba").build()).unwrap_or_else(|e| panic!("{e}"));
    match Model::from_gguf(&f) {
        Err(ModelError::UnknownArchitecture(a)) => assert_eq!(a, "mamba"),
        other => panic!("expected UnknownArchitecture, got {other:?}"),
    }
}

#[test]
fn unsupported_quantization_in_a_model_is_named() {
    let mut b = tiny_llama(&TINY, "llama");
    // A Q5_1 output head (32 values per 24-byte block).
    let (h, vocab) = (TINY.hidden, 260);
    b.tensor_raw("output.weight", &[h as u64, vocab as u64], 7, vec![0; h * vocab / 32 * 24]);
    let f = GgufFile::from_bytes(b.build()).unwrap_or_else(|e| panic!("{e}"));
    match Model::from_gguf(&f) {
        Err(ModelError::UnsupportedQuantization { tensor, kind }) => {
            assert_eq!(tensor, "output.weight");
            assert_eq!(kind, "Q5_1");
        }
        other => panic!("expected UnsupportedQuantization, got {other:?}"),
    }
}

#[test]
fn missing_tokenizer_is_a_clear_error_but_the_model_still_runs() {
    let mut b = common::GgufBuilder::new();
    // Copy the tiny model without tokenizer metadata: rebuild with a vocab size key instead.
    let full = GgufFile::from_bytes(tiny_llama(&TINY, "llama").build()).unwrap_or_else(|e| panic!("{e}"));
    for (k, v) in &full.metadata {
        if k.starts_with("tokenizer.") {
            continue;
        }
        match v {
            minference_model::gguf::MetaValue::String(s) => b.string(k, s),
            minference_model::gguf::MetaValue::U32(x) => b.u32(k, *x),
            minference_model::gguf::MetaValue::F32(x) => b.f32(k, *x),
            other => panic!("unexpected {other:?}"),
        };
    }
    b.u32("llama.vocab_size", 260);
    for t in &full.tensors {
        let v = full.tensor_f32(&t.name).unwrap_or_default();
        b.tensor_f32(&t.name, &t.dims.iter().map(|&d| d as u64).collect::<Vec<_>>(), &v);
    }
    let f = GgufFile::from_bytes(b.build()).unwrap_or_else(|e| panic!("{e}"));
    let m = Model::from_gguf(&f).unwrap_or_else(|e| panic!("{e}"));
    match m.tokenizer() {
        Err(e @ ModelError::Tokenizer(_)) => assert!(e.to_string().contains("missing tokenizer"), "{e}"),
        other => panic!("expected a tokenizer error, got {other:?}"),
    }
    let mut e = Engine::new(m, CpuBackend::new());
    assert!(e.prefill(&prompt(5), &AttentionChoice::Dense, &mut |_| {}).is_ok());
}

#[test]
fn prompt_longer_than_the_context_is_refused_unless_extension_is_allowed() {
    let mut e = Engine::new(tiny(), CpuBackend::new());
    let p = prompt(TINY.context + 1);
    match e.prefill(&p, &AttentionChoice::Dense, &mut |_| {}) {
        Err(ModelError::ContextOverflow { tokens, context }) => assert_eq!((tokens, context), (513, 512)),
        other => panic!("expected ContextOverflow, got {:?}", other.map(|r| r.1)),
    }
    e.prefill(&p[..TINY.context], &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|err| panic!("{err}"));
    assert!(matches!(e.decode_step(1), Err(ModelError::ContextOverflow { .. })));
    e.set_allow_context_extension(true);
    assert!(e.prefill(&p, &AttentionChoice::Dense, &mut |_| {}).is_ok());
}

#[test]
fn prefill_beyond_the_memory_limit_is_refused_before_allocating() {
    let mut e = Engine::new(tiny(), CpuBackend::new());
    e.set_memory_limit(Some(256 << 10));
    match e.prefill(&prompt(400), &AttentionChoice::Dense, &mut |_| {}) {
        Err(e @ ModelError::OutOfMemory(_)) => assert!(e.to_string().contains("GiB"), "{e}"),
        other => panic!("expected OutOfMemory, got {:?}", other.map(|r| r.1)),
    }
    e.set_memory_limit(None);
    assert!(e.prefill(&prompt(400), &AttentionChoice::Dense, &mut |_| {}).is_ok());
}

#[test]
fn bad_token_ids_and_empty_prompts_are_errors() {
    let mut e = Engine::new(tiny(), CpuBackend::new());
    assert!(matches!(e.prefill(&[], &AttentionChoice::Dense, &mut |_| {}), Err(ModelError::Input(_))));
    assert!(matches!(e.prefill(&[1, 99_999], &AttentionChoice::Dense, &mut |_| {}), Err(ModelError::Input(_))));
    assert!(matches!(e.decode_step(3), Err(ModelError::Input(_))));
    let wrong_plan = MInferencePlan::uniform(
        &minference_model::ModelConfig::named_shape("smollm2-135m").unwrap_or_else(|e| panic!("{e}")),
        HeadPattern::Dense,
    );
    assert!(matches!(
        e.prefill(&[1, 2], &AttentionChoice::MInference(wrong_plan), &mut |_| {}),
        Err(ModelError::Input(_))
    ));
}

#[test]
fn random_weight_models_run_and_say_so() {
    let m = Model::random("smollm2-135m", Some(2), 7).unwrap_or_else(|e| panic!("{e}"));
    assert!(m.has_random_weights());
    assert!(m.config().name.contains("random weights"));
    assert!(m.tokenizer().is_err());
    let mut e = Engine::new(m, CpuBackend::new());
    let (logits, _) =
        e.prefill(&prompt(20), &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|err| panic!("{err}"));
    assert!(logits.iter().all(|v| v.is_finite()));
    assert!(matches!(Model::random("gpt-5", None, 0), Err(ModelError::Config(_))));
}

#[test]
fn kernel_density_counts_what_the_kernels_computed() {
    let m = std::sync::Arc::new(tiny());
    let cfg = m.config().clone();
    let p = prompt(512);
    let mut e = Engine::new(m, CpuBackend::new());
    let (_, dense) = e.prefill(&p, &AttentionChoice::Dense, &mut |_| {}).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(dense.kernel_density(), Some(1.0));
    let causal_per_head = (512 * 513 / 2) as u64;
    assert_eq!(dense.causal_entries, causal_per_head * (cfg.layers * cfg.heads) as u64);
    // A-shape with a 64-key window and 16 sinks keeps a known share of the 512 x 512 triangle.
    let plan = MInferencePlan::uniform(&cfg, HeadPattern::AShape { n_init: 16, n_local: 64 });
    let (_, sparse) =
        e.prefill(&p, &AttentionChoice::MInference(plan), &mut |_| {}).unwrap_or_else(|err| panic!("{err}"));
    let density = sparse.kernel_density().unwrap_or(-1.0);
    assert!(density > 0.0 && density < 0.5, "{density}");
    assert_eq!(sparse.causal_entries, dense.causal_entries);
}
