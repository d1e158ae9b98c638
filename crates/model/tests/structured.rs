//! The structured attention workload's weights give layer 0's logits the generator's structure:
//! computed here from the weights and the prompt alone (RMSNorm, Q/K projections with biases, RoPE),
//! each designed term is measured against the logits of ordinary far keys.

use minference_model::structured::{retrieval_token, sink_token, StructuredAttention};
use minference_model::{Model, ModelConfig};

fn config() -> ModelConfig {
    let mut c = ModelConfig::named_shape("qwen2.5-7b").unwrap_or_else(|e| panic!("{e}"));
    c.hidden = 256;
    c.heads = 4;
    c.kv_heads = 2;
    c.head_dim = 64;
    c.intermediate = 256;
    c.layers = 1;
    c.vocab = 512;
    c
}

/// Layer-0 Q and K of every position after RoPE: `[n][heads][D]`, `[n][kv_heads][D]`.
fn layer0_qk(m: &Model, tokens: &[u32]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let cfg = m.config();
    let (h, d, half) = (cfg.hidden, cfg.head_dim, cfg.head_dim / 2);
    let w = m.weights();
    let lw = &w.layers[0];
    let project = |lin: &minference_model::weights::Linear, x: &[f32]| -> Vec<f32> {
        (0..lin.out_dim)
            .map(|r| {
                let dot: f32 = lin.weight[r * h..(r + 1) * h].iter().zip(x).map(|(a, b)| a * b).sum();
                dot + lin.bias.as_ref().map_or(0.0, |b| b[r])
            })
            .collect()
    };
    let rotate = |v: &mut [f32], pos: usize| {
        for head in v.chunks_mut(d) {
            for i in 0..half {
                let theta = 1.0 / (cfg.rope_theta as f64).powf((2 * i) as f64 / d as f64);
                let (sin, cos) = (pos as f64 * theta).sin_cos();
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * cos as f32 - b * sin as f32;
                head[i + half] = b * cos as f32 + a * sin as f32;
            }
        }
    };
    let (mut qs, mut ks) = (Vec::new(), Vec::new());
    for (pos, &t) in tokens.iter().enumerate() {
        let e = &w.embed[t as usize * h..(t as usize + 1) * h];
        let rms = (e.iter().map(|x| x * x).sum::<f32>() / h as f32 + cfg.rms_eps).sqrt();
        let x: Vec<f32> = e.iter().zip(&lw.attn_norm).map(|(v, g)| v / rms * g).collect();
        let mut q = project(&lw.wq, &x);
        let mut k = project(&lw.wk, &x);
        rotate(&mut q, pos);
        rotate(&mut k, pos);
        qs.push(q);
        ks.push(k);
    }
    (qs, ks)
}

fn logit(qs: &[Vec<f32>], ks: &[Vec<f32>], d: usize, group: usize, head: usize, m: usize, n: usize) -> f32 {
    let q = &qs[m][head * d..(head + 1) * d];
    let k = &ks[n][(head / group) * d..(head / group + 1) * d];
    q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() / (d as f32).sqrt()
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len().max(1) as f32
}

