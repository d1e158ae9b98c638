//! The walk's order, checked on a device that records its calls.

use super::*;
use crate::observer::{AttentionPass, Both, NoObserver, Observer, ResidualExport};
use crate::{AttentionChoice, MInferencePlan};

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Embed,
    Norm(usize, Norm, Range<usize>),
    Qkv(usize, usize, Range<usize>),
    Attn(usize, usize, bool),
    OProj(usize, Range<usize>),
    Add(Range<usize>),
    Down(usize, Range<usize>),
    Head,
}

struct Recorder {
    walk: Walk,
    calls: Vec<Call>,
}

impl Recorder {
    fn new(tokens: usize, chunk: usize, passes: usize, layers: usize) -> Self {
        Recorder { walk: Walk { tokens, cached: 0, chunk, passes, layers }, calls: Vec::new() }
    }
}

impl Device for Recorder {
    type Error = String;
    type Tensor = [f32];
    fn walk(&self) -> Walk {
        self.walk
    }
    fn embed(&mut self) -> Result<(), String> {
        self.calls.push(Call::Embed);
        Ok(())
    }
    fn rms_norm(&mut self, l: usize, norm: Norm, rows: Range<usize>) -> Result<(), String> {
        self.calls.push(Call::Norm(l, norm, rows));
        Ok(())
    }
    fn qkv_rope(&mut self, l: usize, pass: usize, rows: Range<usize>) -> Result<(), String> {
        self.calls.push(Call::Qkv(l, pass, rows));
        Ok(())
    }
    fn attention(
        &mut self,
        l: usize,
        pass: usize,
        patterns: Option<&[HeadPattern]>,
        observer: &mut dyn Observer<[f32], String>,
    ) -> Result<(), String> {
        self.calls.push(Call::Attn(l, pass, patterns.is_some()));
        let t = [0f32; 4];
        let p = AttentionPass {
            layer: l,
            first_head: pass,
            heads: 1,
            first_kv_head: pass,
            kv_heads: 1,
            tokens: 2,
            kv_tokens: 2,
            head_dim: 2,
            q: &t[..],
            k: &t[..],
            v: &t[..],
            o: &t[..],
            patterns: &[],
            index: None,
        };
        observer.attention(&p)
    }
    fn o_proj(&mut self, l: usize, rows: Range<usize>) -> Result<(), String> {
        self.calls.push(Call::OProj(l, rows));
        Ok(())
    }
    fn add_update(&mut self, rows: Range<usize>) -> Result<(), String> {
        self.calls.push(Call::Add(rows));
        Ok(())
    }
    fn gate_up(&mut self, _: usize, _: Range<usize>) -> Result<(), String> {
        Ok(())
    }
    fn swiglu(&mut self, _: Range<usize>) -> Result<(), String> {
        Ok(())
    }
    fn down(&mut self, l: usize, rows: Range<usize>) -> Result<(), String> {
        self.calls.push(Call::Down(l, rows));
        Ok(())
    }
    fn lm_head(&mut self) -> Result<Vec<f32>, String> {
        self.calls.push(Call::Head);
        Ok(vec![1.0])
    }
    /// The number of residual updates so far, one value per token.
    fn residual(&mut self) -> Result<Vec<f32>, String> {
        let adds = self.calls.iter().filter(|c| matches!(c, Call::Add(_))).count();
        Ok(vec![adds as f32; self.walk.tokens])
    }
}

fn run(dev: &mut Recorder, observer: &mut dyn Observer<[f32], String>) -> Result<Vec<usize>, String> {
    let mut layers = Vec::new();
    forward(dev, &AttentionChoice::Dense, observer, &mut |p| layers.push(p.layer))?;
    Ok(layers)
}

#[test]
fn chunks_cover_every_token_once_in_order() {
    for (n, c) in [(1, 1), (10, 3), (9, 3), (5, 8), (0, 4)] {
        let w = Walk { tokens: n, cached: 0, chunk: c, passes: 1, layers: 1 };
        let flat: Vec<usize> = w.chunks().flatten().collect();
        assert_eq!(flat, (0..n).collect::<Vec<_>>(), "{n} tokens in chunks of {c}");
        assert!(w.chunks().all(|r| !r.is_empty() && r.len() <= c));
    }
}

#[test]
fn every_pass_reads_the_residual_before_any_update_of_its_layer() {
    let mut dev = Recorder::new(5, 2, 3, 2);
    assert_eq!(run(&mut dev, &mut NoObserver), Ok(vec![0, 1]));
    for l in 0..2 {
        let of_layer = |c: &Call| match c {
            Call::Norm(x, ..) | Call::Qkv(x, ..) | Call::Attn(x, ..) | Call::OProj(x, _) | Call::Down(x, _) => *x == l,
            _ => false,
        };
        let idx: Vec<usize> = (0..dev.calls.len()).filter(|&i| of_layer(&dev.calls[i])).collect();
        let last_attn = idx.iter().rev().find(|&&i| matches!(dev.calls[i], Call::Attn(..))).copied();
        let first_oproj = idx.iter().find(|&&i| matches!(dev.calls[i], Call::OProj(..))).copied();
        assert!(last_attn < first_oproj, "layer {l}: attention of every pass before the output projection");
        // Three passes, each projecting all three chunks after normalising them (several chunks).
        let qkv = dev.calls.iter().filter(|c| matches!(c, Call::Qkv(x, ..) if *x == l)).count();
        let norms = dev.calls.iter().filter(|c| matches!(c, Call::Norm(x, Norm::Attention, _) if *x == l)).count();
        assert_eq!((qkv, norms), (9, 9));
    }
    assert_eq!(dev.calls.first(), Some(&Call::Embed));
    assert_eq!(dev.calls.last(), Some(&Call::Head));
    // Each chunk is added twice per layer: attention half and MLP.
    assert_eq!(dev.calls.iter().filter(|c| matches!(c, Call::Add(_))).count(), 2 * 3 * 2);
}

