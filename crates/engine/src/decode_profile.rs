//! Where a decode step's time goes: wall time per operation, summed over the one-token forwards
//! since the last reset (`CpuEngine::decode_profile`).

use std::fmt;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeOp {
    Embed,
    Norms,
    Qkv,
    Rope,
    KvWrite,
    Attention,
    OutProj,
    GateUp,
    Swiglu,
    Down,
    Residual,
    LmHead,
}

impl DecodeOp {
    pub const ALL: [DecodeOp; 12] = [
        DecodeOp::Embed,
        DecodeOp::Norms,
        DecodeOp::Qkv,
        DecodeOp::Rope,
        DecodeOp::KvWrite,
        DecodeOp::Attention,
        DecodeOp::OutProj,
        DecodeOp::GateUp,
        DecodeOp::Swiglu,
        DecodeOp::Down,
        DecodeOp::Residual,
        DecodeOp::LmHead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DecodeOp::Embed => "embedding",
            DecodeOp::Norms => "RMSNorm ×2",
            DecodeOp::Qkv => "Q/K/V projections",
            DecodeOp::Rope => "RoPE",
            DecodeOp::KvWrite => "KV cache write (f16)",
            DecodeOp::Attention => "attention over the cache",
            DecodeOp::OutProj => "output projection",
            DecodeOp::GateUp => "MLP gate + up",
            DecodeOp::Swiglu => "SwiGLU",
            DecodeOp::Down => "MLP down",
            DecodeOp::Residual => "residual adds",
            DecodeOp::LmHead => "final norm + LM head",
        }
    }
}

/// Seconds per operation over `steps` decode steps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodeProfile {
    pub seconds: [f64; 12],
    pub steps: usize,
    /// Whole-step wall time (includes what no operation covers).
    pub total_seconds: f64,
}

impl DecodeProfile {
    pub fn get(&self, op: DecodeOp) -> f64 {
        self.seconds[op as usize]
    }

    pub(crate) fn merge(&mut self, other: &DecodeProfile) {
        for (a, b) in self.seconds.iter_mut().zip(&other.seconds) {
            *a += b;
        }
        self.steps += other.steps;
        self.total_seconds += other.total_seconds;
    }
}

/// Adds the time since `*t` to `op` and restarts `*t` (a no-op without a profile).
#[inline]
pub(crate) fn lap(p: &mut Option<DecodeProfile>, op: DecodeOp, t: &mut Instant) {
    if let Some(p) = p {
        let now = Instant::now();
        p.seconds[op as usize] += (now - *t).as_secs_f64();
        *t = now;
    }
}

impl fmt::Display for DecodeProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps = self.steps.max(1) as f64;
        writeln!(f, "| op | ms / step | share |")?;
        writeln!(f, "|---|---|---|")?;
        let total = self.total_seconds.max(1e-12);
        for op in DecodeOp::ALL {
            let s = self.get(op);
            writeln!(f, "| {} | {:.3} | {:.1}% |", op.name(), s * 1e3 / steps, 100.0 * s / total)?;
        }
        let covered: f64 = self.seconds.iter().sum();
        writeln!(
            f,
            "| other (buffers, logits copy) | {:.3} | {:.1}% |",
            (total - covered).max(0.0) * 1e3 / steps,
            100.0 * (total - covered).max(0.0) / total
        )?;
        write!(f, "| **step** ({} steps) | {:.3} | 100% |", self.steps, total * 1e3 / steps)
    }
}
