//! Adaptive Vertical-Slash heads in the CPU forward: each head's budgets are picked per prompt from
//! its estimate, and the forward is exactly the fixed-budget forward with the budgets it picked.

#[path = "../../model/tests/common/mod.rs"]
mod common;

use common::{tiny_llama, TINY};
use minference_core::{AttentionBackend, AttnShape, HeadPattern, HostTensor, SparseIndex, VsSelection};
use minference_cpu::{CpuBackend, CpuError};
use minference_engine::{AttentionChoice, CpuEngine as Engine, MInferencePlan};
use minference_model::gguf::GgufFile;
use minference_model::Model;
use std::sync::{Arc, Mutex};

fn tiny() -> Arc<Model> {
    let f = GgufFile::from_bytes(tiny_llama(&TINY, "llama").build()).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Model::from_gguf(&f).unwrap_or_else(|e| panic!("{e}")))
}

fn prompt(n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 37 + 11) % 256) as u32).collect()
}

/// The CPU backend, keeping every VS selection it estimated (one entry per call, in call order:
/// layer by layer, KV group by KV group).
struct Recording {
    inner: CpuBackend,
    selections: Mutex<Vec<Vec<VsSelection>>>,
}

impl AttentionBackend for Recording {
    type Error = CpuError;
    type Input<'t> = HostTensor<'t>;
    type Output = Vec<f32>;
    type Selection = Vec<VsSelection>;
    type Index = SparseIndex;

    fn name(&self) -> String {
        self.inner.name()
    }

    fn output(&self, shape: &AttnShape) -> Result<Vec<f32>, CpuError> {
        self.inner.output(shape)
    }

    fn estimate(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        patterns: &[HeadPattern],
    ) -> Result<Vec<VsSelection>, CpuError> {
        let vs = self.inner.estimate(shape, q, k, patterns)?;
        if let Ok(mut s) = self.selections.lock() {
            s.push(vs.clone());
        }
        Ok(vs)
    }

    fn index(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        patterns: &[HeadPattern],
        vs: &Vec<VsSelection>,
    ) -> Result<SparseIndex, CpuError> {
        self.inner.index(shape, q, k, patterns, vs)
    }

    fn attend(
        &self,
        shape: &AttnShape,
        q: HostTensor,
        k: HostTensor,
        v: HostTensor,
        patterns: &[HeadPattern],
        index: Option<&SparseIndex>,
        out: &mut Vec<f32>,
    ) -> Result<(), CpuError> {
        self.inner.attend(shape, q, k, v, patterns, index, out)
    }
}

#[test]
fn an_adaptive_forward_is_the_fixed_forward_of_the_budgets_it_picked() {
    let model = tiny();
    let cfg = model.config().clone();
    let n = 300;
    let p = prompt(n);
    let group = cfg.heads / cfg.kv_heads;
    let mut layer0_budgets: Vec<Vec<(usize, usize)>> = Vec::new();
    for gamma_ppm in [300_000u32, 600_000, 900_000] {
        let adaptive = HeadPattern::AdaptiveVs { gamma_ppm, min_v: 0, max_v: n, min_s: 0, max_s: n };
        let recording = Recording { inner: CpuBackend::new(), selections: Mutex::new(Vec::new()) };
        let mut e = Engine::new(Arc::clone(&model), recording);
        let plan = MInferencePlan::uniform(&cfg, adaptive);
        let (logits, stats) =
            e.prefill(&p, &AttentionChoice::MInference(plan), &mut |_| {}).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(stats.sparse_heads, cfg.layers * cfg.heads);
        let calls = e.backend().selections.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(calls.len(), cfg.layers * cfg.kv_heads, "one estimate per layer and KV group");
        // The budgets each head picked, as a fixed plan.
        let budget = |l: usize, h: usize| {
            let sel = &calls[l * cfg.kv_heads + h / group][h % group];
            (sel.verticals.len(), sel.slashes.len())
        };
        let fixed = MInferencePlan::from_lookup(&cfg, |l, h| {
            let (k_v, k_s) = budget(l, h);
            HeadPattern::VerticalSlash { k_v, k_s }
        });
        let mut plain = Engine::new(Arc::clone(&model), CpuBackend::new());
        let (fixed_logits, _) =
            plain.prefill(&p, &AttentionChoice::MInference(fixed), &mut |_| {}).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(logits, fixed_logits, "gamma {gamma_ppm} ppm: adaptive and fixed forwards differ");
        layer0_budgets.push((0..cfg.heads).map(|h| budget(0, h)).collect());
    }
    // Layer 0 sees the same inputs in every run: more mass kept, no smaller budgets; and the
    // budgets do move with gamma.
    for pair in layer0_budgets.windows(2) {
        for (a, b) in pair[0].iter().zip(&pair[1]) {
            assert!(b.0 >= a.0 && b.1 >= a.1, "budgets fell as gamma rose: {a:?} -> {b:?}");
        }
    }
    assert_ne!(layer0_budgets[0], layer0_budgets[2], "gamma 0.3 and 0.9 picked the same budgets");
}
