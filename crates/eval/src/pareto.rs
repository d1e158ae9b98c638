//! The Pareto picture of an evaluation (issue 14 item 5): Δ perplexity against kernel density, one
//! marker per attention variant, coloured by group (uniform budgets, searched configs, adaptive
//! budgets, ...), with the 1% perplexity and 40% density targets drawn as guides.
//!
//! x: kernel density, linear 0..100%. y: Δ perplexity in percent on a log scale from 0.01% up to the
//! next power of ten above the largest value; a variant at or below 0.01% (or better than the
//! reference) sits on the bottom edge.

use crate::error::{EvalError, Result};
use minference_picture::{text_width, RgbImage};
use std::path::Path;

/// One evaluated variant.
#[derive(Debug, Clone, PartialEq)]
pub struct ParetoPoint {
    pub label: String,
    pub group: String,
    /// Kernel density in [0, 1].
    pub density: f64,
    /// Perplexity change against the reference, in percent.
    pub delta_ppl_percent: f64,
}

/// Lowest Δ perplexity shown (percent); smaller values sit on the bottom edge.
pub const DELTA_FLOOR: f64 = 0.01;

const WIDTH: usize = 960;
const HEIGHT: usize = 620;
const LEFT: usize = 90;
const RIGHT: usize = 250;
const TOP: usize = 76;
const BOTTOM: usize = 70;
const MARKER: usize = 9;
const BACKGROUND: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [30, 30, 30];
const GUIDE: [u8; 3] = [170, 170, 170];
const PALETTE: [[u8; 3]; 6] =
    [[31, 119, 180], [214, 39, 40], [44, 160, 44], [148, 103, 189], [255, 127, 14], [23, 190, 207]];

/// Pixel geometry of the plot area.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axes {
    /// Top of the y axis: a power of ten (percent), at least 10.
    pub y_max: f64,
}

impl Axes {
    pub fn for_points(points: &[ParetoPoint]) -> Axes {
        let top = points.iter().map(|p| p.delta_ppl_percent).fold(10.0f64, f64::max);
        Axes { y_max: 10f64.powf(top.log10().ceil()) }
    }

    fn plot_w() -> usize {
        WIDTH - LEFT - RIGHT
    }

    fn plot_h() -> usize {
        HEIGHT - TOP - BOTTOM
    }

    /// Pixel column of a density (clamped to [0, 1]).
    pub fn x(&self, density: f64) -> usize {
        LEFT + (density.clamp(0.0, 1.0) * (Self::plot_w() - 1) as f64).round() as usize
    }

    /// Pixel row of a Δ perplexity in percent (log scale, clamped to [floor, y_max]).
    pub fn y(&self, delta: f64) -> usize {
        let lo = DELTA_FLOOR.log10();
        let hi = self.y_max.log10();
        let v = delta.max(DELTA_FLOOR).min(self.y_max).log10();
        let t = (v - lo) / (hi - lo);
        TOP + ((1.0 - t) * (Self::plot_h() - 1) as f64).round() as usize
    }
}

/// Colour of the `i`-th group.
pub fn group_colour(i: usize) -> [u8; 3] {
    PALETTE[i % PALETTE.len()]
}

/// Groups in order of first appearance.
pub fn groups(points: &[ParetoPoint]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in points {
        if !out.contains(&p.group) {
            out.push(p.group.clone());
        }
    }
    out
}

fn dashed_h(img: &mut RgbImage, x0: usize, x1: usize, y: usize) {
    for x in (x0..x1).filter(|x| (x / 6) % 2 == 0) {
        img.set(x, y, GUIDE);
    }
}

fn dashed_v(img: &mut RgbImage, x: usize, y0: usize, y1: usize) {
    for y in (y0..y1).filter(|y| (y / 6) % 2 == 0) {
        img.set(x, y, GUIDE);
    }
}

/// `caption` split at ` | ` into lines of at most `width` pixels (a longer piece keeps its own line).
pub fn caption_lines(caption: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for piece in caption.split(" | ") {
        match lines.last_mut() {
            Some(last) if text_width(&format!("{last} | {piece}"), 1) <= width => {
                last.push_str(" | ");
                last.push_str(piece);
            }
            _ => lines.push(piece.to_string()),
        }
    }
    lines
}

