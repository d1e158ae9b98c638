#!/usr/bin/env python3
"""Peers of `minference bench attention`, on exactly our tensors and our index, in the same call.

Reads the export that `minference bench attention --peers` writes (format `minference-peer-export/1`,
documented in crates/cuda/src/bench_export.rs: raw little-endian bf16 Q/K/V per length, our per-head
vertical/slash selections, our CSR index, sample rows of our output, our timings) and times on the
same card:

* PyTorch SDPA, flash and cuDNN backends (dense causal; K/V repeated to H heads);
* MInference 0.1.6.0 (its own package, imported from wherever pip put it; nothing of it is copied
  here): its VS kernel on our selections, converted by its own `convert_vertical_slash_indexes`;
  and its HF patch's per-head prefill (`minference_prefill_kernel`: its own estimation, index build
  and kernels: VS, block-sparse top-100, streaming/A-shape), head by head as its patch runs them;
* FlexAttention (`torch.compile`d, `enable_gqa=True`) with a BlockMask of the 64x64 blocks our
  index touches (A-shape: its mask_mod).

Every row: kernel-only and whole-layer time (median of --reps after one warm-up, CUDA events),
kernel density (64x64 tiles computed / dense causal tiles), effective TF/s of the computed tiles,
the relative error of the output vs an f32 reference at the exported sample rows, and the ratio
ours / peer (> 1: the peer is faster).

    python3 bench/peers_attention.py --manifest /tmp/minference-peers-123/manifest.json --csv out.csv
"""
import argparse
import csv
import datetime
import importlib
import importlib.util
import json
import os
import time

import torch


