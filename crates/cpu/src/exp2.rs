//! Branch-free base-2 exponential that the compiler vectorises (libm's `exp2f` is a scalar call).

const LN2: f32 = std::f32::consts::LN_2;
// Taylor coefficients of 2^f = e^(f·ln2) for |f| <= 0.5; degree 6 gives ~1e-7 relative error.
const C1: f32 = LN2;
const C2: f32 = LN2 * LN2 / 2.0;
const C3: f32 = LN2 * LN2 * LN2 / 6.0;
const C4: f32 = LN2 * LN2 * LN2 * LN2 / 24.0;
const C5: f32 = LN2 * LN2 * LN2 * LN2 * LN2 / 120.0;
const C6: f32 = LN2 * LN2 * LN2 * LN2 * LN2 * LN2 / 720.0;
/// Adding 1.5·2^23 rounds an f32 of magnitude < 2^22 to the nearest integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `2^x` for `x <= 0`; returns exactly 0 for `x <= -127` (and for `-inf`), which is what masked
/// logits need.
#[inline(always)]
pub(crate) fn exp2_nonpositive(x: f32) -> f32 {
    let x = x.clamp(-127.0, 0.0);
    let t = x + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let f = x - n;
    // n in [-127, 0] → biased exponent n + 127 in [0, 127]; 0 encodes +0.0.
    let biased = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32) + 127;
    let scale = f32::from_bits((biased as u32) << 23);
    let p = 1.0 + f * (C1 + f * (C2 + f * (C3 + f * (C4 + f * (C5 + f * C6)))));
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_std_exp2() {
        let mut x = 0.0f32;
        while x > -130.0 {
            let want = x.exp2();
            let got = exp2_nonpositive(x);
            if x > -126.0 {
                assert!((got - want).abs() <= 3e-7 * want, "x={x} got={got} want={want}");
            } else {
                assert!(got <= 1.2e-38);
            }
            x -= 0.0137;
        }
        assert_eq!(exp2_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp2_nonpositive(0.0), 1.0);
    }
}
