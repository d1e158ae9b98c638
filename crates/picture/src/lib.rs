//! RGB images with captions, written as PNG: what the search's attention pictures and the needle
//! heat map draw on. Text uses the public-domain 8×8 bitmap font of the `font8x8` crate.

use font8x8::legacy::BASIC_LEGACY;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PictureError {
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding PNG {path}: {source}")]
    Png {
        path: PathBuf,
        #[source]
        source: png::EncodingError,
    },
}

/// An RGB image, 8 bits per channel, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize, fill: [u8; 3]) -> Self {
        RgbImage { width, height, pixels: fill.iter().copied().cycle().take(width * height * 3).collect() }
    }

    pub fn get(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// Sets one pixel; outside the image nothing happens.
    pub fn set(&mut self, x: usize, y: usize, rgb: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.pixels[i..i + 3].copy_from_slice(&rgb);
        }
    }

    /// Fills the rectangle `w × h` at `(x, y)` (clipped).
    pub fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, rgb: [u8; 3]) {
        for py in y..(y + h).min(self.height) {
            for px in x..(x + w).min(self.width) {
                self.set(px, py, rgb);
            }
        }
    }

    /// Copies `other` with its top-left corner at `(x, y)` (clipped).
    pub fn blit(&mut self, other: &RgbImage, x: usize, y: usize) {
        for oy in 0..other.height.min(self.height.saturating_sub(y)) {
            for ox in 0..other.width.min(self.width.saturating_sub(x)) {
                self.set(x + ox, y + oy, other.get(ox, oy));
            }
        }
    }

    /// Draws `text` at `(x, y)` with integer `scale`; characters outside basic Latin are drawn as
    /// `?`; pixels outside the image are skipped.
    pub fn text(&mut self, x: usize, y: usize, scale: usize, text: &str, rgb: [u8; 3]) {
        let scale = scale.max(1);
        for (ci, ch) in text.chars().enumerate() {
            let code = if ch.is_ascii() { ch as usize } else { '?' as usize };
            for (gy, bits) in BASIC_LEGACY[code].iter().enumerate() {
                for gx in (0..8).filter(|gx| bits & (1 << gx) != 0) {
                    self.fill(x + (ci * 8 + gx) * scale, y + gy * scale, scale, scale, rgb);
                }
            }
        }
    }

    /// Writes the image as an 8-bit RGB PNG.
    pub fn write_png(&self, path: &Path) -> Result<(), PictureError> {
        let io = |source| PictureError::Io { path: path.to_path_buf(), source };
        let png = |source| PictureError::Png { path: path.to_path_buf(), source };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), self.width as u32, self.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(png)?;
        writer.write_image_data(&self.pixels).map_err(png)?;
        writer.finish().map_err(png)
    }
}

/// Width in pixels of `text` at `scale`.
pub fn text_width(text: &str, scale: usize) -> usize {
    text.chars().count() * 8 * scale.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_inks_pixels_inside_its_box_only() {
        let mut img = RgbImage::new(40, 12, [0, 0, 0]);
        img.text(2, 2, 1, "Hi", [255, 255, 255]);
        let lit: Vec<(usize, usize)> =
            (0..12).flat_map(|y| (0..40).map(move |x| (x, y))).filter(|&(x, y)| img.get(x, y) != [0, 0, 0]).collect();
        assert!(!lit.is_empty());
        assert!(lit.iter().all(|&(x, y)| (2..2 + text_width("Hi", 1)).contains(&x) && (2..10).contains(&y)));
    }

    #[test]
    fn png_round_trips_its_size_and_a_bad_path_is_an_error() {
        let dir = std::env::temp_dir().join(format!("minference-picture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.png");
        let mut img = RgbImage::new(7, 5, [10, 20, 30]);
        img.fill(1, 1, 100, 100, [200, 0, 0]);
        img.write_png(&path).unwrap();
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (7, 5));
        assert!(matches!(img.write_png(&dir.join("missing/a.png")), Err(PictureError::Io { .. })));
        std::fs::remove_dir_all(&dir).ok();
    }
}
