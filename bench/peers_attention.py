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
import math
import os
import statistics
import sys
import time
import types

import numpy as np
import torch

TILE = 64


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- export reading

def load_bf16(path, shape):
    a = np.fromfile(path, dtype="<u2")
    assert a.size == math.prod(shape), f"{path}: {a.size} elements, expected {shape}"
    return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16).reshape(shape)


def load_i32(path):
    return torch.from_numpy(np.fromfile(path, dtype="<i4").astype(np.int32))


# ---------------------------------------------------------------- timing

class Timer:
    """Collects (start, end) event pairs around calls; total() after a synchronize."""

    def __init__(self):
        self.pairs = []

    def wrap(self, fn):
        def inner(*a, **k):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            r = fn(*a, **k)
            e.record()
            self.pairs.append((s, e))
            return r

        return inner

    def take(self):
        torch.cuda.synchronize()
        t = sum(s.elapsed_time(e) for s, e in self.pairs)
        self.pairs = []
        return t


def timed(fn, reps, kernel_timer=None):
    """Median whole time and median kernel time (kernel_timer's total per run) over reps."""
    whole, kern = [], []
    out = None
    for i in range(reps + 1):
        torch.cuda.synchronize()
        if kernel_timer is not None:
            kernel_timer.pairs = []
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        out = fn()
        e.record()
        torch.cuda.synchronize()
        k = kernel_timer.take() if kernel_timer is not None else None
        if i > 0 or reps == 0:
            whole.append(s.elapsed_time(e))
            if k is not None:
                kern.append(k)
    return statistics.median(whole), (statistics.median(kern) if kern else None), out


# ---------------------------------------------------------------- reference and error

