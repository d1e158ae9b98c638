// The Vertical-Slash work item (one sequence-head) of estimate.cu, adaptive.cu and index.cu, int[8]:
// b, h, score_off, diag_off, k_v, k_s, sel_v_off, sel_s_off (estimate.rs, `VsItem`). k_v and k_s are
// the clamped budgets; for an adaptive head the host writes the selection's capacity and
// vs_adaptive (adaptive.cu) overwrites them with the budgets it picks, before vs_topk and
// vs_convert read them.
#pragma once

#define IT_B 0
#define IT_H 1
#define IT_SCORE 2
#define IT_DIAG 3
#define IT_KV 4
#define IT_KS 5
#define IT_SELV 6
#define IT_SELS 7
#define IT_STRIDE 8

// Entries always kept by the VS selection (core's pattern.rs) and the budget floors.
#define VS_FORCED_VERTICALS 30
#define VS_FORCED_SLASHES 100
#define VS_MIN_VERTICALS 30
#define VS_MIN_SLASHES 50
