//! The Hopper index planner (src/hopper/plan.rs, `hopper_plan_index`) against the index it plans: each
//! 64-row block must get exactly its tiles (clamped to the block's causal end) and its columns,
//! each key once, whatever the lists' sizes (shared-memory staging or not, one or several passes
//! of gather ownership bits) and whatever the order of a slot's columns.

use minference_backend_suite::{banded_vs_selection, random_index, random_vs_selection};
use minference_core::{convert_vs_head, AttnShape, HeadPattern, RowBlockIndex, SparseIndex};
use minference_cpu::rng::TestRng;
use minference_cuda::{hopper, DeviceIndex, Gpu};
use minference_test_support::hopper_gpu;

/// What block `b` of a sequence of `n` rows must compute before the causal mask: its tiles below
/// its last row's end, and its columns.
fn expected_keys(row: &RowBlockIndex, b: usize, n: usize) -> Vec<u32> {
    let row_end = (64 * b + 64).min(n) as i64;
    let mut keys: Vec<u32> = row
        .tiles
        .iter()
        .flat_map(|&t| (t as i64..(t as i64 + 64).min(row_end)).map(|k| k as u32))
        .chain(row.columns.iter().map(|&c| c as u32))
        .collect();
    keys.sort_unstable();
    keys
}

fn check(gpu: &Gpu, n: usize, rows: Vec<RowBlockIndex>, what: &str) {
    let r = n.div_ceil(64);
    let heads = rows.len() / r;
    let shape = AttnShape::single(heads, 1, 128, n);
    let patterns = vec![HeadPattern::VerticalSlash { k_v: 1, k_s: 1 }; heads];
    let host = SparseIndex::from_slots(&shape, rows.clone()).expect("index");
    let index = DeviceIndex::upload(gpu, &shape, &host).expect("upload");
    let planned = hopper::planned_keys(gpu, &shape, &patterns, &index).expect("plan").expect("plan fits");
    for (slot, row) in rows.iter().enumerate() {
        let want = expected_keys(row, slot % r, n);
        assert_eq!(
            planned[slot],
            want,
            "{what}: head {} block {}: {} planned keys, {} expected",
            slot / r,
            slot % r,
            planned[slot].len(),
            want.len()
        );
    }
}

/// The index's slots as row-block entries.
fn slot_rows(index: &SparseIndex) -> Vec<RowBlockIndex> {
    (0..index.slots())
        .map(|s| RowBlockIndex {
            tiles: index.tile_start[index.tile_ptr[s] as usize..index.tile_ptr[s + 1] as usize].to_vec(),
            columns: index.col_index[index.col_ptr[s] as usize..index.col_ptr[s + 1] as usize].to_vec(),
        })
        .collect()
}

/// Core's conversion of one selection per head.
fn vs_rows(n: usize, sels: impl Iterator<Item = minference_core::VsSelection>) -> Vec<RowBlockIndex> {
    let shape = AttnShape::single(1, 1, 128, n);
    sels.flat_map(|sel| convert_vs_head(&sel, shape.seqs[0]).expect("valid selection")).collect()
}

#[test]
fn planner_gives_each_block_its_vs_keys_once() {
    let Some(gpu) = hopper_gpu() else { return };
    let mut rng = TestRng::new(5);
    for n in [63usize, 777, 4133, 20000] {
        let seq = AttnShape::single(1, 1, 128, n).seqs[0];
        let random = vs_rows(n, (0..2).map(|_| random_vs_selection(seq, 300, 900, &mut rng)));
        check(&gpu, n, random, &format!("random VS at {n}"));
        let banded = vs_rows(n, (0..2).map(|_| banded_vs_selection(n, &mut rng)));
        check(&gpu, n, banded, &format!("banded VS at {n}"));
    }
}

#[test]
fn planner_ignores_the_order_of_columns() {
    let Some(gpu) = hopper_gpu() else { return };
    let mut rng = TestRng::new(6);
    let shape = AttnShape::single(3, 1, 128, 1000);
    let index = random_index(&shape, &mut rng);
    let mut rows = slot_rows(&index);
    for row in rows.iter_mut().step_by(2) {
        rng.shuffle(&mut row.columns);
    }
    check(&gpu, 1000, rows, "hand-made index, shuffled columns");
}

#[test]
fn planner_handles_lists_beyond_shared_memory() {
    let Some(gpu) = hopper_gpu() else { return };
    // Many columns: every key before the block except its diagonal tile, for every other block
    // (past the warp's staged list, and more gather chunks than one pass of ownership bits).
    let n = 20000usize;
    let r = n.div_ceil(64);
    let rows: Vec<RowBlockIndex> = (0..r)
        .map(|b| RowBlockIndex {
            tiles: vec![64 * b as i32],
            columns: if b % 2 == 0 { (0..64 * b as i32).collect() } else { vec![] },
        })
        .collect();
    check(&gpu, n, rows, "dense columns");
    // Many tiles: the last blocks of a long sequence take every tile up to their rows.
    let n = 200_000usize;
    let r = n.div_ceil(64);
    let rows: Vec<RowBlockIndex> = (0..r)
        .map(|b| RowBlockIndex {
            tiles: if b + 3 >= r { (0..=b as i32).map(|t| 64 * t).collect() } else { vec![64 * b as i32] },
            columns: vec![],
        })
        .collect();
    check(&gpu, n, rows, "dense tiles");
}

#[test]
fn readbacks_decline_a_plan_that_needs_several_launches() {
    let Some(gpu) = hopper_gpu() else { return };
    let mut rng = TestRng::new(7);
    let shape = AttnShape::single(3, 1, 128, 1000);
    let patterns = vec![HeadPattern::VerticalSlash { k_v: 1, k_s: 1 }; 3];
    let host = random_index(&shape, &mut rng);
    let index = DeviceIndex::upload(&gpu, &shape, &host).expect("upload");
    let whole = hopper::one_launch_plan_bytes(&index);
    let fits = hopper::plan_summary(&gpu, &shape, &patterns, Some(&index)).expect("summary");
    assert!(fits.is_some_and(|s| s.range + s.gather + s.pair > 0), "a plan within memory is summarised");
    // Below one launch's buffer the attention splits by head groups; a readback of the whole
    // layer cannot, and says so instead of failing (a 1M-token benchmark row must still print).
    gpu.set_plan_budget(Some(whole - 64));
    let summary = hopper::plan_summary(&gpu, &shape, &patterns, Some(&index));
    let keys = hopper::planned_keys(&gpu, &shape, &patterns, &index);
    gpu.set_plan_budget(None);
    assert!(summary.expect("no error").is_none(), "summary of a split plan");
    assert!(keys.expect("no error").is_none(), "keys of a split plan");
}
