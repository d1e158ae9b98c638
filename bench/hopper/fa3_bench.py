"""Correctness + timing harness of the sm_90a warp-specialised attention prototype.

Usage (GPU machine): python3 bench/hopper/fa3_bench.py LIB.so OUTDIR [--quick]
Loads the C launcher `mi_hopper_attn_fwd` (crates/cuda/kernels/hopper/fa3_launch.cu) through ctypes,
checks it against a float32 torch reference (poisoned outputs, every element written), then times it
beside torch SDPA cuDNN in the same process. Prints a short table last; full log to OUTDIR.
"""
import ctypes
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

LIB = ctypes.CDLL(sys.argv[1])
OUTDIR = sys.argv[2]
QUICK = "--quick" in sys.argv
fn = LIB.mi_hopper_attn_fwd
fn.restype = ctypes.c_int
fn.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 5 + [ctypes.c_void_p] * 4 + [ctypes.c_int, ctypes.c_void_p]

LOG = open(os.path.join(OUTDIR, "fa3_log.txt"), "w")
SUMMARY = []


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.write(s + "\n")
    LOG.flush()


def ptr(t):
    return None if t is None else t.data_ptr()


def ours(q, k, v, o, lse=None, causal=True, sparse=None, grid=0):
    H, N, D = q.shape
    Hkv = k.shape[0]
    rp, rg, cp, cl = sparse if sparse is not None else (None, None, None, None)
    rc = fn(ptr(q), ptr(k), ptr(v), ptr(o), ptr(lse), H, Hkv, N, D, int(causal), ptr(rp), ptr(rg), ptr(cp), ptr(cl),
            grid, torch.cuda.current_stream().cuda_stream)
    if rc != 0:
        raise RuntimeError(f"mi_hopper_attn_fwd returned {rc}")


def sync_deadline(what, seconds=20.0):
    """Wait for the GPU with a deadline: a hung kernel (barrier deadlock) ends the process at once
    instead of burning the device lease."""
    ev = torch.cuda.Event()
    ev.record()
    t0 = time.time()
    while not ev.query():
        if time.time() - t0 > seconds:
            log(f"HANG: {what} did not finish in {seconds} s; exiting")
            LOG.close()
            os._exit(3)
        time.sleep(0.0005)