#[test]
fn layer_zero_logits_have_sinks_local_band_retrieval_columns_and_far_slashes() {
    let cfg = config();
    let n = 1536;
    let mut workload = StructuredAttention::new(n);
    workload.synth.far_slash_min = 300;
    workload.synth.far_slash_max = 600;
    let seed = 11;
    let m = Model::random_structured(cfg.clone(), seed, &workload).unwrap_or_else(|e| panic!("{e}"));
    let tokens = workload.tokens(&cfg, n, seed).unwrap_or_else(|e| panic!("{e}"));
    assert!(tokens[..4].iter().all(|&t| t == sink_token(&cfg)));
    let (qs, ks) = layer0_qk(&m, &tokens);
    let (d, group) = (cfg.head_dim, cfg.heads / cfg.kv_heads);
    let s = &workload.synth;
    let queries: Vec<usize> = (n - 64..n).collect();
    let ordinary = |k: usize| k >= 4 && tokens[k] < retrieval_token(&cfg, cfg.kv_heads - 1);
    for head in 0..cfg.heads {
        let at = |q: usize, k: usize| logit(&qs, &ks, d, group, head, q, k);
        // A key's lift: its logit minus that of the nearest ordinary keys (same distance to within
        // a few tokens, so the same RoPE term): what its own channel adds.
        let lift = |k: usize| {
            let near: Vec<usize> =
                (k.saturating_sub(6)..k + 7).filter(|&j| j != k && j < n - 64 && ordinary(j)).collect();
            mean(
                &queries
                    .iter()
                    .map(|&q| at(q, k) - mean(&near.iter().map(|&j| at(q, j)).collect::<Vec<_>>()))
                    .collect::<Vec<_>>(),
            )
        };
        let sink = lift(0);
        assert!((sink - s.sink_strength).abs() < 0.2 * s.sink_strength, "head {head}: sink lift {sink}");
        let g = head / group;
        let retrieval_keys: Vec<usize> = (8..n - 70).filter(|&k| tokens[k] == retrieval_token(&cfg, g)).collect();
        assert!(!retrieval_keys.is_empty());
        let retrieval = mean(&retrieval_keys.iter().map(|&k| lift(k)).collect::<Vec<_>>());
        assert!(
            retrieval > 0.4 * s.retrieval_strength && retrieval < 1.6 * s.retrieval_strength,
            "head {head}: retrieval lift {retrieval}"
        );
        // Ordinary keys far from the query and from every designed distance: the baseline.
        let baseline = mean(
            &queries
                .iter()
                .flat_map(|&q| (1000..1100).map(move |delta| (q, q - delta)))
                .filter(|&(_, k)| ordinary(k))
                .map(|(q, k)| at(q, k))
                .collect::<Vec<_>>(),
        );
        let local = mean(&queries.iter().map(|&q| at(q, q)).collect::<Vec<_>>());
        assert!(local - baseline > 0.6 * s.local_decay, "head {head}: local {local} baseline {baseline}");
        // The strongest distance in the far range is a designed slash: well above the baseline.
        let best_far = (300..=600)
            .map(|delta| mean(&queries.iter().map(|&q| at(q, q - delta)).collect::<Vec<_>>()))
            .fold(f32::MIN, f32::max);
        assert!(best_far - baseline > 0.5 * s.far_slash_strength, "head {head}: far slash {best_far} vs {baseline}");
    }
}

#[test]
fn configs_the_design_cannot_carry_are_refused() {
    let mut cfg = config();
    cfg.qkv_bias = false;
    let w = StructuredAttention::new(1024);
    let err = w.design(&cfg, 1).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("Q/K biases"), "{err}");
    let mut cfg = config();
    cfg.vocab = 8;
    assert!(w.design(&cfg, 1).is_err());
    assert!(StructuredAttention::new(0).design(&config(), 1).is_err());
    assert!(Model::random_structured(ModelConfig { qkv_bias: false, ..config() }, 1, &w).is_err());
}

#[test]
fn prompts_are_seeded_and_place_every_reserved_token() {
    let cfg = config();
    let w = StructuredAttention::new(4096);
    let a = w.tokens(&cfg, 4096, 3).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a, w.tokens(&cfg, 4096, 3).unwrap_or_default());
    assert_ne!(a, w.tokens(&cfg, 4096, 4).unwrap_or_default());
    for g in 0..cfg.kv_heads {
        assert!(a.contains(&retrieval_token(&cfg, g)));
    }
    assert!(a[4..].iter().all(|&t| t != sink_token(&cfg)));
    assert_eq!(w.tokens(&cfg, 2, 3).unwrap_or_default(), vec![sink_token(&cfg); 2]);
}
