//! Tensor parallelism over heads (issue 6): which KV heads (with their query groups) and which
//! slice of the MLP's intermediate dimension one GPU of a group owns, and the all-reduce the
//! forward calls after the attention output projection and after the MLP.
//!
//! A shard runs the ordinary forward on a *local* model config (its heads, its KV heads, its
//! intermediate width); only the f32 residual stream and the vocabulary-sized tensors are whole on
//! every GPU. Each rank's partial update (bf16, one token chunk at a time) is summed over the group
//! with an all-reduce and then added to every rank's residual, so all ranks keep the same stream.

use crate::error::{EngineError, Result};
use crate::precision::Precision;
use minference_cuda::Gpu;
use minference_model::ModelConfig;
use std::ops::Range;

/// Sums 16-bit buffers (bf16 or f16) over the GPUs of a tensor-parallel group, in place, ordered
/// on `gpu`'s stream. Implemented with NCCL by `minference-multi-gpu`; the engine only needs this
/// one operation.
pub trait Collective: Send {
    fn all_reduce_sum(&self, gpu: &Gpu, ptr: u64, count: usize, precision: Precision) -> Result<()>;
}

/// The part of a model one GPU of a tensor-parallel group computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorShard {
    pub rank: usize,
    pub world: usize,
    /// KV heads of this rank (contiguous, global ids); its query heads are their groups.
    pub kv_heads: Range<usize>,
    /// Columns of the MLP's intermediate dimension.
    pub intermediate: Range<usize>,
}

/// `[len * part / parts, len * (part + 1) / parts)`: contiguous, sizes differ by at most one.
fn even_split(len: usize, part: usize, parts: usize) -> Range<usize> {
    len * part / parts..len * (part + 1) / parts
}

impl TensorShard {
    /// The whole model (one GPU).
    pub fn whole(cfg: &ModelConfig) -> Self {
        TensorShard { rank: 0, world: 1, kv_heads: 0..cfg.kv_heads, intermediate: 0..cfg.intermediate }
    }

    /// Rank `rank` of `world`: KV heads split as evenly as possible (a model with 3 KV heads on 2
    /// GPUs gives 2 and 1), the intermediate dimension likewise.
    pub fn new(cfg: &ModelConfig, rank: usize, world: usize) -> Result<Self> {
        if world == 0 || rank >= world {
            return Err(EngineError::Input(format!("rank {rank} of a group of {world} GPUs")));
        }
        if world > cfg.kv_heads {
            return Err(EngineError::Input(format!(
                "{} has {} KV heads; it cannot be split over {world} GPUs (at most {})",
                cfg.name, cfg.kv_heads, cfg.kv_heads
            )));
        }
        Ok(TensorShard {
            rank,
            world,
            kv_heads: even_split(cfg.kv_heads, rank, world),
            intermediate: even_split(cfg.intermediate, rank, world),
        })
    }

    pub fn is_whole(&self) -> bool {
        self.world == 1
    }

    /// Global id of this rank's first query head.
    pub fn first_head(&self, cfg: &ModelConfig) -> usize {
        self.kv_heads.start * (cfg.heads / cfg.kv_heads)
    }

    /// The config this rank's forward runs on: its heads and intermediate width, everything else
    /// (hidden size, vocabulary, context) as the model's.
    pub fn local_config(&self, cfg: &ModelConfig) -> ModelConfig {
        let group = cfg.heads / cfg.kv_heads;
        let mut local = cfg.clone();
        local.kv_heads = self.kv_heads.len();
        local.heads = self.kv_heads.len() * group;
        local.intermediate = self.intermediate.len();
        local
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shape(name: &str) -> ModelConfig {
        ModelConfig::named_shape(name).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn smollm2_on_two_gpus_splits_three_kv_heads_two_and_one() {
        let cfg = shape("smollm2-135m");
        let a = TensorShard::new(&cfg, 0, 2).unwrap_or_else(|e| panic!("{e}"));
        let b = TensorShard::new(&cfg, 1, 2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.kv_heads.clone(), b.kv_heads.clone()), (0..1, 1..3));
        assert_eq!(a.local_config(&cfg).heads + b.local_config(&cfg).heads, cfg.heads);
        assert_eq!(b.first_head(&cfg), 3);
    }

    #[test]
    fn more_gpus_than_kv_heads_is_an_error() {
        let cfg = shape("smollm2-135m");
        assert!(TensorShard::new(&cfg, 0, 4).is_err());
        assert!(TensorShard::new(&cfg, 2, 2).is_err());
    }

    proptest! {
        #[test]
        fn shards_tile_heads_and_intermediate(world in 1usize..9, kv in 1usize..17, inter in 1usize..5000) {
            prop_assume!(world <= kv);
            let mut cfg = shape("llama-3-8b");
            cfg.kv_heads = kv;
            cfg.heads = kv * 4;
            cfg.intermediate = inter;
            let shards: Vec<TensorShard> =
                (0..world).map(|r| TensorShard::new(&cfg, r, world).unwrap_or_else(|e| panic!("{e}"))).collect();
            let mut next_kv = 0;
            let mut next_i = 0;
            for s in &shards {
                prop_assert_eq!(s.kv_heads.start, next_kv);
                prop_assert_eq!(s.intermediate.start, next_i);
                prop_assert!(!s.kv_heads.is_empty());
                next_kv = s.kv_heads.end;
                next_i = s.intermediate.end;
            }
            prop_assert_eq!(next_kv, kv);
            prop_assert_eq!(next_i, inter);
        }
    }
}
