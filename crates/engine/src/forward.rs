//! The one forward of the decoder, written once over [`Device`]: embedding, per layer the
//! attention norm, fused Q/K/V + RoPE, attention (one pass per group of KV heads), output
//! projection and residual add, then the MLP norm, gate/up, SwiGLU, down and residual add, all in
//! token chunks; the final norm and LM head on the last position. The CPU engine, one GPU and each
//! GPU of a tensor-parallel group run this same walk (prefill and decode steps alike); what
//! differs per device is how each operation is carried out and where its buffers live.

use crate::observer::Observer;
use minference_core::HeadPattern;
use std::ops::Range;

/// A finished layer of a running prefill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefillProgress {
    pub layer: usize,
    pub layers: usize,
}

/// How one forward call walks the model: its new tokens after `cached` ones, the token chunk of
/// the norms, projections and MLP, and the attention passes per layer (each covering a group of
/// KV heads: one pass for the whole layer, or one per KV head).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    pub tokens: usize,
    pub cached: usize,
    pub chunk: usize,
    pub passes: usize,
    pub layers: usize,
}

impl Walk {
    /// Token ranges of the chunks, in order (none for an empty walk).
    pub fn chunks(&self) -> impl Iterator<Item = Range<usize>> {
        let (n, c) = (self.tokens, self.chunk.max(1));
        (0..n).step_by(c).map(move |c0| c0..(c0 + c).min(n))
    }
}

/// Which of a layer's two RMSNorm weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    Attention,
    Mlp,
}

/// Timed phases of a forward (a device may time them; the GPU's prefill does). The walk brackets
/// the first four; `Offload` and `LmHead` a device times around its own operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Embed,
    Qkv,
    OProj,
    Mlp,
    Offload,
    LmHead,
}

impl Phase {
    pub const COUNT: usize = 6;
}

/// The operations of one forward call on one device. The implementor holds that call's buffers
/// (the residual stream, the chunk scratch, Q/K/V and the KV cache it writes), so every operation
/// names only the layer, the attention pass and the token rows it works on.
pub trait Device {
    type Error;
    /// What an observer is shown of an attention pass (host slices, device tensors).
    type Tensor: ?Sized;

