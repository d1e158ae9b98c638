//! Search details as TSV: a search round-trips through the file exactly, and bad files are errors.

use minference_model::{Model, ModelConfig};
use minference_search::details::{from_tsv, to_tsv, HEADER};
use minference_search::{search_model, CandidateSpace, Objective, SearchOptions, TargetCost};
use std::sync::Arc;

#[test]
fn a_search_round_trips_through_its_details() {
    let model = Arc::new(Model::random_with_config(ModelConfig::tiny_llama(true), 3).unwrap());
    let tokens: Vec<u32> = (0..300).map(|i| ((i * 41 + 7) % 300) as u32).collect();
    let opts = SearchOptions {
        objective: Objective::OutputRelL2,
        space: CandidateSpace {
            target: TargetCost::Work(0.4),
            given: vec![
                minference_core::HeadPattern::Dense,
                minference_core::HeadPattern::AShape { n_init: 4, n_local: 16 },
                minference_core::HeadPattern::AShape { n_init: 4, n_local: 64 },
            ],
            ..CandidateSpace::default()
        },
        floor: None,
    };
    let mut s = search_model(model, &tokens, &opts, &|_, _| {}).unwrap();
    s.allocate_density(0.4, &opts.objective).unwrap();
    let text = to_tsv(&s);
    let back = from_tsv(&text, "t.tsv").unwrap();
    assert_eq!(back.config, s.config);
    assert_eq!(back.heads.len(), s.heads.len());
    for (a, b) in s.heads.iter().zip(&back.heads) {
        assert_eq!((a.layer, a.head, a.search.best), (b.layer, b.head, b.search.best));
        assert_eq!(a.search.candidates, b.search.candidates, "numbers and origins come back exactly");
    }
    // Re-allocating the read search gives what re-allocating the original gives.
    let (mut x, mut y) = (s.clone(), back);
    x.allocate_density(0.25, &opts.objective).unwrap();
    y.allocate_density(0.25, &opts.objective).unwrap();
    assert_eq!(x.config, y.config);
}

#[test]
fn bad_details_files_are_errors() {
    let line = "0\t0\t1\tdense\t0\t0\tgiven\t0\t1\t1\t1";
    let ok = format!("{HEADER}\n{line}\n");
    assert!(from_tsv(&ok, "f").is_ok());
    let cases = [
        (String::new(), "header"),
        ("layer\thead\n".to_string(), "header"),
        (format!("{HEADER}\n"), "no head"),
        (format!("{HEADER}\n0\t0\t1\tdense\n"), "4 fields"),
        (format!("{HEADER}\n0\t0\t1\tswirl\t0\t0\tgiven\t0\t1\t1\t1\n"), "unknown pattern"),
        (format!("{HEADER}\n0\t0\t1\tdense\t0\t0\tgiven\tx\t1\t1\t1\n"), "not a number"),
        (format!("{HEADER}\n0\t0\t2\tdense\t0\t0\tgiven\t0\t1\t1\t1\n"), "0 or 1"),
        (format!("{HEADER}\n0\t0\t0\tdense\t0\t0\tgiven\t0\t1\t1\t1\n"), "0 chosen"),
        (format!("{HEADER}\n{line}\n{line}\n"), "2 chosen"),
        (format!("{HEADER}\n{line}\n1\t1\t1\tdense\t0\t0\tgiven\t0\t1\t1\t1\n"), "expected 2 layers × 2 heads"),
    ];
    for (text, needle) in cases {
        let err = from_tsv(&text, "f.tsv").unwrap_err().to_string();
        assert!(err.contains(needle) && err.contains("f.tsv"), "`{needle}` in {err}");
    }
}
