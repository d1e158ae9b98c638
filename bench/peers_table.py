#!/usr/bin/env python3
"""Markdown tables from the raw CSVs of one run (bench/results/*-peers.csv of `minference bench
attention`, and the `bench e2e` CSV with its `-hf` sibling), for the README and notes: every figure
in a table comes from one CSV set, i.e. one card and one call.

    python3 bench/peers_table.py --attention bench/results/2026-12-01-h200-attention-16k-128k-peers.csv \
        --e2e bench/results/2026-12-01-h200-e2e-qwen2.5-7b.csv
"""
import argparse
import csv
import os


def f(x, p=1):
    try:
        return f"{float(x):.{p}f}"
    except (TypeError, ValueError):
        return x or "-"


def attention_table(paths):
    rows = [r for p in paths for r in csv.DictReader(open(p))]
    if not rows:
        return ""
    cards = sorted({r["card"] for r in rows})
    commits = sorted({r["commit"] for r in rows})
    dates = sorted({r["date"] for r in rows})
    out = [f"Attention, one layer H=32 H_kv=8 D=128 bf16, {', '.join(cards)}, {', '.join(dates)}, commit "
           f"{', '.join(commits)}; ms as kernel (whole layer); identical Q/K/V; VS peers on our index",
           "",
           "| N | set | density ours | ours | MInference VS kernel, our index | MInference own est. (HF patch path) "
           "| Flex, BlockMask of our blocks | err ours / MInference own / Flex |",
           "|---|---|---|---|---|---|---|---|"]
    by = {}
    for r in rows:
        by.setdefault((int(r["n"]), r["set"]), {})[r["method"]] = r
    for (n, s), m in sorted(by.items()):
        if s == "dense":
            continue

        def cell(name):
            r = m.get(name)
            if r is None:
                return "-"
            if not r["kernel_ms"]:
                return r["rel_err_vs_dense"] or "n/a"
            ratio = r.get("ours_over_peer_kernel")
            tail = f", ours/peer {f(ratio, 2)}" if ratio else ""
            return f"{f(r['kernel_ms'])} ({f(r['layer_ms'])}){tail}"

        errs = " / ".join(f(m[k]["rel_err_vs_dense"], 3) if k in m else "-"
                          for k in ("ours", "MInference own est.+index+kernel", "Flex (BlockMask of our blocks)"))
        ours = m.get("ours", {})
        out.append(f"| {n // 1024}K | {s} | {f(ours.get('density'), 3)} | {cell('ours')} | "
                   f"{cell('MInference VS kernel, our index')} | {cell('MInference own est.+index+kernel')} | "
                   f"{cell('Flex (BlockMask of our blocks)')} | {errs} |")
    dense = [(int(r["n"]), r) for r in rows if r["set"] == "dense"]
    if dense:
        out += ["", "| N | ours dense | SDPA flash | SDPA cuDNN |", "|---|---|---|---|"]
        for n in sorted({n for n, _ in dense}):
            d = {r["method"]: r for k, r in dense if k == n}

            def c(name):
                r = d.get(name)
                return f"{f(r['kernel_ms'])} ms ({f(r['effective_tflops'], 0)} TF/s)" if r and r["kernel_ms"] else "-"

            out.append(f"| {n // 1024}K | {c('ours dense')} | {c('SDPA flash')} | {c('SDPA cuDNN')} |")
    return "\n".join(out)


def e2e_table(path):
    ours = list(csv.DictReader(open(path)))
    stem, ext = os.path.splitext(path)
    hf_path = f"{stem}-hf{ext}"
    hf = list(csv.DictReader(open(hf_path))) if os.path.exists(hf_path) else []
    if not ours:
        return ""
    # The attention workload of each row (older CSVs: a "weights" column, always random).
    work = lambda r: r.get("workload") or r.get("weights") or "random"
    out = [f"TTFT, {ours[0]['shape']}, {ours[0]['gpu']}, {ours[0].get('date', '')}, commit {ours[0].get('commit', '')}"
           "; workload random: i.i.d. random weights (near-uniform attention); structured: weights built so that "
           "attention has the core generator's sinks, local band, far slashes and retrieval columns "
           "(HF's dense time does not depend on the workload)", "",
           "| tokens | workload | ours dense | ours MInference | HF transformers + SDPA dense | HF peak GiB | ours planned GiB |",
           "|---:|---|---:|---:|---:|---:|---:|"]
    for w in sorted({work(r) for r in ours}, key=lambda w: w != "random"):
        rows = [r for r in ours if work(r) == w]
        for n in sorted({int(r["tokens"]) for r in rows}):
            def t(kind):
                r = next((r for r in rows if int(r["tokens"]) == n and r["attention"] == kind), None)
                return (f(r["ttft_s"], 2) + " s" if r and r["ttft_s"] else (r["status"] if r else "-")), r
            d, dr = t("dense")
            d = d if dr else "not run"
            s, sr = t("minference")
            planned = dr or sr  # the same plan for both; a length may have only one of them
            h = next((r for r in hf if int(r["tokens"]) == n), None)
            hcell = (f(h["ttft_s"], 2) + " s" if h["ttft_s"] else h["status"]) if h else "-"
            out.append(f"| {n // 1024}K | {w} | {d} | {s} | {hcell} | {f(h['peak_gib'], 1) if h else '-'} | "
                       f"{f(planned.get('planned_device_gib'), 1) if planned else '-'} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attention", nargs="*", default=[])
    ap.add_argument("--e2e")
    a = ap.parse_args()
    if a.attention:
        print(attention_table(a.attention))
        print()
    if a.e2e:
        print(e2e_table(a.e2e))


if __name__ == "__main__":
    main()
