//! Candidate scoring of the search on the GPU: a head's candidate masks packed as the scoring
//! kernels' CSR (`minference_cuda::search_score`, the typed launcher of kernels/search_score.cu),
//! their per-row results summed per mask in row order over the rows from a floor on.

use minference_core::{RowBlockIndex, TILE};
use minference_cuda::search_score::{score_rows, MaskCsr, MaskKind};
use minference_cuda::{CudaError, DeviceHead, Gpu};

/// One candidate's kernel mask (the search crate's `HeadMask`, borrowed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScoreMask<'a> {
    Dense,
    AShape {
        n_init: usize,
        n_local: usize,
    },
    /// Tiles and gathered columns per 64-row block; missing blocks keep nothing.
    Index(&'a [RowBlockIndex]),
}

/// What to score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreRequest {
    /// Rows before this are not scored.
    pub floor: usize,
    /// Also compare each mask's normalised output with the dense output.
    pub want_output: bool,
    /// `|O_mask − O_dense|` above this counts as one element over.
    pub threshold: f32,
}

/// One mask's sums over the scored rows (the search crate's `Tally`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreSums {
    pub rows: u64,
    /// Σ over rows of the kept probability mass.
    pub mass: f64,
    /// Σ ‖O_mask − O_dense‖² (0 without `want_output`).
    pub err_sq: f64,
    /// Σ ‖O_dense‖² (0 without `want_output`).
    pub ref_sq: f64,
    /// Elements with `|O_mask − O_dense| > threshold` (0 without `want_output`).
    pub over: u64,
}

fn to_i32(x: usize) -> Result<i32, CudaError> {
    i32::try_from(x).map_err(|_| CudaError::Invalid(format!("{x} index entries exceed the int32 range")))
}

/// Packs `masks` for a head of `n` rows. Index rows past the head's blocks are an error; A-shape
/// settings are clamped to `n + 1` (larger ones keep the same entries).
pub fn pack(masks: &[ScoreMask], n: usize) -> Result<MaskCsr, CudaError> {
    let blocks = n.div_ceil(TILE);
    let cap = |x: usize| x.min(n + 1) as i32;
    let mut p = MaskCsr { blocks, ..Default::default() };
    p.tile_ptr.push(0);
    p.col_ptr.push(0);
    for m in masks {
        p.kinds.push(match *m {
            ScoreMask::Dense => MaskKind::Dense,
            ScoreMask::AShape { n_init, n_local } => MaskKind::AShape { n_init: cap(n_init), n_local: cap(n_local) },
            ScoreMask::Index(rows) => {
                if rows.len() > blocks {
                    return Err(CudaError::Invalid(format!(
                        "a mask has {} row blocks, the head has {blocks}",
                        rows.len()
                    )));
                }
                MaskKind::Index
            }
        });
        for b in 0..blocks {
            if let ScoreMask::Index(rows) = m {
                if let Some(r) = rows.get(b) {
                    p.tile_start.extend_from_slice(&r.tiles);
                    p.col_index.extend_from_slice(&r.columns);
                }
            }
            p.tile_ptr.push(to_i32(p.tile_start.len())?);
            p.col_ptr.push(to_i32(p.col_index.len())?);
        }
    }
    Ok(p)
}

/// Scores every mask of `masks` on `head`: per mask the sums over rows `floor..n`.
pub fn score_masks(
    gpu: &Gpu,
    head: &DeviceHead,
    masks: &[ScoreMask],
    req: &ScoreRequest,
) -> Result<Vec<ScoreSums>, CudaError> {
    head.validate()?;
    if masks.is_empty() {
        return Ok(Vec::new());
    }
    let n = head.n;
    let csr = pack(masks, n)?;
    let floor = req.floor.min(n - 1);
    let scores = score_rows(gpu, head, &csr, floor / TILE, req.want_output, req.threshold)?;
    Ok((0..masks.len())
        .map(|m| {
            let rows = m * n + floor..(m + 1) * n;
            let mut s = ScoreSums { rows: (n - floor) as u64, ..Default::default() };
            s.mass = scores.mass[rows.clone()].iter().map(|&x| x as f64).sum();
            if req.want_output {
                s.err_sq = scores.err_sq[rows.clone()].iter().map(|&x| x as f64).sum();
                s.ref_sq = scores.ref_sq[rows.clone()].iter().map(|&x| x as f64).sum();
                s.over = scores.over[rows].iter().map(|&x| x as u64).sum();
            }
            s
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tiles: &[i32], columns: &[i32]) -> RowBlockIndex {
        RowBlockIndex { tiles: tiles.to_vec(), columns: columns.to_vec() }
    }

    #[test]
    fn packing_lays_out_one_slot_per_mask_and_block() {
        let idx = vec![row(&[0], &[]), row(&[0, 64], &[3, 7])];
        let masks = [ScoreMask::Dense, ScoreMask::Index(&idx), ScoreMask::AShape { n_init: 4, n_local: 1 << 40 }];
        let p = pack(&masks, 130).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.blocks, 3);
        // Huge windows are clamped to n + 1.
        assert_eq!(p.kinds, vec![MaskKind::Dense, MaskKind::Index, MaskKind::AShape { n_init: 4, n_local: 131 }]);
        // Slots 0..3 dense (empty), 3..6 the index (third block missing = empty), 6..9 A-shape.
        assert_eq!(p.tile_ptr, vec![0, 0, 0, 0, 1, 3, 3, 3, 3, 3]);
        assert_eq!(p.tile_start, vec![0, 0, 64]);
        assert_eq!(p.col_ptr, vec![0, 0, 0, 0, 0, 2, 2, 2, 2, 2]);
        assert_eq!(p.col_index, vec![3, 7]);
    }

    #[test]
    fn packing_rejects_an_index_longer_than_the_head() {
        let idx = vec![RowBlockIndex::default(); 3];
        assert!(pack(&[ScoreMask::Index(&idx)], 128).is_err());
        assert!(pack(&[ScoreMask::Index(&idx)], 129).is_ok());
        assert_eq!(pack(&[], 10).map(|p| p.tile_ptr).ok(), Some(vec![0]));
    }
}
