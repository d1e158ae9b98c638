//! The one way to watch a forward ([`crate::forward::forward`]): an [`Observer`] sees every
//! attention pass of a prefill (search, captures, failure injection), may end the walk after a
//! layer (a capture needs no more), and may take the residual stream after the last layer
//! (perplexity scores every position). The CPU shows host slices, the GPU device tensors.

use minference_core::{HeadPattern, SparseIndex};

/// One attention call of a prefill, right after it ran: the pass's query heads `[heads, tokens, D]`,
/// its KV heads `[kv_heads, kv_tokens, D]` and its output `[heads, tokens, D]`. Head ids are global
/// (the model's numbering, also on a tensor-parallel shard). `patterns` and `index` say what the
/// kernels computed (kernel density is counted from them, eval's `CoverageRecorder`).
pub struct AttentionPass<'a, T: ?Sized> {
    pub layer: usize,
    pub first_head: usize,
    pub heads: usize,
    pub first_kv_head: usize,
    pub kv_heads: usize,
    pub tokens: usize,
    /// Keys per KV head: the cached ones and the new `tokens`.
    pub kv_tokens: usize,
    pub head_dim: usize,
    pub q: &'a T,
    pub k: &'a T,
    pub v: &'a T,
    pub o: &'a T,
    /// The pattern of each of the pass's `heads`; empty when the whole pass ran dense.
    pub patterns: &'a [HeadPattern],
    /// The sparse index the pass ran with, where it is on the host (the CPU's); `None` for a dense
    /// pass and on the GPU, whose index never leaves the device.
    pub index: Option<&'a SparseIndex>,
}

/// Watches a forward. Every method has a do-nothing default; an error from
/// [`attention`](Self::attention) ends the forward with that error.
pub trait Observer<T: ?Sized, E> {
    fn attention(&mut self, _pass: &AttentionPass<'_, T>) -> Result<(), E> {
        Ok(())
    }
    /// Whether the forward may end after `layer` (the LM head still runs, on what it has).
    fn stop_after(&self, _layer: usize) -> bool {
        false
    }
    /// Whether the forward should hand over its final residual stream.
    fn wants_residual(&self) -> bool {
        false
    }
    /// The residual stream after the last layer, `[tokens, hidden]` f32 (before the final norm).
    fn residual(&mut self, _residual: Vec<f32>) {}
    /// Whether the forward should hand over each layer's input residual stream (a copy per layer).
    fn wants_layer_inputs(&self) -> bool {
        false
    }
    /// The residual stream entering `layer`, `[tokens, hidden]` f32, before its attention runs
    /// (the search weighs a head's error against the stream it is added to).
    fn layer_input(&mut self, _layer: usize, _residual: &[f32]) {}
}

/// Watches nothing.
pub struct NoObserver;

impl<T: ?Sized, E> Observer<T, E> for NoObserver {}

/// Two observers of one forward: both see every pass (the first first, an error of the first ends
/// it), the walk ends early only where both allow it, the residual goes to each that wants it.
pub struct Both<'a, T: ?Sized, E>(pub &'a mut dyn Observer<T, E>, pub &'a mut dyn Observer<T, E>);

impl<T: ?Sized, E> Observer<T, E> for Both<'_, T, E> {
    fn attention(&mut self, pass: &AttentionPass<'_, T>) -> Result<(), E> {
        self.0.attention(pass)?;
        self.1.attention(pass)
    }
    fn stop_after(&self, layer: usize) -> bool {
        self.0.stop_after(layer) && self.1.stop_after(layer)
    }
    fn wants_residual(&self) -> bool {
        self.0.wants_residual() || self.1.wants_residual()
    }
    fn wants_layer_inputs(&self) -> bool {
        self.0.wants_layer_inputs() || self.1.wants_layer_inputs()
    }
    fn layer_input(&mut self, layer: usize, residual: &[f32]) {
        if self.0.wants_layer_inputs() {
            self.0.layer_input(layer, residual);
        }
        if self.1.wants_layer_inputs() {
            self.1.layer_input(layer, residual);
        }
    }
    fn residual(&mut self, residual: Vec<f32>) {
        match (self.0.wants_residual(), self.1.wants_residual()) {
            (true, true) => {
                self.0.residual(residual.clone());
                self.1.residual(residual);
            }
            (true, false) => self.0.residual(residual),
            (false, _) => self.1.residual(residual),
        }
    }
}