/// Draws the picture. An empty list, a density outside [0, 1] or a non-finite value is an error.
pub fn pareto_image(points: &[ParetoPoint], caption: &str) -> Result<RgbImage> {
    if points.is_empty() {
        return Err(EvalError::Input("the Pareto picture needs at least one variant".into()));
    }
    if let Some(p) = points
        .iter()
        .find(|p| !(p.density.is_finite() && (0.0..=1.0).contains(&p.density) && p.delta_ppl_percent.is_finite()))
    {
        return Err(EvalError::Input(format!(
            "Pareto point `{}`: density {} and Δ perplexity {} must be finite, density in [0, 1] (no kernel density on the GPU: run the eval on the CPU)",
            p.label, p.density, p.delta_ppl_percent
        )));
    }
    let axes = Axes::for_points(points);
    let mut img = RgbImage::new(WIDTH, HEIGHT, BACKGROUND);
    let (x0, x1, y0, y1) = (LEFT, LEFT + Axes::plot_w(), TOP, TOP + Axes::plot_h());
    for (i, line) in caption_lines(caption, WIDTH - 16).iter().enumerate().take(3) {
        img.text(8, 8 + 12 * i, 1, line, INK);
    }
    // Axes, ticks and tick labels.
    img.fill(x0, y1, x1 - x0, 1, INK);
    img.fill(x0 - 1, y0, 1, y1 - y0 + 1, INK);
    for tenth in 0..=10 {
        let x = axes.x(tenth as f64 / 10.0);
        img.fill(x, y1, 1, 6, INK);
        let label = format!("{}%", tenth * 10);
        img.text(x.saturating_sub(text_width(&label, 1) / 2), y1 + 10, 1, &label, INK);
    }
    let mut tick = DELTA_FLOOR;
    while tick <= axes.y_max * 1.0001 {
        let y = axes.y(tick);
        img.fill(x0 - 6, y, 6, 1, INK);
        let label = if tick < 1.0 { format!("{tick}%") } else { format!("{}%", tick as u64) };
        img.text(x0.saturating_sub(10 + text_width(&label, 1)), y.saturating_sub(4), 1, &label, INK);
        tick *= 10.0;
    }
    img.text(x0 + (x1 - x0) / 2 - text_width("kernel density", 1) / 2, y1 + 30, 1, "kernel density", INK);
    img.text(8, TOP - 18, 1, "delta perplexity (log)", INK);
    // Targets: within 1% perplexity at <= 40% density.
    dashed_h(&mut img, x0, x1, axes.y(1.0));
    dashed_v(&mut img, axes.x(0.4), y0, y1);
    img.text(axes.x(0.4) + 4, y0 + 4, 1, "target: <=40%, <=1%", GUIDE);
    // Markers and labels.
    let names = groups(points);
    for p in points {
        let colour = group_colour(names.iter().position(|g| g == &p.group).unwrap_or(0));
        let (x, y) = (axes.x(p.density), axes.y(p.delta_ppl_percent));
        img.fill(x.saturating_sub(MARKER / 2), y.saturating_sub(MARKER / 2), MARKER, MARKER, colour);
        img.text(x + MARKER, y.saturating_sub(4), 1, &p.label, colour);
    }
    // Legend.
    for (i, g) in names.iter().enumerate() {
        let y = TOP + 10 + 20 * i;
        img.fill(x1 + 20, y, MARKER, MARKER, group_colour(i));
        img.text(x1 + 20 + MARKER + 8, y, 1, g, INK);
    }
    Ok(img)
}

/// Draws the picture and writes it as PNG.
pub fn write_pareto_png(path: &Path, points: &[ParetoPoint], caption: &str) -> Result<()> {
    Ok(pareto_image(points, caption)?.write_png(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn point(group: &str, density: f64, delta: f64) -> ParetoPoint {
        ParetoPoint { label: format!("{group} {density}"), group: group.into(), density, delta_ppl_percent: delta }
    }

    #[test]
    fn markers_sit_where_their_values_say_in_their_group_colour() {
        let pts = vec![point("uniform", 0.5, 5.0), point("searched", 0.3, 0.5), point("searched", 0.9, -0.2)];
        let img = pareto_image(&pts, "test").unwrap();
        let axes = Axes::for_points(&pts);
        assert_eq!(axes.y_max, 10.0);
        assert_eq!(img.get(axes.x(0.5), axes.y(5.0)), group_colour(0));
        assert_eq!(img.get(axes.x(0.3), axes.y(0.5)), group_colour(1));
        // Better than the reference: on the bottom edge.
        assert_eq!(axes.y(-0.2), axes.y(DELTA_FLOOR));
        assert_eq!(img.get(axes.x(0.9), axes.y(-0.2)), group_colour(1));
        assert_eq!(groups(&pts), vec!["uniform".to_string(), "searched".to_string()]);
        assert_eq!(Axes::for_points(&[point("a", 0.1, 93.0)]).y_max, 100.0);
    }

    #[test]
    fn long_captions_wrap_at_separators() {
        let lines = caption_lines("aaaa | bbbb | cccc", text_width("aaaa | bbbb", 1));
        assert_eq!(lines, vec!["aaaa | bbbb".to_string(), "cccc".to_string()]);
        assert_eq!(caption_lines("one", 1), vec!["one".to_string()]);
    }

    #[test]
    fn bad_points_are_errors() {
        assert!(pareto_image(&[], "x").is_err());
        for (d, v) in [(f64::NAN, 1.0), (1.5, 1.0), (-0.1, 1.0), (0.5, f64::INFINITY)] {
            let err = pareto_image(&[point("a", d, v)], "x").unwrap_err().to_string();
            assert!(err.contains("Pareto point"), "{err}");
        }
    }

    proptest! {
        /// More density is further right, more loss higher up; everything stays in the plot area.
        #[test]
        fn axes_are_monotone_and_inside_the_plot(a in 0.0f64..1.0, b in 0.0f64..1.0, u in -5.0f64..500.0, v in -5.0f64..500.0) {
            let axes = Axes::for_points(&[point("g", a, u), point("g", b, v)]);
            if a < b { prop_assert!(axes.x(a) <= axes.x(b)); }
            if u < v { prop_assert!(axes.y(u) >= axes.y(v)); }
            for (d, t) in [(a, u), (b, v)] {
                prop_assert!((LEFT..WIDTH - RIGHT).contains(&axes.x(d)));
                prop_assert!((TOP..HEIGHT - BOTTOM).contains(&axes.y(t)));
            }
        }
    }
}
