#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) on a GGUF and a fixed list of token ids: prefill tokens/s, then
greedy decode tokens/s. Called by `minference bench cpu-e2e` with the token ids it feeds our engine,
so both engines see the same prompt. Prints `RESULT prefill_tps=... decode_tps=...` (or exits 2 when
llama_cpp is not installed in this Python)."""
import argparse
import sys
import time

try:
    import numpy as np
    from llama_cpp import Llama
except ImportError as e:  # not installed: the caller skips llama.cpp
    print(f"llama_cpp not importable: {e}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--tokens", required=True, help="file of whitespace-separated token ids")
    p.add_argument("--decode", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    ids = [int(t) for t in open(a.tokens).read().split()]
    # Default settings otherwise (n_batch 512, f16 KV cache, no flash attention).
    llm = Llama(
        model_path=a.model,
        n_ctx=len(ids) + a.decode + 16,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        logits_all=False,
        verbose=False,
    )
    t0 = time.perf_counter()
    llm.eval(ids)
    prefill = time.perf_counter() - t0
    # Greedy decode: argmax of the last position's logits (llama.cpp keeps only those without
    # logits_all), one token per eval.
    n_vocab = llm.n_vocab()
    t0 = time.perf_counter()
    for _ in range(a.decode):
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
        llm.eval([int(logits.argmax())])
    decode = time.perf_counter() - t0
    print(f"RESULT prefill_tps={len(ids) / prefill:.3f} decode_tps={a.decode / decode:.3f}")


if __name__ == "__main__":
    main()
