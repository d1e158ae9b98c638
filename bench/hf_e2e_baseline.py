#!/usr/bin/env python3
"""What a user runs instead of us: HF transformers + PyTorch SDPA, dense prefill, of the same model
shape as `minference bench e2e` (random weights from `AutoModelForCausalLM.from_config`, bf16, one
GPU), `logits_to_keep=1`, KV cache kept (`use_cache=True`). Per length: TTFT (wall time from the
call to the first token on the host) and peak device memory (`torch.cuda.max_memory_allocated`);
a length that runs out of memory says so. Called by `minference bench e2e` in the same device call.

    python3 bench/hf_e2e_baseline.py --arch qwen2 --hidden 3584 --intermediate 18944 --layers 28 \
        --heads 28 --kv-heads 4 --vocab 152064 --rope-theta 1e6 --qkv-bias --lengths 32k,128k
"""
import argparse
import contextlib
import csv
import datetime
import gc
import os
import sys
import time

import torch
from lengths import parse_len


def build_config(a, max_len):
    import transformers

    common = dict(
        hidden_size=a.hidden,
        intermediate_size=a.intermediate,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads,
        vocab_size=a.vocab,
        max_position_embeddings=max(max_len, 4096),
        rms_norm_eps=a.rms_eps,
        tie_word_embeddings=a.tie,
        head_dim=a.hidden // a.heads,
    )
    if a.arch == "qwen2":
        cls, extra = transformers.Qwen2Config, dict(use_sliding_window=False)
    elif a.arch == "mistral":
        cls, extra = transformers.MistralConfig, dict(sliding_window=None)
    else:
        cls, extra = transformers.LlamaConfig, dict(attention_bias=a.qkv_bias, mlp_bias=False)
    rope = {"rope_type": "default", "rope_theta": a.rope_theta}
    try:
        cfg = cls(**common, **extra, rope_parameters=rope)
    except TypeError:
        cfg = cls(**common, **extra, rope_theta=a.rope_theta)
    cfg._attn_implementation = "sdpa"
    return cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=["llama", "qwen2", "mistral"], required=True)
    ap.add_argument("--name", default="")
    for f in ("hidden", "intermediate", "layers", "heads", "kv-heads", "vocab"):
        ap.add_argument(f"--{f}", type=int, required=True)
    ap.add_argument("--rope-theta", type=float, default=1e4)
    ap.add_argument("--rms-eps", type=float, default=1e-5)
    ap.add_argument("--tie", action="store_true")
    ap.add_argument("--qkv-bias", action="store_true")
    ap.add_argument("--lengths", default="32k,128k")
    ap.add_argument("--warmup", type=int, default=4096)
    ap.add_argument("--sdpa-backend", default="auto", choices=["auto", "flash", "cudnn", "efficient", "math"])
    ap.add_argument("--seed", type=int, default=0x5EED)
    ap.add_argument("--csv")
    ap.add_argument("--commit", default=os.environ.get("MINFERENCE_COMMIT", "unknown"))
    ap.add_argument("--date", default=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"))
    a = ap.parse_args()
    lengths = [parse_len(x) for x in a.lengths.split(",") if x]
    import transformers
    from transformers import AutoModelForCausalLM

    cfg = build_config(a, max(lengths))
    dev = torch.device("cuda")
    card = torch.cuda.get_device_name()
    torch.manual_seed(a.seed)
    t0 = time.time()
    with dev:
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"HF transformers {transformers.__version__} + SDPA ({a.sdpa_backend}), torch {torch.__version__}, "
          f"{card}: {type(model).__name__} {a.name} random weights, {weights / 2**30:.2f} GiB, built in "
          f"{time.time() - t0:.1f} s", flush=True)

    def backend():
        if a.sdpa_backend == "auto":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[a.sdpa_backend])

    def prefill(n):
        g = torch.Generator(device="cpu").manual_seed(a.seed ^ n)
        ids = torch.randint(0, a.vocab, (1, n), generator=g).to(dev)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        with torch.inference_mode(), backend():
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            tok = int(out.logits[0, -1].argmax().item())
        secs = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated()
        del out, ids
        return secs, peak, tok

    if a.warmup:
        prefill(a.warmup)
    print("| tokens | attention | TTFT s | peak GiB |\n|---:|---|---:|---:|", flush=True)
    rows = []
    for n in lengths:
        try:
            secs, peak, _ = prefill(n)
            rows.append(dict(tokens=n, ttft_s=f"{secs:.4f}", peak_gib=f"{peak / 2**30:.2f}", status="ok"))
            print(f"| {n} | hf-sdpa dense | {secs:.3f} | {peak / 2**30:.2f} |", flush=True)
        except torch.OutOfMemoryError:
            peak = torch.cuda.max_memory_allocated()
            rows.append(dict(tokens=n, ttft_s="", peak_gib=f"{peak / 2**30:.2f}", status="out of memory"))
            print(f"| {n} | hf-sdpa dense | out of memory | (at {peak / 2**30:.2f}) |", flush=True)
        except Exception as e:  # noqa: BLE001
            msg = f"{type(e).__name__}: {e}".splitlines()[0][:100]
            rows.append(dict(tokens=n, ttft_s="", peak_gib="", status=msg))
            print(f"| {n} | hf-sdpa dense | {msg} | |", flush=True)
        gc.collect()
        torch.cuda.empty_cache()
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["card", "date", "commit", "shape", "framework", "tokens", "attention",
                                              "ttft_s", "peak_gib", "status"])
            w.writeheader()
            for r in rows:
                w.writerow(dict(card=card, date=a.date, commit=a.commit, shape=a.name,
                                framework=f"transformers {transformers.__version__} torch {torch.__version__}",
                                attention=f"hf-sdpa-{a.sdpa_backend} dense", **r))
        print(f"wrote {a.csv}", file=sys.stderr)


if __name__ == "__main__":
    main()
