//! Needle prompts: exact token layout, the needle at the requested depth (within half a sentence),
//! the length filled as far as whole sentences allow, and clear errors on bad haystacks.

mod common;

use minference_eval::{build_needle_prompt, EvalError, Haystack, PromptFrame};
use minference_model::Model;
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// One token per whitespace-separated word (ids assigned on first sight), enough to test layout.
struct WordTokenizer(Mutex<HashMap<String, u32>>);

impl WordTokenizer {
    fn new() -> Self {
        WordTokenizer(Mutex::new(HashMap::new()))
    }
    fn encode(&self, text: &str) -> minference_eval::Result<Vec<u32>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Ok(text
            .split_whitespace()
            .map(|w| {
                let next = map.len() as u32;
                *map.entry(w.to_string()).or_insert(next)
            })
            .collect())
    }
}

fn check_layout(
    haystack: &Haystack,
    frame: &PromptFrame,
    encode: &dyn Fn(&str) -> minference_eval::Result<Vec<u32>>,
    length: usize,
    depth: u32,
) {
    let p = build_needle_prompt(haystack, frame, encode, length, depth, "31415").unwrap_or_else(|e| panic!("{e}"));
    let longest = haystack.longest_sentence();
    assert!(p.tokens.len() <= length, "{} tokens for length {length}", p.tokens.len());
    assert!(p.tokens.len() + longest > length, "{} tokens leave a whole sentence unused of {length}", p.tokens.len());
    // The needle tokens are where the prompt says they are.
    let needle =
        encode(" The pass key is 31415. Remember it. 31415 is the pass key.").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&p.tokens[p.needle_start..p.needle_start + p.needle_len], &needle[..]);
    // Within half of the longest sentence of the requested depth.
    let before = (p.needle_start - p.haystack_start) as f64;
    let target = depth as f64 / 100.0 * p.haystack_tokens as f64;
    assert!(
        (before - target).abs() <= longest as f64 / 2.0 + 1e-9,
        "needle after {before} of {} haystack tokens, asked {depth}%",
        p.haystack_tokens
    );
    if depth == 0 {
        assert_eq!(p.needle_start, p.haystack_start);
    }
    if depth == 100 {
        assert_eq!(p.needle_start, p.haystack_start + p.haystack_tokens);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn needle_lands_at_the_requested_depth(length in 80usize..3000, depth in 0u32..=100, seed in 0u64..50, raw in any::<bool>()) {
        let tok = WordTokenizer::new();
        let encode = |t: &str| tok.encode(t);
        let haystack = Haystack::filler(seed, &encode).unwrap_or_else(|e| panic!("{e}"));
        let frame = if raw { PromptFrame::raw() } else {
            PromptFrame::from_rendered("<user> @@ </user> <assistant>", "@@").unwrap_or_else(|e| panic!("{e}"))
        };
        check_layout(&haystack, &frame, &encode, length, depth);
    }
}

#[test]
fn too_short_lengths_and_bad_depths_are_errors() {
    let tok = WordTokenizer::new();
    let encode = |t: &str| tok.encode(t);
    let haystack = Haystack::filler(0, &encode).unwrap_or_else(|e| panic!("{e}"));
    let err = build_needle_prompt(&haystack, &PromptFrame::raw(), &encode, 20, 50, "12345").unwrap_err();
    assert!(err.to_string().contains("too short"), "{err}");
    assert!(build_needle_prompt(&haystack, &PromptFrame::raw(), &encode, 500, 101, "12345").is_err());
    assert!(PromptFrame::from_rendered("no marker here", "@@").is_err());
}

#[test]
fn bad_haystack_files_are_clear_errors() {
    let tok = WordTokenizer::new();
    let encode = |t: &str| tok.encode(t);
    let dir = std::env::temp_dir().join(format!("minference-eval-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let latin1 = dir.join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait. ").unwrap_or_else(|e| panic!("{e}"));
    let err = Haystack::from_file(&latin1, &encode).unwrap_err();
    assert!(
        matches!(err, EvalError::Input(_))
            && err.to_string().contains("not UTF-8")
            && err.to_string().contains("offset 3"),
        "{err}"
    );
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, b"  \n").unwrap_or_else(|e| panic!("{e}"));
    assert!(Haystack::from_file(&empty, &encode).unwrap_err().to_string().contains("empty"));
    let missing = dir.join("missing.txt");
    assert!(matches!(Haystack::from_file(&missing, &encode).unwrap_err(), EvalError::Io { .. }));
    let text = dir.join("story.txt");
    std::fs::write(&text, "One fish swims. Two birds fly!\nThe end?").unwrap_or_else(|e| panic!("{e}"));
    let haystack = Haystack::from_file(&text, &encode).unwrap_or_else(|e| panic!("{e}"));
    check_layout(&haystack, &PromptFrame::raw(), &encode, 200, 40);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn real_tokenizer_layout_and_chat_frame() {
    let Some(path) = common::real_model() else { return };
    let model = Model::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let tokenizer = model.tokenizer().unwrap_or_else(|e| panic!("{e}"));
    let encode = |t: &str| Ok(tokenizer.encode(t)?);
    let haystack = Haystack::filler(3, &encode).unwrap_or_else(|e| panic!("{e}"));
    let chat = PromptFrame::from_rendered(&tokenizer.chat_prompt("\u{1}M\u{1}", None), "\u{1}M\u{1}")
        .unwrap_or_else(|e| panic!("{e}"));
    for frame in [PromptFrame::raw(), chat] {
        for depth in [0, 25, 50, 75, 100] {
            check_layout(&haystack, &frame, &encode, 1024, depth);
            let p =
                build_needle_prompt(&haystack, &frame, &encode, 1024, depth, "31415").unwrap_or_else(|e| panic!("{e}"));
            let needle = tokenizer
                .decode(&p.tokens[p.needle_start..p.needle_start + p.needle_len], false)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(needle.contains("31415"), "{needle}");
            let whole = tokenizer.decode(&p.tokens, false).unwrap_or_else(|e| panic!("{e}"));
            assert!(whole.starts_with(&frame.prefix) && whole.ends_with(&frame.suffix));
        }
    }
}

#[test]
fn bos_comes_first_and_the_layout_holds() {
    let tok = WordTokenizer::new();
    let encode = |t: &str| tok.encode(t);
    let haystack = Haystack::filler(1, &encode).unwrap_or_else(|e| panic!("{e}"));
    let frame = PromptFrame { bos: Some(9999), ..PromptFrame::raw() };
    let p = build_needle_prompt(&haystack, &frame, &encode, 400, 50, "27182").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.tokens[0], 9999);
    assert!(!p.tokens[1..].contains(&9999));
    check_layout(&haystack, &frame, &encode, 400, 50);
}
