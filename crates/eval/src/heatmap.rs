//! The needle grid as a PNG heat map: one panel per attention kind, depth (rows, 0% at the top) ×
//! length (columns), green = found, red = missed, grey = not run, with captions (as in
//! MInference's needle figure).

use crate::error::{EvalError, Result};
use minference_picture::{text_width, RgbImage};
use std::path::Path;

const CELL_W: usize = 56;
const CELL_H: usize = 22;
const MARGIN: usize = 16;
const LABEL_W: usize = 48;
const TITLE_H: usize = 28;
const AXIS_H: usize = 36;
const GAP: usize = 28;
const FOUND: [u8; 3] = [46, 160, 67];
const MISSED: [u8; 3] = [205, 52, 52];
const NOT_RUN: [u8; 3] = [200, 200, 200];
const INK: [u8; 3] = [20, 20, 20];
const WHITE: [u8; 3] = [255, 255, 255];

/// One panel: `found[depth][length]`, `None` where the cell was not run.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub found: Vec<Vec<Option<bool>>>,
}

fn length_label(tokens: usize) -> String {
    if tokens >= 1024 && tokens.is_multiple_of(1024) {
        format!("{}K", tokens / 1024)
    } else {
        tokens.to_string()
    }
}

/// Draws the panels side by side with `caption` underneath, as RGB bytes `(width, height, rgb)`.
pub fn render(panels: &[Panel], lengths: &[usize], depths: &[u32], caption: &str) -> Result<RgbImage> {
    if panels.is_empty() || lengths.is_empty() || depths.is_empty() {
        return Err(EvalError::Input("a heat map needs at least one panel, length and depth".into()));
    }
    if let Some(p) =
        panels.iter().find(|p| p.found.len() != depths.len() || p.found.iter().any(|r| r.len() != lengths.len()))
    {
        return Err(EvalError::Input(format!(
            "panel `{}` does not have {} depths × {} lengths",
            p.title,
            depths.len(),
            lengths.len()
        )));
    }
    let grid_w = CELL_W * lengths.len();
    let panel_w = (LABEL_W + grid_w).max(LABEL_W + panels.iter().map(|p| text_width(&p.title, 2)).max().unwrap_or(0));
    let width =
        (2 * MARGIN + panels.len() * panel_w + (panels.len() - 1) * GAP).max(2 * MARGIN + text_width(caption, 1));
    let grid_h = CELL_H * depths.len();
    let height = MARGIN + TITLE_H + grid_h + AXIS_H + 16 + MARGIN;
    let mut canvas = RgbImage::new(width, height, WHITE);
    for (i, panel) in panels.iter().enumerate() {
        let x0 = MARGIN + i * (panel_w + GAP);
        let gx = x0 + LABEL_W;
        let gy = MARGIN + TITLE_H;
        canvas.text(gx, MARGIN, 2, &panel.title, INK);
        for (r, &depth) in depths.iter().enumerate() {
            let y = gy + r * CELL_H;
            let label = format!("{depth}%");
            canvas.text(gx - text_width(&label, 1) - 6, y + (CELL_H - 8) / 2, 1, &label, INK);
            for (c, cell) in panel.found[r].iter().enumerate() {
                let color = match cell {
                    Some(true) => FOUND,
                    Some(false) => MISSED,
                    None => NOT_RUN,
                };
                canvas.fill(gx + c * CELL_W, y, CELL_W, CELL_H, color);
                // Thin white grid lines keep neighbouring cells apart.
                canvas.fill(gx + c * CELL_W, y, CELL_W, 1, WHITE);
                canvas.fill(gx + c * CELL_W, y, 1, CELL_H, WHITE);
            }
        }
        for (c, &len) in lengths.iter().enumerate() {
            let label = length_label(len);
            canvas.text(
                gx + c * CELL_W + (CELL_W.saturating_sub(text_width(&label, 1))) / 2,
                gy + grid_h + 6,
                1,
                &label,
                INK,
            );
        }
        let run: Vec<bool> = panel.found.iter().flatten().flatten().copied().collect();
        let summary = format!("found {}/{}", run.iter().filter(|&&f| f).count(), run.len());
        canvas.text(gx, gy + grid_h + 20, 1, &summary, INK);
        canvas.text(x0, gy - 10, 1, "depth", INK);
    }
    canvas.text(MARGIN, height - MARGIN - 8, 1, caption, INK);
    Ok(canvas)
}

/// Renders and writes the heat map to `path` as an 8-bit RGB PNG.
pub fn write_png(path: &Path, panels: &[Panel], lengths: &[usize], depths: &[u32], caption: &str) -> Result<()> {
    Ok(render(panels, lengths, depths, caption)?.write_png(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_take_their_colors() {
        let panel = Panel { title: "dense".into(), found: vec![vec![Some(true), Some(false)], vec![None, Some(true)]] };
        let img = render(&[panel], &[1024, 2048], &[0, 100], "test").unwrap();
        let px = |x: usize, y: usize| img.get(x, y);
        let (gx, gy) = (MARGIN + LABEL_W, MARGIN + TITLE_H);
        assert_eq!(px(gx + CELL_W / 2, gy + CELL_H / 2), FOUND);
        assert_eq!(px(gx + CELL_W + CELL_W / 2, gy + CELL_H / 2), MISSED);
        assert_eq!(px(gx + CELL_W / 2, gy + CELL_H + CELL_H / 2), NOT_RUN);
    }

    #[test]
    fn mismatched_grid_is_an_error() {
        let panel = Panel { title: "x".into(), found: vec![vec![Some(true)]] };
        assert!(render(&[panel], &[1024, 2048], &[0], "").is_err());
    }
}