#[test]
fn one_chunk_is_normalised_once_per_layer_for_all_passes() {
    let mut dev = Recorder::new(1, 1, 4, 1);
    run(&mut dev, &mut NoObserver).unwrap_or_else(|e| panic!("{e}"));
    let norms = dev.calls.iter().filter(|c| matches!(c, Call::Norm(_, Norm::Attention, _))).count();
    let qkv: Vec<&Call> = dev.calls.iter().filter(|c| matches!(c, Call::Qkv(..))).collect();
    assert_eq!((norms, qkv.len()), (1, 4));
    // Pass p projects, then attends, before pass p + 1 projects (a decode step's group order).
    let order: Vec<&Call> = dev.calls.iter().filter(|c| matches!(c, Call::Qkv(..) | Call::Attn(..))).collect();
    for p in 0..4 {
        assert_eq!(order[2 * p], &Call::Qkv(0, p, 0..1));
        assert_eq!(order[2 * p + 1], &Call::Attn(0, p, false));
    }
}

struct StopAt(usize, Vec<usize>);
impl Observer<[f32], String> for StopAt {
    fn attention(&mut self, p: &AttentionPass<'_, [f32]>) -> Result<(), String> {
        self.1.push(p.layer);
        Ok(())
    }
    fn stop_after(&self, layer: usize) -> bool {
        layer == self.0
    }
}

#[test]
fn an_observer_ends_the_walk_after_its_layer_and_the_head_still_runs() {
    let mut dev = Recorder::new(3, 4, 1, 5);
    let mut obs = StopAt(1, Vec::new());
    assert_eq!(run(&mut dev, &mut obs), Ok(vec![0, 1]));
    assert_eq!(obs.1, vec![0, 1]);
    assert_eq!(dev.calls.last(), Some(&Call::Head));
}

#[test]
fn an_observer_error_ends_the_forward_with_it() {
    struct Fail;
    impl Observer<[f32], String> for Fail {
        fn attention(&mut self, p: &AttentionPass<'_, [f32]>) -> Result<(), String> {
            if p.layer == 1 {
                return Err("injected".into());
            }
            Ok(())
        }
    }
    let mut dev = Recorder::new(3, 4, 1, 4);
    assert_eq!(run(&mut dev, &mut Fail), Err("injected".to_string()));
    assert!(!dev.calls.contains(&Call::Head));
}

#[test]
fn the_residual_goes_to_an_observer_that_wants_it_only() {
    let mut dev = Recorder::new(3, 4, 1, 2);
    let mut export = ResidualExport::default();
    run(&mut dev, &mut export).unwrap_or_else(|e| panic!("{e}"));
    // Two layers of one chunk: four updates.
    assert_eq!(export.take(), Some(vec![4.0; 3]));
}

/// Keeps every layer input and the layers whose attention it saw.
#[derive(Default)]
struct LayerInputs(Vec<(usize, Vec<f32>)>, Vec<usize>);
impl Observer<[f32], String> for LayerInputs {
    fn attention(&mut self, p: &AttentionPass<'_, [f32]>) -> Result<(), String> {
        self.1.push(p.layer);
        Ok(())
    }
    fn wants_layer_inputs(&self) -> bool {
        true
    }
    fn layer_input(&mut self, layer: usize, residual: &[f32]) {
        // Layer inputs arrive before that layer's first attention pass.
        assert_eq!(self.1.last().map_or(0, |l| l + 1), layer);
        self.0.push((layer, residual.to_vec()));
    }
}

#[test]
fn layer_inputs_come_before_each_layer_after_every_update_of_the_last() {
    // Three chunks, two passes, three layers: each layer adds two updates per chunk.
    let mut dev = Recorder::new(5, 2, 2, 3);
    let mut obs = LayerInputs::default();
    run(&mut dev, &mut obs).unwrap_or_else(|e| panic!("{e}"));
    let want: Vec<(usize, Vec<f32>)> = (0..3).map(|l| (l, vec![(l * 2 * 3) as f32; 5])).collect();
    assert_eq!(obs.0, want);
    // Under `Both`, only the observer that wants them gets them.
    let mut dev = Recorder::new(5, 2, 2, 3);
    let (mut a, mut b) = (LayerInputs::default(), StopAt(9, Vec::new()));
    run(&mut dev, &mut Both(&mut b, &mut a)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.0.len(), 3);
}

#[test]
fn layer_patterns_reach_the_device_per_layer() {
    let cfg = minference_model::ModelConfig::named_shape("smollm2-135m").unwrap_or_else(|e| panic!("{e}"));
    let plan = MInferencePlan::uniform(&cfg, HeadPattern::AShape { n_init: 1, n_local: 1 }).with_starting_layer(1);
    let mut dev = Recorder::new(4, 4, 1, 3);
    forward(&mut dev, &AttentionChoice::MInference(plan), &mut NoObserver, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let sparse: Vec<bool> =
        dev.calls.iter().filter_map(|c| if let Call::Attn(_, _, s) = c { Some(*s) } else { None }).collect();
    assert_eq!(sparse, vec![false, true, true]);
}
