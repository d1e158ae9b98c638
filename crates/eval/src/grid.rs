//! Results of a needle grid (attention kind × depth × length) and their markdown and heat-map forms.

use crate::error::Result;
use crate::heatmap::Panel;
use crate::needle::{answer_has_value, NeedlePrompt};
use minference_engine::{generate, AttentionChoice, GenerateOptions, PrefillEngine, PrefillProgress, Sampler};
use minference_model::Tokenizer;
use std::time::Instant;

/// The outcome of one cell for one attention kind.
#[derive(Debug, Clone, PartialEq)]
pub struct CellResult {
    pub prompt_tokens: usize,
    pub achieved_depth: f64,
    pub value: String,
    pub answer: String,
    pub found: bool,
    pub seconds: f64,
}

/// Prefills `prompt` with `attention`, greedily decodes `max_new_tokens` and checks that the answer
/// repeats the needle's key.
pub fn run_needle_cell(
    engine: &mut dyn PrefillEngine,
    tokenizer: &Tokenizer,
    prompt: &NeedlePrompt,
    attention: &AttentionChoice,
    max_new_tokens: usize,
    progress: &mut dyn FnMut(PrefillProgress),
) -> Result<CellResult> {
    let start = Instant::now();
    let opts =
        GenerateOptions { max_new_tokens, sampler: Sampler::greedy(), stop_tokens: tokenizer.stop_tokens.clone() };
    let tokens = generate(engine, &prompt.tokens, attention, &opts, progress, &mut |_| true)?.tokens;
    let answer = tokenizer.decode(&tokens, true)?;
    Ok(CellResult {
        prompt_tokens: prompt.tokens.len(),
        achieved_depth: prompt.achieved_depth(),
        value: prompt.value.clone(),
        found: answer_has_value(&answer, &prompt.value),
        answer,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `cells[variant][depth][length]`.
#[derive(Debug, Clone, PartialEq)]
pub struct NeedleGrid {
    pub lengths: Vec<usize>,
    pub depths: Vec<u32>,
    pub variants: Vec<String>,
    pub cells: Vec<Vec<Vec<Option<CellResult>>>>,
}

impl NeedleGrid {
    pub fn new(lengths: Vec<usize>, depths: Vec<u32>, variants: Vec<String>) -> Self {
        let cells = vec![vec![vec![None; lengths.len()]; depths.len()]; variants.len()];
        NeedleGrid { lengths, depths, variants, cells }
    }

    pub fn panels(&self) -> Vec<Panel> {
        self.variants
            .iter()
            .zip(&self.cells)
            .map(|(name, rows)| Panel {
                title: name.clone(),
                found: rows.iter().map(|r| r.iter().map(|c| c.as_ref().map(|c| c.found)).collect()).collect(),
            })
            .collect()
    }

    /// Cells found / run for variant `v`, and how many of the cells variant 0 found it also found.
    pub fn summary(&self, v: usize) -> (usize, usize, usize, usize) {
        let (mut found, mut run, mut kept, mut reference) = (0, 0, 0, 0);
        for (r, row) in self.cells[v].iter().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                let Some(cell) = cell else { continue };
                run += 1;
                found += cell.found as usize;
                if self.cells[0][r][c].as_ref().is_some_and(|d| d.found) {
                    reference += 1;
                    kept += cell.found as usize;
                }
            }
        }
        (found, run, kept, reference)
    }

    /// One depth × length table per attention kind, then a summary table.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let header: Vec<String> = self.lengths.iter().map(|l| format!("{l} tok")).collect();
        for (v, name) in self.variants.iter().enumerate() {
            out += &format!(
                "\n**{name}** (✓ found, ✗ missed: the model's answer)\n\n| depth | {} |\n|---|{}\n",
                header.join(" | "),
                "---|".repeat(self.lengths.len())
            );
            for (r, depth) in self.depths.iter().enumerate() {
                let cells: Vec<String> = self.cells[v][r]
                    .iter()
                    .map(|c| match c {
                        None => "–".into(),
                        Some(c) if c.found => format!("✓ {}", c.value),
                        Some(c) => format!("✗ `{}`", c.answer.trim().replace(['|', '\n', '`'], " ")),
                    })
                    .collect();
                out += &format!("| {depth}% | {} |\n", cells.join(" | "));
            }
        }
        out += &format!("\n| attention | found | of {} found |\n|---|---|---|\n", self.variants[0]);
        for (v, name) in self.variants.iter().enumerate() {
            let (found, run, kept, reference) = self.summary(v);
            out += &format!("| {name} | {found}/{run} | {kept}/{reference} |\n");
        }
        out
    }
}
