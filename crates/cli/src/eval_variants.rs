//! The attention variants an eval compares (`--attention`, `--budgets`, `--adaptive`, `--configs`)
//! and their groups in the Pareto picture.

use crate::model_args::{attention_choice, AttentionKind, ModelArgs};
use anyhow::{bail, Result};
use minference_core::{AdaptiveBudget, HeadPattern};
use minference_engine::{AttentionChoice, MInferencePlan};
use minference_model::Model;
use std::path::PathBuf;

/// The attention kinds to compare; the first one is the reference.
#[derive(clap::Args, Debug)]
pub struct VariantArgs {
    /// Attention kinds (`minference` = --config, the shipped config, or VS(1000, 6096)).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [AttentionKind::Dense, AttentionKind::Minference])]
    pub attention: Vec<AttentionKind>,
    /// Extra variants with one Vertical-Slash budget on every head, `verticals:slashes`
    /// (e.g. `100:800,350:100`).
    #[arg(long, value_delimiter = ',', value_parser = parse_budget)]
    pub budgets: Vec<(usize, usize)>,
    /// Extra variants with one adaptive Vertical-Slash rule on every head: keep a share gamma of
    /// each head's estimated mass (comma-separated gammas in (0, 1], default bounds v 30..6096,
    /// s 100..6096).
    #[arg(long, value_delimiter = ',', value_parser = parse_gamma)]
    pub adaptive: Vec<f64>,
    /// Extra variants from more pattern configs (comma-separated), each `PATH` or `GROUP=PATH`; the
    /// group names the config's kind in the Pareto picture (default `searched`), e.g.
    /// `searched=d04.json,adaptive=a09.json`.
    #[arg(long, value_delimiter = ',', value_parser = parse_config_variant)]
    pub configs: Vec<(String, PathBuf)>,
}

/// One attention variant of an eval: its short title, its group in the Pareto picture and what it runs.
pub struct Variant {
    pub title: String,
    pub group: String,
    pub attention: AttentionChoice,
}

fn parse_config_variant(s: &str) -> Result<(String, PathBuf), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("an empty --configs entry".into());
    }
    match s.split_once('=') {
        Some((g, p)) if g.trim().is_empty() || p.trim().is_empty() => {
            Err(format!("`{s}`: expected PATH or GROUP=PATH"))
        }
        Some((g, p)) => Ok((g.trim().to_string(), PathBuf::from(p.trim()))),
        None => Ok(("searched".to_string(), PathBuf::from(s))),
    }
}

fn parse_budget(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("`{s}` is not a budget `verticals:slashes` (e.g. 100:800)");
    let (v, sl) = s.trim().split_once(':').ok_or_else(bad)?;
    let (v, sl) = (v.trim().parse::<usize>().map_err(|_| bad())?, sl.trim().parse::<usize>().map_err(|_| bad())?);
    if v == 0 && sl == 0 {
        return Err("a budget needs at least one vertical or slash".into());
    }
    Ok((v, sl))
}

fn parse_gamma(s: &str) -> Result<f64, String> {
    let gamma: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a share of the mass (e.g. 0.9)"))?;
    minference_core::adaptive::gamma_to_ppm(gamma).map_err(|e| e.to_string())?;
    Ok(gamma)
}

/// Every requested variant, in order: `--attention`, `--budgets`, `--adaptive`, `--configs`.
pub fn variants(args: &VariantArgs, model_args: &ModelArgs, model: &Model) -> Result<Vec<Variant>> {
    let mut out = Vec::new();
    for &kind in &args.attention {
        let (choice, what) = attention_choice(model_args, model.config(), kind, model_args.dense_below.or_zero())?;
        let title = match (kind, &model_args.config) {
            (AttentionKind::Dense, _) => "dense".to_string(),
            (AttentionKind::Minference, Some(p)) => {
                format!("config {}", p.file_stem().unwrap_or_default().to_string_lossy())
            }
            (AttentionKind::Minference, None) if what.contains(".json") => "shipped config".to_string(),
            (AttentionKind::Minference, None) => "VS(1000,6096)".to_string(),
        };
        eprintln!("attention `{title}`: {what}");
        let group = if kind == AttentionKind::Dense { "dense" } else { "searched" };
        out.push(Variant { title, group: group.into(), attention: choice });
    }
    for &(k_v, k_s) in &args.budgets {
        let plan = MInferencePlan::uniform(model.config(), HeadPattern::VerticalSlash { k_v, k_s })
            .with_starting_layer(model_args.starting_layer)
            .with_dense_below(model_args.dense_below.or_zero());
        out.push(Variant {
            title: format!("VS({k_v},{k_s})"),
            group: "uniform VS".into(),
            attention: AttentionChoice::MInference(plan),
        });
    }
    for &gamma in &args.adaptive {
        let pattern = AdaptiveBudget { gamma, ..AdaptiveBudget::default() }.to_pattern()?;
        let plan = MInferencePlan::uniform(model.config(), pattern)
            .with_starting_layer(model_args.starting_layer)
            .with_dense_below(model_args.dense_below.or_zero());
        out.push(Variant {
            title: format!("adaptive({gamma})"),
            group: "uniform adaptive".into(),
            attention: AttentionChoice::MInference(plan),
        });
    }
    for (group, path) in &args.configs {
        let with_config = ModelArgs { config: Some(path.clone()), ..model_args.clone() };
        let (attention, what) = attention_choice(
            &with_config,
            model.config(),
            AttentionKind::Minference,
            model_args.dense_below.or_zero(),
        )?;
        let title = path.file_stem().unwrap_or_default().to_string_lossy().to_string();
        eprintln!("attention `{title}` ({group}): {what}");
        out.push(Variant { title, group: group.clone(), attention });
    }
    if out.is_empty() {
        bail!("nothing to evaluate: give --attention, --budgets, --adaptive or --configs");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_gammas_and_configs_parse() {
        assert_eq!(parse_budget("100:800"), Ok((100, 800)));
        assert!(parse_budget("100").is_err());
        assert!(parse_budget("0:0").is_err());
        assert!(parse_budget("a:1").is_err());
        assert_eq!(parse_config_variant("a.json"), Ok(("searched".into(), PathBuf::from("a.json"))));
        assert_eq!(parse_config_variant("adaptive = b.json"), Ok(("adaptive".into(), PathBuf::from("b.json"))));
        assert!(parse_config_variant("=b.json").is_err());
        assert!(parse_config_variant("g=").is_err());
        assert!(parse_config_variant(" ").is_err());
        assert_eq!(parse_gamma("0.9"), Ok(0.9));
        for bad in ["0", "1.5", "x", "-0.2", "NaN"] {
            assert!(parse_gamma(bad).is_err(), "{bad}");
        }
    }
}
