//! Tests of `minference search`'s argument handling and output files (no model needed).
use super::*;
use std::path::Path;

fn args(output: &str) -> SearchArgs {
    SearchArgs {
        model: Some(PathBuf::from("/nonexistent/model.gguf")),
        calibration: vec![],
        synthetic_kv_retrieval: true,
        from_details: None,
        seed: 1,
        len: Some(1024),
        output: Some(PathBuf::from(output)),
        hf_config: None,
        objective: "recall".into(),
        target_cost: "ashape:1024,4096".into(),
        presets: "kernel-aware".into(),
        adaptive: false,
        gamma: vec![0.9],
        floor: None,
        details: None,
        save_prompt: None,
        density: 0.4,
        per_head_fit: false,
        also_density: vec![],
        budget_loss_power: 1.0,
        layer_sensitivity: false,
        sensitivity_metric: "kl".into(),
        sensitivity_rows: 512,
        device: "cpu".into(),
    }
}

#[test]
fn options_parse_and_bad_ones_are_errors() {
    let o = search_options("output", "work:0.3", "paper,code,kernel-aware", &[0.8, 0.95], Some(10)).unwrap();
    assert_eq!(o.objective, Objective::OutputRelL2);
    assert_eq!(o.space.target, TargetCost::Work(0.3));
    assert_eq!(o.space.presets, vec![Preset::Paper, Preset::Code, Preset::KernelAware]);
    assert_eq!(o.space.adaptive.iter().map(|a| a.gamma).collect::<Vec<_>>(), vec![0.8, 0.95]);
    assert!(search_options("output", "work:0.3", "paper", &[1.5], None).is_err());
    assert!(search_options("output", "work:0.3", "paper", &[0.0], None).is_err());
    assert_eq!(o.floor, Some(10));
    assert!(search_options("loss", "work:0.3", "paper", &[], None).is_err());
    let r = search_options("output-residual", "work:0.3", "kernel-aware", &[], None).unwrap();
    assert_eq!(r.objective, Objective::OutputResidual);
    let a = search_options("auto", "work:0.3", "kernel-aware", &[], None).unwrap();
    assert_eq!(a.objective, Objective::OutputResidual);
    assert!(search_options("recall", "work:1.5", "paper", &[], None).is_err());
    assert!(search_options("recall", "ashape:10", "paper", &[], None).is_err());
    assert!(search_options("recall", "work:0.3", "papers", &[], None).is_err());
    assert!(search_options("recall", "work:0.3", ",", &[], None).is_err());
    assert_eq!(parse_tokens("8k"), Ok(8192));
    assert_eq!(SearchDevice::parse("cuda").unwrap(), SearchDevice::Cuda);
    assert_eq!(SearchDevice::parse("auto").unwrap(), SearchDevice::Auto);
    assert!(SearchDevice::parse("tpu").is_err());
    assert!(parse_tokens("0").is_err());
}

#[test]
fn cuda_without_a_usable_gpu_is_an_error_and_auto_falls_back() {
    // head_dim 16 is not supported by the GPU engine, so this holds with or without a GPU.
    let model = Arc::new(Model::random_with_config(minference_model::ModelConfig::tiny_llama(true), 1).unwrap());
    let err = open_device(SearchDevice::Cuda, &model).err().expect("no GPU search for this model");
    assert!(format!("{err:#}").contains("--device cuda"), "{err:#}");
    assert!(open_device(SearchDevice::Auto, &model).unwrap().is_none());
    assert!(open_device(SearchDevice::Cpu, &model).unwrap().is_none());
}

#[test]
fn unwritable_output_fails_before_loading_the_model() {
    let err = run(&args("/nonexistent-dir/config.json")).unwrap_err();
    assert!(format!("{err:#}").contains("cannot write the config"), "{err:#}");
}

