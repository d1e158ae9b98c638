//! Attention pictures: a log-scale heat map of one head's exact attention with the kernel mask of a
//! pattern overlaid (green tint where the kernel computes, so bright cells outside it are missed
//! mass), and a caption. Short prompts show the whole causal matrix (pooled to at most `max_px`
//! pixels a side, max-pooled so thin lines stay visible); long prompts show the last 64 query rows
//! over all keys (the rows the online VS estimate uses).

use crate::dense::{for_each_prob_block, HeadInputs};
use crate::error::Result;
use crate::mask::HeadMask;
use minference_picture::text_width;
pub use minference_picture::RgbImage;

/// How to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct VizOptions {
    /// Largest side of the heat map in pixels.
    pub max_px: usize,
    /// Prompts up to this many tokens show the full matrix; longer ones the last 64 rows.
    pub full_limit: usize,
    /// Probabilities below this are drawn black (log scale from here to 1).
    pub floor_prob: f32,
}

impl Default for VizOptions {
    fn default() -> Self {
        VizOptions { max_px: 768, full_limit: 8192, floor_prob: 1e-6 }
    }
}

const BACKGROUND: [u8; 3] = [24, 24, 28];
const CAPTION_SCALE: usize = 1;
const LINE_PX: usize = 10;

/// Dark → purple → red → orange → pale yellow, `t` in `[0, 1]`.
fn heat_colour(t: f32) -> [f32; 3] {
    const STOPS: [[f32; 3]; 5] =
        [[0.0, 0.0, 0.02], [0.32, 0.07, 0.45], [0.78, 0.16, 0.35], [0.98, 0.55, 0.12], [0.99, 0.98, 0.75]];
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
    let i = (t as usize).min(STOPS.len() - 2);
    let f = t - i as f32;
    [0, 1, 2].map(|c| STOPS[i][c] * (1.0 - f) + STOPS[i + 1][c] * f)
}

fn cell_colour(p_max: f32, kept: f32, floor: f32) -> [u8; 3] {
    let lf = floor.max(1e-30).log10();
    let t = if p_max <= 0.0 { 0.0 } else { (p_max.max(floor).log10() - lf) / -lf };
    let heat = heat_colour(t);
    // Kernel mask as a translucent green layer.
    let alpha = 0.45 * kept.clamp(0.0, 1.0);
    let green = [0.1, 0.85, 0.35];
    [0, 1, 2].map(|c| ((heat[c] * (1.0 - alpha) + green[c] * alpha) * 255.0).round() as u8)
}

/// Heat map of one head with `mask` overlaid and `caption` lines on top.
pub fn render_head(h: &HeadInputs, mask: &HeadMask, caption: &[String], opts: &VizOptions) -> Result<RgbImage> {
    let n = h.n;
    let full = n <= opts.full_limit;
    let width = n.min(opts.max_px.max(16));
    let (first_row, rows, height) = if full { (0, n, width) } else { (n - n.min(64), n.min(64), n.min(64) * 4) };
    // Accumulation grid: one cell row per pixel row (full view) or per query row (last rows).
    let grid_h = if full { height } else { rows };
    // Per cell: max probability, kept entries, causal entries.
    let mut pmax = vec![0f32; width * grid_h];
    let mut kept = vec![0u32; width * grid_h];
    let mut causal = vec![0u32; width * grid_h];
    for_each_prob_block(h, first_row, |p| {
        for a in 0..p.rows {
            let pos = p.row0 + a;
            if pos < first_row {
                continue;
            }
            let gy = (pos - first_row) * grid_h / rows;
            let row = p.row(a);
            for (key, &prob) in row[..=pos].iter().enumerate() {
                let cell = gy * width + key * width / n;
                pmax[cell] = pmax[cell].max(prob);
                causal[cell] += 1;
                kept[cell] += mask.keep(pos, key, n) as u32;
            }
        }
        Ok(())
    })?;
    let caption_h = caption.len() * LINE_PX + 6;
    let img_w = width.max(caption.iter().map(|l| text_width(l, CAPTION_SCALE)).max().unwrap_or(0) + 8);
    let mut img = RgbImage::new(img_w, height + caption_h, BACKGROUND);
    for y in 0..height {
        let gy = y * grid_h / height;
        for x in 0..width {
            let c = gy * width + x;
            if causal[c] > 0 {
                img.set(x, caption_h + y, cell_colour(pmax[c], kept[c] as f32 / causal[c] as f32, opts.floor_prob));
            }
        }
    }
    for (i, line) in caption.iter().enumerate() {
        img.text(4, 3 + i * LINE_PX, CAPTION_SCALE, line, [235, 235, 235]);
    }
    Ok(img)
}

/// Tiles images in a grid (`cols` wide), in order, with a small gap.
pub fn grid(images: &[RgbImage], cols: usize) -> RgbImage {
    let cols = cols.max(1);
    let cell_w = images.iter().map(|i| i.width).max().unwrap_or(1);
    let cell_h = images.iter().map(|i| i.height).max().unwrap_or(1);
    let rows = images.len().div_ceil(cols).max(1);
    let gap = 6;
    let mut out = RgbImage::new(cols * (cell_w + gap) + gap, rows * (cell_h + gap) + gap, [0, 0, 0]);
    for (i, im) in images.iter().enumerate() {
        out.blit(im, gap + (i % cols) * (cell_w + gap), gap + (i / cols) * (cell_h + gap));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_map_is_causal_and_the_mask_tints_kept_cells() {
        let (n, d) = (128, 8);
        let q: Vec<f32> = (0..n * d).map(|i| ((i * 7) % 13) as f32 * 0.1).collect();
        let k: Vec<f32> = (0..n * d).map(|i| ((i * 5) % 11) as f32 * 0.1).collect();
        let h = HeadInputs::new(&q, &k, None, d).unwrap();
        let mask = HeadMask::AShape { n_init: 4, n_local: 16 };
        let img = render_head(&h, &mask, &["test".into()], &VizOptions::default()).unwrap();
        let top = LINE_PX + 6;
        assert_eq!(img.width, n);
        assert_eq!(img.height, n + top);
        // Above the diagonal: background.
        assert_eq!(img.get(100, top + 10), BACKGROUND);
        // On the diagonal (kept) vs far from it (dropped): kept cells carry more green than red.
        let kept = img.get(60, top + 60);
        let dropped = img.get(40, top + 100);
        assert!(kept[1] as i32 - kept[0] as i32 > dropped[1] as i32 - dropped[0] as i32);
    }

    #[test]
    fn long_prompts_show_the_last_rows() {
        let (n, d) = (300, 4);
        let q = vec![0.1f32; n * d];
        let k = vec![0.1f32; n * d];
        let h = HeadInputs::new(&q, &k, None, d).unwrap();
        let opts = VizOptions { full_limit: 100, max_px: 200, ..VizOptions::default() };
        let img = render_head(&h, &HeadMask::Dense, &[], &opts).unwrap();
        assert_eq!((img.width, img.height), (200, 64 * 4 + 6));
        // Every pixel row is drawn (each query row spans 4 of them); uniform attention is not black.
        for y in 6..img.height {
            assert_ne!(img.get(0, y), BACKGROUND, "row {y}");
        }
    }

    #[test]
    fn png_is_written() {
        let dir = std::env::temp_dir().join(format!("minference-viz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.png");
        grid(&[RgbImage::new(3, 2, [1, 2, 3]), RgbImage::new(2, 2, [9, 9, 9])], 2).write_png(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(RgbImage::new(1, 1, [0; 3]).write_png(&dir.join("missing/x.png")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
