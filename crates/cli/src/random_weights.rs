//! Random-weight models of named shapes, for `bench e2e` and `--random-weights SHAPE` (run, serve,
//! bench serve): one place for the shape's config, the weights' seed and the seeded prompts, so
//! that every command runs the same model on the same token ids.

use anyhow::{bail, Result};
use minference_bench::{E2eOptions, E2E_SEED};
use minference_model::ModelConfig;

/// The seed of the weights (on the GPU and on the host: the two generators differ, so a CPU and a
/// GPU model of one shape have different weights).
pub const SEED: u64 = E2E_SEED;

/// The config of `shape` (`ModelConfig::NAMED_SHAPES`), `layers` deep when given.
pub fn shape_config(shape: &str, layers: Option<usize>) -> Result<ModelConfig> {
    let mut config = ModelConfig::named_shape(shape)?;
    match layers {
        Some(0) => bail!("--layers must be at least 1"),
        Some(l) => config.layers = l,
        None => {}
    }
    Ok(config)
}

/// `n` seeded pseudo-random token ids for `cfg`: the prompt `bench e2e` times at length `n`.
pub fn prompt(cfg: &ModelConfig, n: usize) -> Result<Vec<u32>> {
    Ok(E2eOptions::default().prompt(cfg, n)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_layers_and_prompts() {
        let c = shape_config("smollm2-135m", Some(2)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.layers, c.hidden), (2, 576));
        assert_eq!(shape_config("qwen2.5-7b", None).map(|c| c.layers).ok(), Some(28));
        assert!(shape_config("smollm2-135m", Some(0)).is_err());
        assert!(shape_config("gpt-5", None).is_err());
        let p = prompt(&c, 300).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.len(), 300);
        assert_eq!(p, prompt(&c, 300).unwrap_or_default(), "seeded");
        assert!(p.iter().all(|&t| (t as usize) < c.vocab));
    }
}
