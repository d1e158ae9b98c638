//! Storage precision of the GPU engine's weights and activations (math is f32 either way, and the
//! residual stream is f32).
//!
//! bf16 (default) has f32's range, so no model's activations overflow it; f16 has three more
//! mantissa bits, which brings the logits within 1e-2 of an f32 reference where bf16 stays near
//! 2e-2, but overflows above 65504 (some models' largest activations come close).

use crate::error::{EngineError, Result};
use minference_core::DType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Bf16,
    F16,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "f16" | "fp16" | "half" => Ok(Precision::F16),
            other => Err(EngineError::Input(format!("unknown precision `{other}` (bf16, f16)"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// The attention kernels' element type.
    pub fn dtype(self) -> DType {
        match self {
            Precision::Bf16 => DType::Bf16,
            Precision::F16 => DType::F16,
        }
    }

    /// The 16-bit pattern of `x` rounded to this precision.
    pub fn bits(self, x: f32) -> u16 {
        match self {
            Precision::Bf16 => half::bf16::from_f32(x).to_bits(),
            Precision::F16 => half::f16::from_f32(x).to_bits(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bits_round() {
        for p in [Precision::Bf16, Precision::F16] {
            assert_eq!(Precision::parse(p.name()).ok(), Some(p));
        }
        assert!(Precision::parse("fp8").is_err());
        assert_eq!(Precision::Bf16.bits(1.0), 0x3F80);
        assert_eq!(Precision::F16.bits(1.0), 0x3C00);
    }
}