#[test]
fn hf_config_is_checked_before_the_search_and_updated_in_place() {
    let dir = std::env::temp_dir().join(format!("minference-search-hf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let no_key = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/hf_config_no_key.json");
    let good = dir.join("config.json");
    std::fs::copy(&no_key, &good).unwrap();
    // Missing file, not an object: errors before the model loads (the model path does not exist).
    for (path, needle) in [(dir.join("absent.json"), "cannot read"), (dir.join("list.json"), "JSON object")] {
        if path.ends_with("list.json") {
            std::fs::write(&path, "[1]").unwrap();
        }
        let mut a = args("unused");
        a.output = None;
        a.hf_config = Some(path);
        let err = format!("{:#}", run(&a).unwrap_err());
        assert!(err.contains("--hf-config") && err.contains(needle), "{err}");
    }
    // Another model's config.json (2 layers × 4 heads against SmolLM2's 30 × 9).
    let text = std::fs::read_to_string(&good).unwrap();
    let f = good.display().to_string();
    let err = minference_core::hf_config::check_hf_model_shape(&text, &f, 30, 9).unwrap_err().to_string();
    assert!(err.contains("num_hidden_layers is 2 but the model has 30"), "{err}");
    minference_core::hf_config::check_hf_model_shape(&text, &f, 2, 4).unwrap();
    // The write keeps other keys and leaves no temporary file.
    let cfg = minference_core::ModelPatternConfig::uniform(2, 4, minference_core::HeadPattern::DEFAULT);
    write_hf_file(&good, &check_hf_config(&good).unwrap(), &cfg).unwrap();
    let written = std::fs::read_to_string(&good).unwrap();
    assert!(written.contains("\"torch_dtype\": \"bfloat16\""), "{written}");
    assert_eq!(minference_core::read_hf_config(&written, "c").unwrap().patterns, cfg);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "config.json and list.json only");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn density_outside_the_unit_interval_is_an_error() {
    for d in [0.0, 1.5, -0.2, f64::NAN] {
        let mut a = args("/nonexistent-dir/config.json");
        a.density = d;
        let err = format!("{:#}", run(&a).unwrap_err());
        assert!(err.contains("--density must be in (0, 1]"), "{err}");
    }
    assert!(density_ladder().contains(&minference_core::HeadPattern::Dense));
}

#[test]
fn from_details_reallocates_without_the_model() {
    let dir = std::env::temp_dir().join(format!("minference-search-details-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let details = dir.join("heads.tsv");
    let h = minference_search::details::HEADER;
    // One head: dense (loss 0) or A-shape 64/512 (density 0.2, loss 0.3).
    std::fs::write(
        &details,
        format!(
            "{h}\n0\t0\t1\tdense\t0\t0\tgiven\t0\t1\t1\t1\n0\t0\t0\tstream_llm\t64\t512\tgiven\t0.3\t0.7\t0.2\t0.2\n"
        ),
    )
    .unwrap();
    let out = dir.join("c.json");
    let mut a = args(out.to_str().unwrap_or_default());
    (a.synthetic_kv_retrieval, a.from_details, a.density, a.also_density) = (false, Some(details), 0.5, vec![1.0]);
    run(&a).unwrap();
    let read = |p: &Path| {
        let text = std::fs::read_to_string(p).unwrap();
        minference_core::ModelPatternConfig::from_json_str(&text, "c").unwrap().pattern(0, 0).unwrap()
    };
    assert_eq!(read(&out), minference_core::HeadPattern::AShape { n_init: 64, n_local: 512 });
    assert_eq!(read(&dir.join("c.density-1.json")), minference_core::HeadPattern::Dense);
    a.from_details = Some(dir.join("absent.tsv"));
    let err = format!("{:#}", run(&a).unwrap_err());
    assert!(err.contains("--from-details"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failed_search_leaves_no_empty_config() {
    let out = std::env::temp_dir().join(format!("minference-search-cli-{}.json", std::process::id()));
    assert!(run(&args(out.to_str().unwrap_or_default())).is_err(), "the model does not exist");
    assert!(!out.exists());
}

#[test]
fn layer_sensitivity_scales_each_layer_by_one_factor() {
    let model = Arc::new(Model::random_with_config(minference_model::ModelConfig::tiny_llama(true), 5).unwrap());
    let tokens: Vec<u32> = (0..400).map(|i| ((i * 37 + 11) % 300) as u32).collect();
    let mut opts = search_options("output-residual", "work:0.5", "kernel-aware", &[], Some(100)).unwrap();
    opts.space.given.extend(density_ladder());
    let base = minference_search::search_model(Arc::clone(&model), &tokens, &opts, &|_, _| {}).unwrap();
    let mut a = args("unused");
    a.density = 0.6;
    let weighed = weigh_by_layer_sensitivity(&a, &opts, &model, &[&tokens, &tokens[..300]], base.clone()).unwrap();
    assert!(weigh_by_layer_sensitivity(&a, &opts, &model, &[], base.clone()).is_err());
    for layer in 0..2 {
        let ratios: Vec<f64> = base
            .heads
            .iter()
            .zip(&weighed.heads)
            .filter(|(b, _)| b.layer == layer)
            .flat_map(|(b, w)| b.search.candidates.iter().zip(&w.search.candidates))
            .filter(|(x, _)| x.score > 1e-9)
            .map(|(x, y)| y.score / x.score)
            .collect();
        assert!(!ratios.is_empty(), "layer {layer}: no candidate with an error");
        assert!(ratios.iter().all(|r| r.is_finite() && *r > 0.0 && (r - ratios[0]).abs() < 1e-9), "{ratios:?}");
    }
}

#[test]
fn sensitivity_metric_parses_and_bad_ones_are_errors() {
    use minference_search::sensitivity::SensitivityMetric;
    assert_eq!(sensitivity_metric("kl", 512).unwrap(), SensitivityMetric::Kl { rows: 512 });
    assert_eq!(sensitivity_metric("residual", 0).unwrap(), SensitivityMetric::Residual);
    assert!(sensitivity_metric("kl", 0).is_err());
    assert!(sensitivity_metric("energy", 512).is_err());
}