/// Keeps the residual stream after the last layer of one prefill, for scoring every position on
/// the host (an ordinary prefill returns only the last position's logits).
#[derive(Debug, Default)]
pub struct ResidualExport {
    kept: Option<Vec<f32>>,
}

impl ResidualExport {
    /// The kept stream (once).
    pub fn take(&mut self) -> Option<Vec<f32>> {
        self.kept.take()
    }

    /// Runs `prefill` with a fresh export as its observer and returns the stream it kept beside
    /// the prefill's result; `missing()` when the prefill ended without one. Every residual-returning
    /// prefill (CPU and GPU engines, the CPU coverage prefill) is this call.
    pub fn collect<R, E>(
        prefill: impl FnOnce(&mut Self) -> Result<R, E>,
        missing: impl FnOnce() -> E,
    ) -> Result<(Vec<f32>, R), E> {
        let mut export = Self::default();
        let result = prefill(&mut export)?;
        let kept = export.take().ok_or_else(missing)?;
        Ok((kept, result))
    }
}

impl<T: ?Sized, E> Observer<T, E> for ResidualExport {
    fn wants_residual(&self) -> bool {
        true
    }
    fn residual(&mut self, residual: Vec<f32>) {
        self.kept = Some(residual);
    }
}

/// Q and K of one (layer, head) after RoPE, `[tokens, head_dim]` each.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedQk {
    pub layer: usize,
    pub head: usize,
    pub tokens: usize,
    pub head_dim: usize,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
}

/// Captures Q and K of one (layer, query head) from host passes and ends the forward after that
/// layer.
#[derive(Debug)]
pub struct QkCapture {
    layer: usize,
    head: usize,
    captured: Option<CapturedQk>,
}

impl QkCapture {
    pub fn new(layer: usize, head: usize) -> Self {
        QkCapture { layer, head, captured: None }
    }
    pub fn take(&mut self) -> Option<CapturedQk> {
        self.captured.take()
    }
}

