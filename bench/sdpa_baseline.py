#!/usr/bin/env python3
"""Dense causal attention baselines on the GPU: PyTorch SDPA with the FlashAttention backend (FA2
class) and the cuDNN backend (FA3 class), bf16, layout B x H x N x D (K/V repeated to H heads, as
SDPA needs), is_causal=True, timed with CUDA events, median of --reps after one warm-up.

    python3 bench/sdpa_baseline.py --lengths 16k,32k,64k,128k --heads 32 --dim 128
"""
import argparse
import statistics

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from lengths import parse_len


def time_backend(backend, q, k, v, reps):
    times = []
    with sdpa_kernel(backend):
        for i in range(reps + 1):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            end.record()
            torch.cuda.synchronize()
            if i > 0:
                times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="16k,32k,64k,128k")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--flash-max", default="256k", help="skip the FA2 backend above this length")
    args = ap.parse_args()
    flash_max = parse_len(args.flash_max)
    print(f"card: {torch.cuda.get_device_name()}")
    print("| N | SDPA flash ms | flash TF/s | SDPA cuDNN ms | cuDNN TF/s |")
    print("|---|---|---|---|---|")
    for n in map(parse_len, args.lengths.split(",")):
        g = torch.Generator(device="cuda").manual_seed(n)
        shape = (1, args.heads, n, args.dim)
        q = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
        k = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
        v = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
        flops = 4 * n * (n + 1) / 2 * args.dim * args.heads
        cells = [str(n)]
        for backend, limit in ((SDPBackend.FLASH_ATTENTION, flash_max), (SDPBackend.CUDNN_ATTENTION, None)):
            if limit is not None and n > limit:
                cells += ["-", "-"]
                continue
            try:
                ms = time_backend(backend, q, k, v, args.reps if n <= 262144 else 1)
                cells += [f"{ms:.2f}", f"{flops / ms / 1e9:.0f}"]
            except RuntimeError as e:  # backend unavailable or out of memory
                cells += ["n/a", str(e).splitlines()[0][:40]]
        print("| " + " | ".join(cells) + " |", flush=True)
        del q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
