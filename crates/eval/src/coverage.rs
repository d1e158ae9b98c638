//! Kernel density of real prefills: an engine [`Observer`] that adds up, from the patterns and the
//! index each attention pass actually ran with, how many causal (query, key) pairs its kernels
//! computed (`minference_core::coverage`). Dense passes count every causal pair.

use minference_core::coverage::{head_coverage, index_head_coverage, Coverage};
use minference_core::{AttnShape, HeadPattern, HostBackend, SeqLen};
use minference_engine::{AttentionChoice, AttentionPass, Both, CpuEngine, Observer, PrefillStats, ResidualExport};
use minference_model::ModelError;

/// Sums the coverage of the host attention passes it sees. Only the CPU's passes carry their
/// index (the GPU's stays on the device), so the recorder watches host passes only.
#[derive(Debug, Default)]
pub struct CoverageRecorder {
    total: Coverage,
}

impl CoverageRecorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The coverage summed since the last `take`, then cleared.
    pub fn take(&mut self) -> Coverage {
        std::mem::take(&mut self.total)
    }
}

impl<E> Observer<[f32], E> for CoverageRecorder {
    /// Adds every head of the pass. The backend has already validated the shape, so an accounting
    /// error here can only mean an index it accepted but core cannot read: those heads are left
    /// out rather than failing a finished attention pass.
    fn attention(&mut self, p: &AttentionPass<'_, [f32]>) -> Result<(), E> {
        let seq = SeqLen { q_len: p.tokens, kv_len: p.kv_tokens };
        let shape = AttnShape { heads: p.heads, kv_heads: p.kv_heads, head_dim: p.head_dim, seqs: vec![seq] };
        for h in 0..p.heads {
            let pattern = p.patterns.get(h).copied().unwrap_or(HeadPattern::Dense);
            let cov = match p.index {
                Some(idx) if pattern.reads_index() => index_head_coverage(&pattern, idx, &shape, 0, h),
                _ => head_coverage(&pattern, &[], seq),
            };
            if let Ok(c) = cov {
                self.total.add(&c);
            }
        }
        Ok(())
    }
}

/// A prefill of `tokens` on the CPU engine that returns the residual stream after the last layer
/// (as `CpuEngine::prefill_hidden`), its stats and the kernel density of its attention passes.
pub fn prefill_hidden_with_coverage<B: HostBackend>(
    engine: &mut CpuEngine<B>,
    tokens: &[u32],
    attention: &AttentionChoice,
    progress: &mut dyn FnMut(minference_engine::PrefillProgress),
) -> Result<(Vec<f32>, PrefillStats, Coverage), ModelError> {
    let mut coverage = CoverageRecorder::new();
    let (hidden, (_, stats)) = ResidualExport::collect(
        |export| engine.prefill_observed(tokens, attention, progress, &mut Both(&mut coverage, export)),
        || ModelError::Input("prefill kept no hidden states".into()),
    )?;
    Ok((hidden, stats, coverage.take()))
}