def reference(q, k, v, mask_fn):
    """float32 reference, one head at a time. mask_fn(h) -> bool [N, N] (True = computed)."""
    H, N, D = q.shape
    g = H // k.shape[0]
    out = torch.empty(H, N, D, dtype=torch.float32, device=q.device)
    lse = torch.empty(H, N, dtype=torch.float32, device=q.device)
    for h in range(H):
        s = (q[h].float() @ k[h // g].float().T) / math.sqrt(D)
        s = s.masked_fill(~mask_fn(h), float("-inf"))
        l = torch.logsumexp(s, dim=-1)
        p = torch.exp(s - l[:, None])
        p = torch.nan_to_num(p, nan=0.0)
        out[h] = p @ v[h // g].float()
        lse[h] = l
    return out, lse


def rel_err(a, b):
    return ((a.float() - b).norm() / b.norm().clamp_min(1e-30)).item()


def rand_qkv(H, Hkv, N, D, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(H, N, D, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(Hkv, N, D, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(Hkv, N, D, device="cuda", dtype=torch.bfloat16, generator=g)
    return q, k, v


FAILS = []


def check(name, q, k, v, mask_fn, causal=True, sparse=None, grid=0, empty_rows=None):
    H, N, D = q.shape
    o = torch.full_like(q, float("nan"))
    lse = torch.full((H, N), float("nan"), device="cuda", dtype=torch.float32)
    ours(q, k, v, o, lse, causal=causal, sparse=sparse, grid=grid)
    sync_deadline(name)
    ref, rlse = reference(q, k, v, mask_fn)
    unwritten = torch.isnan(o).sum().item()
    lse_unwritten = torch.isnan(lse).sum().item()
    err = rel_err(o, ref)
    fin = torch.isfinite(rlse)
    lerr = (lse[fin] - rlse[fin]).abs().max().item() if fin.any() else 0.0
    lse_inf_ok = bool((lse[~fin] == float("-inf")).all().item()) if (~fin).any() else True
    ok = unwritten == 0 and lse_unwritten == 0 and err < 1e-2 and lerr < 1e-2 and lse_inf_ok
    log(f"  {'ok ' if ok else 'FAIL'} {name}: rel_err {err:.2e}  lse max abs err {lerr:.1e}  unwritten o {unwritten} "
        f"lse {lse_unwritten}  empty-row lse=-inf {lse_inf_ok}")
    if not ok:
        FAILS.append(name)
    return err


def dense_mask(N, causal):
    if causal:
        m = torch.ones(N, N, dtype=torch.bool, device="cuda").tril()
    else:
        m = torch.ones(N, N, dtype=torch.bool, device="cuda")
    return lambda h: m


# ------------------------------------------------------------------------------------------------
# Sparse lists: per 128-row tile t = h * nm + m, disjoint ranges [s, e) (sorted) and columns.
def build_lists(per_tile, H, nm):
    rp = [0]
    rg = []
    cp = [0]
    cl = []
    for h in range(H):
        for m in range(nm):
            ranges, cols = per_tile(h, m)
            for s, e in ranges:
                rg += [int(s), int(e)]
            rp.append(len(rg) // 2)
            cl += [int(c) for c in cols]
            cp.append(len(cl))
    t = lambda x: torch.tensor(x if len(x) else [0], dtype=torch.int32, device="cuda")
    return t(rp), t(rg), t(cp), t(cl)


def lists_mask(per_tile, N, nm):
    cache = {}

    def mask(h):
        m = torch.zeros(N, N, dtype=torch.bool, device="cuda")
        for mi in range(nm):
            r0, r1 = mi * 128, min(N, mi * 128 + 128)
            ranges, cols = per_tile(h, mi)
            for s, e in ranges:
                m[r0:r1, max(s, 0):min(e, N)] = True
            if len(cols):
                m[r0:r1, torch.tensor(cols, device="cuda", dtype=torch.long)] = True
        return m & torch.ones(N, N, dtype=torch.bool, device="cuda").tril()

    return mask


def merge(ranges):
    out = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [tuple(x) for x in out if x[1] > x[0]]


def random_pattern(N, seed, window=384, n_far=5, n_cols=100, empty_every=0, cols_in_diag=True):
    def per_tile(h, m):
        rng = np.random.default_rng(seed * 1000003 + h * 7919 + m)
        if empty_every and (h + m) % empty_every == 0:
            return [], []
        e = min(N, 128 * m + 128)
        ranges = [(0, min(64, e))]
        if window:
            ranges.append((max(0, e - window), e))
        for _ in range(n_far):
            s = int(rng.integers(-50, max(1, e)))
            ranges.append((s, s + int(rng.integers(1, 300))))
        ranges = merge([(max(0, s), min(N, ee)) for s, ee in ranges])
        covered = np.zeros(N + 1, dtype=bool)
        for s, ee in ranges:
            covered[s:ee] = True
        hi = e if cols_in_diag else 128 * m
        cand = rng.integers(0, max(1, hi), size=n_cols) if hi > 0 else np.array([], dtype=np.int64)
        cols = sorted(set(int(c) for c in cand if not covered[c]))
        return ranges, cols

    return per_tile


def vs_like_pattern(N, seed, with_cols, n_far=20, window=1024, n_cand=256):
    """Each 128-row tile: sinks [0,128) + local window (1024 keys ending at the tile's end) + n_far
    far 64-key ranges at unaligned starts (one per equal slot of the far region) and, with_cols,
    up to n_cand gathered columns from the far region outside those ranges."""

    def per_tile(h, m):
        rng = np.random.default_rng(seed * 1000003 + h * 7919 + m)
        e = min(N, 128 * m + 128)
        ls = max(128, e - window)
        rs = [(0, min(128, e))]
        far_lo, far_hi = 128, ls
        nfar = min(n_far, max(0, (far_hi - far_lo) // 64))
        starts = np.zeros(0, dtype=np.int64)
        if nfar > 0:
            slot = (far_hi - far_lo) // nfar
            starts = far_lo + np.arange(nfar) * slot + rng.integers(0, max(1, slot - 64 + 1), size=nfar)
            rs += [(int(s), int(s) + 64) for s in starts]
        if e > 128:
            rs.append((ls, e))
        cols = []
        if with_cols and far_hi - far_lo > 0:
            cand = np.unique(rng.integers(far_lo, far_hi, size=n_cand))
            if nfar > 0:
                inside = ((cand[:, None] >= starts[None, :]) & (cand[:, None] < starts[None, :] + 64)).any(axis=1)
                cand = cand[~inside]
            cols = cand.tolist()
        return rs, cols

    return per_tile


def count_chunks(rs, ncols, N):
    """The kernel's chunk count of one tile (RangeProducer: 128-key cuts, a <= 64-key remainder paired
    with up to 64 keys of the next range, then 128-column gathers)."""
    rs = [(max(a, 0), min(e, N)) for a, e in rs]
    rs = [(a, e) for a, e in rs if e > a]
    n, i = 0, 0
    pos = rs[0][0] if rs else 0
    while i < len(rs):
        la = min(128, rs[i][1] - pos)
        pos += la
        if pos >= rs[i][1]:
            i += 1
            pos = rs[i][0] if i < len(rs) else 0
        if la <= 64 and i < len(rs):
            lb = min(64, rs[i][1] - pos)
            pos += lb
            if pos >= rs[i][1]:
                i += 1
                pos = rs[i][0] if i < len(rs) else 0
        n += 1
    return n + (ncols + 127) // 128


def run_tests():
    log("== correctness (float32 torch reference; bf16 expect 1e-3..1e-2)")
    cases = [
        # N, D, H, Hkv, causal, grid
        (1000, 128, 4, 4, True, 0),
        (4097, 128, 7, 1, True, 0),
        (4097, 128, 7, 1, True, 3),
        (4097, 64, 8, 2, True, 0),
        (4097, 64, 8, 2, True, 5),
        (40, 128, 2, 1, True, 0),
        (40, 64, 7, 1, True, 0),
        (129, 128, 4, 1, True, 0),
        (1000, 64, 14, 2, True, 0),
        (1000, 128, 4, 1, False, 0),
        (300, 64, 2, 2, False, 2),
        (2048, 128, 4, 4, True, 0),
    ]
    for i, (N, D, H, Hkv, causal, grid) in enumerate(cases):
        q, k, v = rand_qkv(H, Hkv, N, D, 100 + i)
        check(f"dense N={N} D={D} H={H} Hkv={Hkv} causal={int(causal)} grid={grid}", q, k, v, dense_mask(N, causal),
              causal=causal, grid=grid)
    # Same shape, fresh data, three times: a moving error would be a race.
    errs = []
    for r in range(3):
        q, k, v = rand_qkv(8, 2, 3000, 128, 500 + r)
        errs.append(check(f"dense repeat {r} N=3000 D=128 H=8 Hkv=2", q, k, v, dense_mask(3000, True)))
    log(f"  repeat errors {['%.3e' % e for e in errs]}")

    log("== sparse (ranges at arbitrary starts + gathered columns, causal)")
    scases = [
        # N, D, H, Hkv, pattern kwargs, grid
        (4097, 128, 4, 2, dict(), 0),
        (4097, 128, 4, 2, dict(window=0, n_far=8, n_cols=300, empty_every=5), 0),
        (4097, 128, 7, 1, dict(window=1024, n_far=3, n_cols=0), 4),
        (4097, 64, 4, 1, dict(window=0, n_far=6, n_cols=200, empty_every=3), 0),
        (1000, 64, 2, 2, dict(window=256, n_far=2, n_cols=50), 2),
        (40, 128, 2, 1, dict(window=0, n_far=2, n_cols=20), 0),
    ]
    for i, (N, H, Hkv, wc) in enumerate([(8192, 8, 2, False), (8192, 8, 2, True), (5000, 7, 1, True)]):
        nm = (N + 127) // 128
        pt = vs_like_pattern(N, 31 + i, wc)
        sp = build_lists(pt, H, nm)
        q, k, v = rand_qkv(H, Hkv, N, 128, 950 + i)
        check(f"sparse bench-like N={N} D=128 H={H} Hkv={Hkv} cols={wc}", q, k, v, lists_mask(pt, N, nm), sparse=sp)
    for i, (N, D, H, Hkv, kw, grid) in enumerate(scases):
        nm = (N + 127) // 128
        pt = random_pattern(N, 7 + i, **kw)
        sp = build_lists(pt, H, nm)
        q, k, v = rand_qkv(H, Hkv, N, D, 900 + i)
        check(f"sparse N={N} D={D} H={H} Hkv={Hkv} {kw} grid={grid}", q, k, v, lists_mask(pt, N, nm), sparse=sp,
              grid=grid)


# ------------------------------------------------------------------------------------------------
def timeit(f, reps, warm=1):
    for _ in range(warm):
        f()
        sync_deadline("warm-up", 60.0)
    ts = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2], ts


def bench_dense():
    log("== dense causal timing (H=32, H_kv=8, bf16, B=1), ours vs cuDNN SDPA")
    rows = []
    H, Hkv = 32, 8
    confs = [(16384, 128, 15), (32768, 128, 7), (131072, 128, 5), (32768, 64, 7)]
    if QUICK:
        confs = [(16384, 128, 5), (32768, 64, 3)]
    for N, D, reps in confs:
        q, k, v = rand_qkv(H, Hkv, N, D, 1234)
        o = torch.empty_like(q)
        flops = 4.0 * N * N * D * H / 2
        t_ours, all_ours = timeit(lambda: ours(q, k, v, o), reps)
        q4 = q.unsqueeze(0)
        k4 = k.repeat_interleave(H // Hkv, dim=0).unsqueeze(0)
        v4 = v.repeat_interleave(H // Hkv, dim=0).unsqueeze(0)
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            t_cd, all_cd = timeit(lambda: F.scaled_dot_product_attention(q4, k4, v4, is_causal=True), reps)
            ref = F.scaled_dot_product_attention(q4, k4, v4, is_causal=True)[0]
        o.fill_(float("nan"))
        ours(q, k, v, o)
        torch.cuda.synchronize()
        agree = rel_err(o, ref.float())
        log(f"  N={N} D={D}: ours {t_ours:.3f} ms ({flops / t_ours / 1e9:.0f} TF/s) all {['%.3f' % x for x in all_ours]}"
            f" | cuDNN {t_cd:.3f} ms ({flops / t_cd / 1e9:.0f} TF/s) all {['%.3f' % x for x in all_cd]} | ours vs cuDNN rel {agree:.1e}")
        rows.append((f"dense N={N // 1024}K D={D}", t_ours, flops / t_ours / 1e9, t_cd, flops / t_cd / 1e9, agree))
        del q, k, v, o, q4, k4, v4, ref
        torch.cuda.empty_cache()
    return rows


def bench_sparse():
    """Each 128-row tile: sinks [0,128) + local window 1024 + 20 far 64-key ranges (unaligned starts);
    variant B adds up to 256 gathered columns from the far region."""
    log("== sparse timing (H=32, H_kv=8, D=128, N=128K)")
    rows = []
    H, Hkv, D = 32, 8, 128
    N = 131072 if not QUICK else 32768
    nm = N // 128
    rng = np.random.default_rng(42)
    q, k, v = rand_qkv(H, Hkv, N, D, 77)
    o = torch.empty_like(q)
    t_dense, _ = timeit(lambda: ours(q, k, v, o), 3)
    dense_flops = 4.0 * N * N * D * H / 2
    for variant in ("ranges", "ranges+256cols"):
        pt = vs_like_pattern(N, 42, variant != "ranges")
        useful = 0
        chunks = 0
        rp = [0]
        rg = []
        cp = [0]
        cl = []
        for h in range(H):
            for m in range(nm):
                rs, cols = pt(h, m)
                for s_, e_ in rs:
                    rg += [s_, e_]
                    useful += e_ - s_
                chunks += count_chunks(rs, len(cols), N)
                rp.append(len(rg) // 2)
                cl += cols
                useful += len(cols)
                cp.append(len(cl))
        t = lambda x: torch.tensor(x if len(x) else [0], dtype=torch.int32, device="cuda")
        sp = (t(rp), t(rg), t(cp), t(cl))
        log(f"  {variant}: lists built")
        ours(q, k, v, o, sparse=sp)
        sync_deadline("sparse " + variant)
        t_sp, all_sp = timeit(lambda: ours(q, k, v, o, sparse=sp), 5)
        # (row, key) pairs computed: listed keys x 128 rows, less the masked half of each diagonal tile
        f_useful = 4.0 * D * (128.0 * useful - 128 * 127 / 2 * H * nm)
        f_chunks = 4.0 * 128 * 128 * D * chunks
        log(f"  {variant}: {t_sp:.3f} ms all {['%.3f' % x for x in all_sp]}; listed keys/row {useful / (H * nm):.0f}, "
            f"chunks/tile {chunks / (H * nm):.1f}; effective {f_useful / t_sp / 1e9:.0f} TF/s on listed keys, "
            f"{f_chunks / t_sp / 1e9:.0f} TF/s on 128-key chunks; ours dense {t_dense:.2f} ms = "
            f"{dense_flops / t_dense / 1e9:.0f} TF/s")
        rows.append((variant, t_sp, f_useful / t_sp / 1e9, f_chunks / t_sp / 1e9, dense_flops / t_dense / 1e9))
    return rows


def main():
    log("card:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| cudnn", torch.backends.cudnn.version())
    run_tests()
    drows = bench_dense()
    srows = bench_sparse()
    log("")
    log(f"== summary on {torch.cuda.get_device_name(0)} (median ms, TF/s = 4*N^2*D*H/2 / t)")
    log(f"{'case':22s} {'ours ms':>9s} {'TF/s':>6s} {'cuDNN ms':>9s} {'TF/s':>6s} {'rel':>8s}")
    for name, t, tf, tc, tfc, agree in drows:
        log(f"{name:22s} {t:9.3f} {tf:6.0f} {tc:9.3f} {tfc:6.0f} {agree:8.1e}")
    for name, t, tfu, tfc, tfd in srows:
        log(f"sparse {name:15s} {t:9.3f} eff {tfu:4.0f} (chunks {tfc:4.0f}) vs our dense {tfd:4.0f} TF/s")
    log("FAILED: " + ", ".join(FAILS) if FAILS else "all correctness checks passed")


main()