from peer_runners import (  # noqa: E402 - the script's folder is on sys.path
    TILE,
    MInference,
    flex_block_mask,
    flex_dense_tiles_equiv,
    fmt,
    load_bf16,
    load_i32,
    log,
    reference_rows,
    rel_err,
    timed,
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--csv")
    ap.add_argument("--commit", default=os.environ.get("MINFERENCE_COMMIT", "unknown"))
    ap.add_argument("--date", default=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"))
    ap.add_argument("--flash-max", type=int, default=262144, help="skip SDPA flash above this length")
    ap.add_argument("--flex-block", type=int, default=0, help="Flex BlockMask block size (0: try 64, then 128)")
    ap.add_argument("--skip", default="", help="comma list of: sdpa,minference,flex")
    ap.add_argument("--time-budget", type=float, default=float(os.environ.get("PEERS_TIME_BUDGET", "0")),
                    help="seconds (default $PEERS_TIME_BUDGET); later rows are skipped past it")
    args = ap.parse_args()
    t_start = time.time()
    skip = set(s for s in args.skip.split(",") if s)
    root = os.path.dirname(os.path.abspath(args.manifest))
    man = json.load(open(args.manifest))
    H, HKV, D = man["heads"], man["kv_heads"], man["head_dim"]
    group = H // HKV
    dev = torch.device(os.environ.get("PEERS_DEVICE", "cuda"))  # cpu only for testing the script
    card = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(f"card: {card} (export from: {man['card']}) | H={H} H_kv={HKV} D={D} bf16 | torch {torch.__version__}")

    mi, mi_error = None, None
    if "minference" not in skip:
        try:
            mi = MInference()
        except Exception as e:  # noqa: BLE001
            mi_error = f"{type(e).__name__}: {e}"[:120]
            log(f"MInference unavailable: {mi_error}")
    flex = None
    if "flex" not in skip:
        try:
            dynamo_config = importlib.import_module("torch._dynamo.config")
            for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit"):
                if hasattr(dynamo_config, name):
                    setattr(dynamo_config, name, 512)
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention

            flex = torch.compile(flex_attention, dynamic=False)
        except Exception as e:  # noqa: BLE001
            log(f"FlexAttention unavailable: {e}")
    flex_G = [args.flex_block] if args.flex_block else [64, 128]

    header = ("| N | set | method | kernel ms | layer ms | density | eff. TF/s | rel. err vs dense | "
              "ours/peer kernel | ours/peer layer |")
    print(header)
    print("|" + "---|" * 10)
    rows_out = []

    def emit(n, regime, setname, method, kernel, layer, density, tflops, err, ratio_k, ratio_l, note=""):
        print(f"| {n} | {setname} | {method} | {fmt(kernel)} | {fmt(layer)} | {fmt(density, 3)} | "
              f"{fmt(tflops, 0)} | {fmt(err, 4) if not isinstance(err, str) else err} | "
              f"{fmt(ratio_k)} | {fmt(ratio_l)} |" + (f" {note}" if note else ""), flush=True)
        rows_out.append(dict(card=card, date=args.date, commit=args.commit, n=n, regime=regime, set=setname,
                             method=method, kernel_ms=kernel, layer_ms=layer, density=density,
                             effective_tflops=tflops, rel_err_vs_dense=err, ours_over_peer_kernel=ratio_k,
                             ours_over_peer_layer=ratio_l, note=note))

    def over_budget():
        return args.time_budget and time.time() - t_start > args.time_budget

    def fail(n, regime, setname, method, e):
        msg = "out of memory" if isinstance(e, torch.OutOfMemoryError) else f"{type(e).__name__}: {e}"
        msg = msg.splitlines()[0][:100] if msg else "error"
        emit(n, regime, setname, method, None, None, None, None, msg, None, None)
        torch.cuda.empty_cache()

    def ratio(a, b):
        return a / b if a is not None and b else None

    for entry in man["entries"]:
        n, regime = entry["n"], entry["regime"]
        R = n // TILE
        dense_tiles = H * R * (R + 1) / 2
        tile_flops = 4.0 * TILE * TILE * D
        dense_flops = 4.0 * n * (n + 1) / 2 * D * H
        reps = args.reps if n <= 262144 else 1
        q = load_bf16(os.path.join(root, entry["q"]), (H, n, D)).to(dev)
        k = load_bf16(os.path.join(root, entry["k"]), (HKV, n, D)).to(dev)
        v = load_bf16(os.path.join(root, entry["v"]), (HKV, n, D)).to(dev)
        rows = torch.tensor(entry["sample_rows"], dtype=torch.long, device=dev)
        ref = reference_rows(q, k, v, rows, group)

        # Dense rows.
        if entry.get("dense") is not None:
            emit(n, regime, "dense", "ours dense", entry["dense"], entry["dense"], 1.0,
                 dense_flops / entry["dense"] / 1e9, None, None, None)
        if "sdpa" not in skip:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            q4 = q[None]
            krep = k.repeat_interleave(group, dim=0)[None]
            vrep = v.repeat_interleave(group, dim=0)[None]
            for name, backend, limit in (("SDPA flash", SDPBackend.FLASH_ATTENTION, args.flash_max),
                                         ("SDPA cuDNN", SDPBackend.CUDNN_ATTENTION, None)):
                if (limit is not None and n > limit) or over_budget():
                    emit(n, regime, "dense", name, None, None, None, None, "skipped", None, None)
                    continue
                try:
                    with sdpa_kernel(backend):
                        ms, _, o = timed(lambda: torch.nn.functional.scaled_dot_product_attention(
                            q4, krep, vrep, is_causal=True), reps)
                    err = rel_err(o[0][:, rows], ref)
                    del o
                    emit(n, regime, "dense", name, ms, ms, 1.0, dense_flops / ms / 1e9, err,
                         ratio(entry.get("dense"), ms), ratio(entry.get("dense"), ms))
                except Exception as e:  # noqa: BLE001
                    fail(n, regime, "dense", name, e)
            del krep, vrep, q4
            torch.cuda.empty_cache()

        for s in entry["sets"]:
            setname, pats = s["set"], s["patterns"]
            ours = s["ours"]
            ours_rows = load_bf16(os.path.join(root, s["out_rows"]), (H, rows.numel(), D)).to(dev)
            emit(n, regime, setname, "ours", ours["attention_ms"], ours["total_ms"], ours["density"],
                 ours["effective_tflops"], rel_err(ours_rows, ref), None, None)
            kinds = {p["kind"] for p in pats}
            out = torch.empty((1, H, n, D), dtype=torch.bfloat16, device=dev)

            # MInference's VS kernel and converter on our selections (VS heads only sets).
            if mi is not None and kinds == {"vs"} and s.get("vs"):
                if over_budget():
                    emit(n, regime, setname, "MInference VS kernel, our index", None, None, None, None,
                         "skipped (time budget)", None, None)
                else:
                    try:
                        flat = load_i32(os.path.join(root, s["vs"])).to(dev)
                        idx = []
                        for h, off in enumerate(s["vs_offsets"]):
                            vo, vl, so, sl = off
                            idx.append((flat[vo:vo + vl].reshape(1, 1, vl), flat[so:so + sl].reshape(1, 1, sl)))

                        def run_vs():
                            for h in range(H):
                                out[:, h:h + 1] = mi.pit.vertical_slash_sparse_attention(
                                    q[None, h:h + 1], k[None, h // group:h // group + 1],
                                    v[None, h // group:h // group + 1], idx[h][0], idx[h][1])
                            return out

                        layer, kern, o = timed(run_vs, reps, mi.kernel_timer)
                        mi.capture = []
                        run_vs()
                        torch.cuda.synchronize()
                        tiles = sum(b + c for _, b, c in mi.capture)
                        mi.capture = None
                        mi.kernel_timer.pairs = []
                        err = rel_err(o[0][:, rows], ref)
                        ours_layer = ours["index_ms"] + ours["attention_ms"]
                        emit(n, regime, setname, "MInference VS kernel, our index", kern, layer,
                             tiles / dense_tiles, tiles * tile_flops / kern / 1e9, err,
                             ratio(ours["attention_ms"], kern), ratio(ours_layer, layer),
                             "layer = its convert_vertical_slash_indexes + kernel; ours/peer layer uses our index + kernel")
                        del flat, idx
                    except Exception as e:  # noqa: BLE001
                        fail(n, regime, setname, "MInference VS kernel, our index", e)

            # MInference's HF-patch prefill per head: its own estimation, index and kernels.
            method = "MInference own est.+index+kernel"
            if mi is None or mi.prefill is None:
                emit(n, regime, setname, method, None, None, None, None,
                     f"n/a: {mi_error or (mi and mi.prefill_error)}", None, None)
            elif over_budget():
                emit(n, regime, setname, method, None, None, None, None, "skipped (time budget)", None, None)
            else:
                try:
                    best = {}
                    for h, p in enumerate(pats):
                        if p["kind"] == "vs":
                            best[str(h)] = ["vertical_and_slash", p["k_v"], p["k_s"], 1]
                        elif p["kind"] == "bs":
                            best[str(h)] = ["block_sparse", p["k_b"], None, 1]
                        elif p["kind"] == "ashape":
                            best[str(h)] = ["stream_llm", p["n_init"], p["n_local"], 1]
                        else:
                            raise ValueError(f"no MInference pattern for {p}")
                    config = {"best_pattern": [best]}

                    def run_mi():
                        for h in range(H):
                            out[:, h:h + 1] = mi.prefill(
                                q[None, h:h + 1], k[None, h // group:h // group + 1],
                                v[None, h // group:h // group + 1], h, 0, config)
                        return out

                    layer, kern, o = timed(run_mi, reps, mi.kernel_timer)
                    mi.capture = []
                    run_mi()
                    torch.cuda.synchronize()
                    tiles = 0.0
                    for c in mi.capture:
                        if c[0] == "vs":
                            tiles += c[1] + c[2]
                        else:
                            top_k, rws = c[1], min(c[2], R)
                            tiles += sum(min(m + 1, top_k) for m in range(rws))
                    mi.capture = None
                    mi.kernel_timer.pairs = []
                    note = ""
                    if kinds == {"ashape"}:
                        tiles = ours["density"] * dense_tiles
                        note = "A-shape density: our tile count for the same n_init/n_local"
                    err = rel_err(o[0][:, rows], ref)
                    emit(n, regime, setname, method, kern, layer, tiles / dense_tiles,
                         tiles * tile_flops / kern / 1e9 if kern else None, err,
                         ratio(ours["attention_ms"], kern), ratio(ours["total_ms"], layer), note)
                except Exception as e:  # noqa: BLE001
                    fail(n, regime, setname, method, e)
            del out
            torch.cuda.empty_cache()

            # FlexAttention with a BlockMask of the blocks our index touches.
            if flex is not None:
                method = "Flex (BlockMask of our blocks)"
                if over_budget():
                    emit(n, regime, setname, method, None, None, None, None, "skipped (time budget)", None, None)
                    continue
                done = False
                last_err = None
                for G in flex_G:
                    # Two [H, N/G, N/G] int32 block indices must fit beside everything else.
                    if n % G or (len(flex_G) > 1 and 2 * H * (n // G) ** 2 * 4 > 24 * 2**30):
                        continue
                    try:
                        opts = {"BLOCK_M": G, "BLOCK_N": G} if G == 64 else None
                        if kinds == {"ashape"}:
                            n_init, n_local = pats[0]["n_init"], pats[0]["n_local"]

                            def amask(b, h, qi, kv):
                                return (qi >= kv) & ((kv < n_init) | (qi - kv < n_local))

                            def build():
                                return create_block_mask(amask, None, None, n, n, device=dev, BLOCK_SIZE=G,
                                                         _compile=True), None
                        elif s.get("csr"):
                            csr = {name: load_i32(os.path.join(root, f)) for name, f in s["csr"].items()}

                            def build():
                                return flex_block_mask(csr, H, n, G, dev)
                        else:
                            raise ValueError("no index for Flex")
                        q4, k4, v4 = q[None], k[None], v[None]
                        state = {}

                        def run_build():
                            state["bm"], state["touched"] = build()
                            return state["bm"]

                        build_ms, _, _ = timed(run_build, 1)
                        bm = state["bm"]
                        touched = state["touched"]
                        if touched is None:  # A-shape: count from the BlockMask
                            touched = int(bm.kv_num_blocks.sum().item() * H / bm.kv_num_blocks.shape[1])
                            if bm.full_kv_num_blocks is not None:
                                touched += int(bm.full_kv_num_blocks.sum().item() * H / bm.full_kv_num_blocks.shape[1])
                        kern, _, o = timed(lambda: flex(q4, k4, v4, block_mask=bm, enable_gqa=True,
                                                        kernel_options=opts), reps)
                        tiles = flex_dense_tiles_equiv(touched, G)
                        err = rel_err(o[0][:, rows], ref)
                        del o
                        layer = kern + build_ms
                        emit(n, regime, setname, method, kern, layer, tiles / dense_tiles,
                             tiles * tile_flops / kern / 1e9, err, ratio(ours["attention_ms"], kern),
                             ratio(ours["total_ms"], layer),
                             f"{G}x{G} blocks; layer = BlockMask build from our index + kernel")
                        done = True
                        del bm, state
                        break
                    except Exception as e:  # noqa: BLE001
                        last_err = e
                        log(f"Flex with {G}x{G} blocks failed at {n}/{setname}: {type(e).__name__}: {str(e)[:300]}")
                        torch.cuda.empty_cache()
                if not done:
                    fail(n, regime, setname, method, last_err or RuntimeError("no block size fits"))
            torch.cuda.empty_cache()
        del q, k, v, ref
        torch.cuda.empty_cache()

    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows_out[0].keys()) if rows_out else ["card"])
            w.writeheader()
            for r in rows_out:
                w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        log(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