def reference_rows(q, k, v, rows, group):
    """f32 causal attention at the sample rows: [H, S, D]."""
    H, N, D = q.shape
    scale = D ** -0.5
    out = torch.empty((H, rows.numel(), D), dtype=torch.float32, device=q.device)
    keys = torch.arange(N, device=q.device)
    mask = keys[None, :] > rows[:, None]
    for h in range(H):
        kh, vh = k[h // group].float(), v[h // group].float()
        s = (q[h, rows].float() @ kh.T) * scale
        s.masked_fill_(mask, float("-inf"))
        out[h] = torch.softmax(s, dim=-1) @ vh
        del s
    return out


def rel_err(out_rows, ref):
    o = out_rows.float()
    if not torch.isfinite(o).all():
        return float("nan")
    return (torch.linalg.vector_norm(o - ref) / torch.linalg.vector_norm(ref)).item()


# ---------------------------------------------------------------- MInference 0.1.6.0

class MInference:
    """Its ops and its HF patch's per-head prefill, imported without running the package __init__
    (which patches transformers and tries vllm)."""

    def __init__(self):
        spec = importlib.util.find_spec("minference")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("minference is not on sys.path (build the 0.1.6.0 sdist, see docs)")
        loc = list(spec.submodule_search_locations)[0]
        pkg = types.ModuleType("minference")
        pkg.__path__ = [loc]
        sys.modules["minference"] = pkg
        self.cuda = importlib.import_module("minference.cuda")
        self.pit = importlib.import_module("minference.ops.pit_sparse_flash_attention_v2")
        self.bsa = importlib.import_module("minference.ops.block_sparse_flash_attention")
        self.stream = importlib.import_module("minference.ops.streaming_kernel")
        self.kernel_timer = Timer()
        self.capture = None  # list receiving (kind, tensors) while density is captured
        p, b = self.pit, self.bsa
        orig_vs, orig_conv = p._triton_mixed_sparse_attention, p.convert_vertical_slash_indexes
        orig_bs, orig_bidx = b._triton_block_sparse_attention, b._build_block_index
        p._triton_mixed_sparse_attention = self.kernel_timer.wrap(orig_vs)
        b._triton_block_sparse_attention = self.kernel_timer.wrap(orig_bs)

        def conv(*a, **k):
            r = orig_conv(*a, **k)
            if self.capture is not None:
                block_count, _, column_count, _ = r
                self.capture.append(("vs", block_count.sum().item(), torch.ceil(column_count / TILE).sum().item()))
            return r

        def bidx(query, key, top_k, *a, **k):
            r = orig_bidx(query, key, top_k, *a, **k)
            if self.capture is not None:
                rows = query.shape[2] // TILE
                self.capture.append(("bs", r.shape[-1], rows))
            return r

        p.convert_vertical_slash_indexes = conv
        b._build_block_index = bidx
        self.stream_forward = self.kernel_timer.wrap(self.stream.streaming_forward)
        # Its HF patch's per-head prefill (estimation + index + kernel), if its module imports here.
        self.prefill = None
        self.prefill_error = None
        try:
            mods = types.ModuleType("minference.modules")
            mods.__path__ = [os.path.join(loc, "modules")]
            sys.modules["minference.modules"] = mods
            # Siblings that minference_forward imports (KV compression, Quest, ...; it takes torch,
            # math, nn and F from their star exports): the real ones where they import here, else
            # stand-ins with just those names, so that the prefill code and its kernels load.
            import torch.nn.functional as F

            for name, attrs in {
                "snapkv": {},
                "quest": {"quest_forward": None},
                "kvcompression": {},
                "flexprefill": {"flexprefill_forward": None},
            }.items():
                full = f"minference.modules.{name}"
                try:
                    importlib.import_module(full)
                except Exception as e:  # noqa: BLE001
                    log(f"MInference {full} does not import here ({type(e).__name__}); stand-in used")
                    m = types.ModuleType(full)
                    m.__dict__.update(dict(torch=torch, math=math, nn=torch.nn, F=F, **attrs))
                    sys.modules[full] = m
            # transformers 5 returns a (truthy) tuple from _is_package_available, so the module
            # takes vllm for present and its import fails: answer plainly for vllm meanwhile.
            import transformers.utils.import_utils as iu

            orig_avail = iu._is_package_available

            def avail(name, *a, **k):
                return False if name.startswith("vllm") else orig_avail(name, *a, **k)

            iu._is_package_available = avail
            try:
                mf = importlib.import_module("minference.modules.minference_forward")
            finally:
                iu._is_package_available = orig_avail
            mf.streaming_forward = self.stream_forward
            self.prefill = mf.minference_prefill_kernel
        except Exception as e:  # noqa: BLE001 - reported in the table
            self.prefill_error = f"{type(e).__name__}: {e}"[:120]


# ---------------------------------------------------------------- Flex

FULL_WIDTH = lambda rb: rb  # noqa: E731 - Triton reads both indices with the same strides


def flex_block_mask(csr, H, N, G, device):
    """BlockMask (G x G blocks) of every block our CSR index touches; causal mask_mod."""
    from torch.nn.attention.flex_attention import BlockMask

    R = N // TILE
    RB = N // G
    tile_ptr, tile_start = csr["tile_ptr"].to(device).long(), csr["tile_start"].to(device).long()
    col_ptr, col_index = csr["col_ptr"].to(device).long(), csr["col_index"].to(device).long()
    slots = torch.arange(H * R, device=device)
    t_slot = torch.repeat_interleave(slots, tile_ptr[1:] - tile_ptr[:-1])
    c_slot = torch.repeat_interleave(slots, col_ptr[1:] - col_ptr[:-1])
    ids = []
    for slot, key in ((t_slot, tile_start), (t_slot, tile_start + TILE - 1), (c_slot, col_index)):
        h, qb = slot // R, (slot % R) * TILE // G
        kb = key // G
        ok = (kb <= qb) & (kb < RB)
        ids.append(((h * RB + qb) * RB + kb)[ok])
    ids = torch.unique(torch.cat(ids))
    hq, kb = ids // RB, ids % RB
    full = kb < hq % RB
    touched = ids.numel()

    def pack(sel, w):
        # Flex needs the index width to span every KV block (it asserts KV len <= width * G).
        hq_s, kb_s = hq[sel], kb[sel]
        counts = torch.bincount(hq_s, minlength=H * RB)
        if w is None:
            w = max(int(counts.max().item()) if counts.numel() else 0, 1)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(hq_s.numel(), device=device) - starts[hq_s]
        idx = torch.zeros((H * RB, w), dtype=torch.int32, device=device)
        idx[hq_s, pos] = kb_s.to(torch.int32)
        return counts.to(torch.int32).reshape(1, H, RB), idx.reshape(1, H, RB, w)

    kv_n, kv_i = pack(~full, RB)
    f_n, f_i = pack(full, FULL_WIDTH(RB))

    def causal(b, h, q, kv):
        return q >= kv

    kwargs = {}
    import inspect

    params = inspect.signature(BlockMask.from_kv_blocks).parameters
    if "compute_q_blocks" in params:
        kwargs["compute_q_blocks"] = False
    if "seq_lengths" in params:
        kwargs["seq_lengths"] = (N, N)
    bm = BlockMask.from_kv_blocks(kv_n, kv_i, f_n, f_i, BLOCK_SIZE=(G, G), mask_mod=causal, **kwargs)
    return bm, touched


def flex_dense_tiles_equiv(touched_blocks, G):
    """G x G blocks expressed in 64 x 64 tiles."""
    return touched_blocks * (G // TILE) ** 2


# ---------------------------------------------------------------- main

def fmt(x, p=2):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and not math.isfinite(x):
        return "nan"
    return f"{x:.{p}f}"


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