    fn walk(&self) -> Walk;
    /// The tokens' embedding rows into the residual stream.
    fn embed(&mut self) -> Result<(), Self::Error>;
    /// Before the layer's first pass (the CPU widens the cached K/V an extension attends over).
    fn begin_layer(&mut self, _layer: usize) -> Result<(), Self::Error> {
        Ok(())
    }
    /// RMSNorm of the residual `rows` into the chunk buffer.
    fn rms_norm(&mut self, layer: usize, norm: Norm, rows: Range<usize>) -> Result<(), Self::Error>;
    /// Q/K/V projections (and biases) of the normed `rows` for the KV heads of `pass`, RoPE, Q to
    /// the attention input, K/V into the cache.
    fn qkv_rope(&mut self, layer: usize, pass: usize, rows: Range<usize>) -> Result<(), Self::Error>;
    /// Attention of `pass`'s heads over every token (`patterns`: the layer's per-head patterns,
    /// global head ids; `None` = dense), shown to `observer`; its output becomes the input of the
    /// output projection.
    fn attention(
        &mut self,
        layer: usize,
        pass: usize,
        patterns: Option<&[HeadPattern]>,
        observer: &mut dyn Observer<Self::Tensor, Self::Error>,
    ) -> Result<(), Self::Error>;
    /// The output projection of `rows` into the update buffer.
    fn o_proj(&mut self, layer: usize, rows: Range<usize>) -> Result<(), Self::Error>;
    /// Adds the update of `rows` to the residual stream (summed over a tensor-parallel group first).
    fn add_update(&mut self, rows: Range<usize>) -> Result<(), Self::Error>;
    /// Between the attention half and the MLP (the GPU moves an offloaded layer's K/V to the host,
    /// timed as [`Phase::Offload`]).
    fn after_attention(&mut self, _layer: usize) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Gate and up projections of the normed `rows`.
    fn gate_up(&mut self, layer: usize, rows: Range<usize>) -> Result<(), Self::Error>;
    fn swiglu(&mut self, rows: Range<usize>) -> Result<(), Self::Error>;
    /// The down projection of `rows` into the update buffer.
    fn down(&mut self, layer: usize, rows: Range<usize>) -> Result<(), Self::Error>;
    /// After the layer (the GPU synchronises and reads its timers).
    fn end_layer(&mut self, _layer: usize) -> Result<(), Self::Error> {
        Ok(())
    }
    fn phase_start(&mut self, _phase: Phase) -> Result<(), Self::Error> {
        Ok(())
    }
    fn phase_stop(&mut self, _phase: Phase) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Final norm and LM head of the last position (timed as [`Phase::LmHead`]); the logits on the
    /// host.
    fn lm_head(&mut self) -> Result<Vec<f32>, Self::Error>;
    /// After the LM head (the GPU synchronises and reads its timers).
    fn finish(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    /// A copy of the residual stream, `[tokens, hidden]` f32 on the host (after the last layer, or
    /// entering a layer for an observer that wants layer inputs).
    fn residual(&mut self) -> Result<Vec<f32>, Self::Error>;
}

/// Runs the forward `dev` describes (`attention` picks each layer's patterns) and returns the last
/// position's logits. `observer` sees every attention pass, may stop the walk after a layer, and
/// may take the final residual stream.
pub fn forward<D: Device + ?Sized>(
    dev: &mut D,
    attention: &crate::AttentionChoice,
    observer: &mut dyn Observer<D::Tensor, D::Error>,
    progress: &mut dyn FnMut(PrefillProgress),
) -> Result<Vec<f32>, D::Error> {
    let walk = dev.walk();
    dev.phase_start(Phase::Embed)?;
    dev.embed()?;
    dev.phase_stop(Phase::Embed)?;
    // With one chunk the normed rows survive every pass: the norm runs once per layer.
    let norm_every_pass = walk.tokens > walk.chunk;
    for l in 0..walk.layers {
        dev.begin_layer(l)?;
        if observer.wants_layer_inputs() {
            let input = dev.residual()?;
            observer.layer_input(l, &input);
        }
        let patterns = attention.layer_patterns(l, walk.tokens, walk.cached);
        for pass in 0..walk.passes {
            dev.phase_start(Phase::Qkv)?;
            for rows in walk.chunks() {
                if pass == 0 || norm_every_pass {
                    dev.rms_norm(l, Norm::Attention, rows.clone())?;
                }
                dev.qkv_rope(l, pass, rows)?;
            }
            dev.phase_stop(Phase::Qkv)?;
            dev.attention(l, pass, patterns, observer)?;
        }
        // The residual changes only after every pass read it.
        dev.phase_start(Phase::OProj)?;
        for rows in walk.chunks() {
            dev.o_proj(l, rows.clone())?;
            dev.add_update(rows)?;
        }
        dev.phase_stop(Phase::OProj)?;
        dev.after_attention(l)?;
        dev.phase_start(Phase::Mlp)?;
        for rows in walk.chunks() {
            dev.rms_norm(l, Norm::Mlp, rows.clone())?;
            dev.gate_up(l, rows.clone())?;
            dev.swiglu(rows.clone())?;
            dev.down(l, rows.clone())?;
            dev.add_update(rows)?;
        }
        dev.phase_stop(Phase::Mlp)?;
        dev.end_layer(l)?;
        progress(PrefillProgress { layer: l, layers: walk.layers });
        if observer.stop_after(l) {
            break;
        }
    }
    let logits = dev.lm_head()?;
    dev.finish()?;
    if observer.wants_residual() {
        let residual = dev.residual()?;
        observer.residual(residual);
    }
    Ok(logits)
}

#[cfg(test)]
#[path = "forward_tests.rs"]
mod tests;