impl<E> Observer<[f32], E> for QkCapture {
    fn attention(&mut self, p: &AttentionPass<'_, [f32]>) -> Result<(), E> {
        if p.layer != self.layer || !(p.first_head..p.first_head + p.heads).contains(&self.head) {
            return Ok(());
        }
        let local = self.head - p.first_head;
        let kv = local / (p.heads / p.kv_heads.max(1)).max(1);
        let (q_len, k_len) = (p.tokens * p.head_dim, p.kv_tokens * p.head_dim);
        // A pass whose slices are shorter than its shape has nothing to capture: leave it.
        let (Some(q), Some(k)) = (p.q.get(local * q_len..(local + 1) * q_len), p.k.get(kv * k_len..(kv + 1) * k_len))
        else {
            return Ok(());
        };
        self.captured = Some(CapturedQk {
            layer: p.layer,
            head: self.head,
            tokens: p.tokens,
            head_dim: p.head_dim,
            q: q.to_vec(),
            k: k.to_vec(),
        });
        Ok(())
    }
    fn stop_after(&self, layer: usize) -> bool {
        layer == self.layer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass<'a>(layer: usize, first_head: usize, q: &'a [f32], k: &'a [f32]) -> AttentionPass<'a, [f32]> {
        // Two query heads over one KV head, 2 tokens of D = 2.
        AttentionPass {
            layer,
            first_head,
            heads: 2,
            first_kv_head: first_head / 2,
            kv_heads: 1,
            tokens: 2,
            kv_tokens: 2,
            head_dim: 2,
            q,
            k,
            v: k,
            o: q,
            patterns: &[],
            index: None,
        }
    }

    #[test]
    fn qk_capture_keeps_its_head_of_its_layer_only_and_stops_there() {
        let q: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let k: Vec<f32> = (10..14).map(|i| i as f32).collect();
        let mut c = QkCapture::new(3, 5);
        let obs: &mut dyn Observer<[f32], ()> = &mut c;
        // Wrong layer, then the right layer's other group: nothing kept.
        obs.attention(&pass(2, 4, &q, &k)).unwrap_or(());
        obs.attention(&pass(3, 0, &q, &k)).unwrap_or(());
        assert!(!obs.stop_after(2));
        assert!(obs.stop_after(3));
        obs.attention(&pass(3, 4, &q, &k)).unwrap_or(());
        let got = c.take().unwrap_or_else(|| panic!("head 5 of layer 3 was captured"));
        // Head 5 is the second head of the pass starting at 4: q rows 4..8, its group's K.
        assert_eq!((got.layer, got.head, got.tokens, got.head_dim), (3, 5, 2, 2));
        assert_eq!(got.q, vec![4.0, 5.0, 6.0, 7.0]);
        assert_eq!(got.k, k);
    }

    #[test]
    fn a_short_pass_is_not_captured_and_does_not_panic() {
        let (q, k) = (vec![0.0f32; 3], vec![0.0f32; 4]);
        let mut c = QkCapture::new(0, 1);
        Observer::<[f32], ()>::attention(&mut c, &pass(0, 0, &q, &k)).unwrap_or(());
        assert!(c.take().is_none());
    }

    #[test]
    fn residual_export_asks_for_and_keeps_the_stream_once() {
        let mut r = ResidualExport::default();
        let obs: &mut dyn Observer<[f32], ()> = &mut r;
        assert!(obs.wants_residual());
        obs.residual(vec![1.0, 2.0]);
        assert_eq!(r.take(), Some(vec![1.0, 2.0]));
        assert_eq!(r.take(), None);
        assert!(!Observer::<[f32], ()>::wants_residual(&NoObserver));
    }

    #[test]
    fn both_observers_see_every_pass_and_stop_only_where_both_may() {
        let (q, k) = ((0..8).map(|i| i as f32).collect::<Vec<_>>(), vec![1.0f32; 4]);
        let (mut c, mut r) = (QkCapture::new(1, 0), ResidualExport::default());
        {
            let mut both = Both::<[f32], ()>(&mut c, &mut r);
            both.attention(&pass(1, 0, &q, &k)).unwrap_or(());
            // The capture may stop after layer 1, the export needs every layer.
            assert!(!both.stop_after(1));
            assert!(both.wants_residual());
            both.residual(vec![3.0]);
        }
        assert_eq!(c.take().map(|h| h.q), Some(vec![0.0, 1.0, 2.0, 3.0]));
        assert_eq!(r.take(), Some(vec![3.0]));
        let (mut a, mut b) = (QkCapture::new(2, 0), QkCapture::new(2, 1));
        assert!(Both::<[f32], ()>(&mut a, &mut b).stop_after(2));
    }

    #[test]
    fn collect_returns_what_the_prefill_kept_or_the_missing_error() {
        let kept = ResidualExport::collect(
            |export| {
                Observer::<[f32], &str>::residual(export, vec![1.0, 2.0]);
                Ok::<_, &str>(7)
            },
            || "missing",
        );
        assert_eq!(kept, Ok((vec![1.0, 2.0], 7)));
        let none = ResidualExport::collect(|_| Ok::<_, &str>(7), || "missing");
        assert_eq!(none, Err("missing"));
        let failed = ResidualExport::collect(|_| Err::<u8, _>("prefill"), || "missing");
        assert_eq!(failed, Err("prefill"));
    }
}
