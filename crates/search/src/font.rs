//! Caption text drawn with the public-domain 8×8 bitmap font of the `font8x8` crate.

use font8x8::legacy::BASIC_LEGACY;

/// Draws `text` into an RGB image at `(x, y)` with integer `scale`; characters outside basic Latin
/// are drawn as `?`. Pixels outside the image are skipped.
#[allow(clippy::too_many_arguments)]
pub fn draw_text(
    img: &mut [u8],
    width: usize,
    height: usize,
    x: usize,
    y: usize,
    scale: usize,
    text: &str,
    rgb: [u8; 3],
) {
    let scale = scale.max(1);
    for (ci, ch) in text.chars().enumerate() {
        let code = if ch.is_ascii() { ch as usize } else { '?' as usize };
        let glyph = BASIC_LEGACY[code];
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if bits & (1 << gx) == 0 {
                    continue;
                }
                for sy in 0..scale {
                    for sx in 0..scale {
                        let px = x + (ci * 8 + gx) * scale + sx;
                        let py = y + gy * scale + sy;
                        if px < width && py < height {
                            img[(py * width + px) * 3..(py * width + px) * 3 + 3].copy_from_slice(&rgb);
                        }
                    }
                }
            }
        }
    }
}

/// Width in pixels of `text` at `scale`.
pub fn text_width(text: &str, scale: usize) -> usize {
    text.chars().count() * 8 * scale.max(1)
}
