"""Runners for bench/peers_attention.py: reading our export, CUDA-event timing, the f32 reference
and error at sample rows, MInference 0.1.6.0's kernels (imported from its package, not copied)
and FlexAttention BlockMasks of our blocks. No entry point; the script imports these."""

import importlib
import importlib.util
import math
import os
import statistics
import sys
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
