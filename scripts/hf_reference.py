#!/usr/bin/env python3
"""Regenerates the reference fixtures the model crate's tests compare against.

  crates/model/tests/fixtures/smollm2_logits.json  HF transformers forward of the default GGUF model:
      token ids and top-5 logits at a few positions for fixed prompts, plus greedy continuations.
  crates/model/tests/fixtures/dequant_blocks.json  gguf-py dequantization of random blocks of every
      quantization type we read, plus the first values of a few real tensors of the model file.

Needs: pip install torch transformers accelerate gguf numpy (CPU is enough; the model has 135M parameters).
Usage: python3 scripts/hf_reference.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "crates", "model", "tests", "fixtures")
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

PROMPTS = [
    "The capital of France is",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the tallest mountain in the world?<|im_end|>\n<|im_start|>assistant\n",
    "In 1969, Apollo 11 landed on the Moon. The mission lasted 8 days, 3 hours and 18 minutes, "
    "and Neil Armstrong said: \"That's one small step for man, one giant leap for mankind.\"",
]
# A long prompt (~1.6K tokens) so that RoPE and attention are checked far from position 0.
PROMPTS.append("".join(
    f"Entry {i}: the {['red', 'green', 'blue', 'amber'][i % 4]} train left platform {i % 7} "
    f"at {8 + i % 12}:{(i * 13) % 60:02d} carrying {(i * 37) % 400} passengers.\n"
    for i in range(70)
) + "Question: which platform did entry 42 leave from? Answer:")
TOP_K = 5
GREEDY_TOKENS = 12


def logits_fixture(model_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    directory, name = os.path.split(model_path)
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    model.eval()
    cases = []
    for prompt in PROMPTS:
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
            out = model.generate(torch.tensor([ids]), max_new_tokens=GREEDY_TOKENS, do_sample=False)
        positions = sorted({0, len(ids) // 2, len(ids) - 1})
        per_pos = []
        for p in positions:
            top = torch.topk(logits[p], TOP_K)
            per_pos.append({
                "position": p,
                "top_ids": top.indices.tolist(),
                "top_logits": [float(v) for v in top.values],
            })
        cases.append({
            "prompt": prompt,
            "ids": ids,
            "positions": per_pos,
            "greedy": out[0, len(ids):].tolist(),
        })
    import transformers
    return {
        "model": name,
        "reference": f"transformers {transformers.__version__}, torch {torch.__version__}, float32, CPU",
        "cases": cases,
    }


def f16_bytes(values):
    return np.asarray(values, dtype=np.float16).tobytes()


def dequant_fixture(model_path):
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFReader
    from gguf.quants import dequantize

    rng = np.random.default_rng(1234)
    # (type, bytes per block, f16 fields to make finite)
    layouts = [
        (Q.Q4_0, 18, [0]),
        (Q.Q4_1, 20, [0, 2]),
        (Q.Q8_0, 34, [0]),
        (Q.Q4_K, 144, [0, 2]),
        (Q.Q6_K, 210, [208]),
    ]
    blocks = []
    for qtype, size, f16_at in layouts:
        raw = bytearray(rng.integers(0, 256, size=size * 2, dtype=np.uint8).tobytes())
        for b in range(2):
            for off in f16_at:
                raw[b * size + off:b * size + off + 2] = f16_bytes([rng.uniform(-0.5, 0.5)])
        arr = np.frombuffer(bytes(raw), dtype=np.uint8)
        values = dequantize(arr, qtype).reshape(-1)
        blocks.append({"type": qtype.name, "type_id": int(qtype), "hex": bytes(raw).hex(),
                       "values": [float(v) for v in values]})
    for qtype, np_type in [(Q.F16, np.float16), (Q.F32, np.float32)]:
        vals = rng.normal(size=8).astype(np_type)
        blocks.append({"type": qtype.name, "type_id": int(qtype), "hex": vals.tobytes().hex(),
                       "values": [float(v) for v in vals.astype(np.float32)]})
    # BF16: the top 16 bits of f32 values.
    f32 = rng.normal(size=8).astype(np.float32)
    bf = (f32.view(np.uint32) >> 16).astype(np.uint16)
    blocks.append({"type": "BF16", "type_id": 30, "hex": bf.tobytes().hex(),
                   "values": [float(v) for v in (bf.astype(np.uint32) << 16).view(np.float32)]})

    reader = GGUFReader(model_path)
    real = []
    for t in reader.tensors:
        if t.name in ("blk.0.attn_q.weight", "token_embd.weight", "blk.29.ffn_down.weight"):
            values = dequantize(t.data, t.tensor_type).reshape(-1)
            real.append({"name": t.name, "type": t.tensor_type.name, "first": [float(v) for v in values[:96]],
                         "sum": float(np.sum(values, dtype=np.float64))})
    return {"blocks": blocks, "real_tensors": real}


def main():
    model_path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL
    if not os.path.exists(model_path):
        sys.exit(f"model not found: {model_path} (run scripts/fetch-model.sh)")
    os.makedirs(FIXTURES, exist_ok=True)
    with open(os.path.join(FIXTURES, "dequant_blocks.json"), "w") as f:
        json.dump(dequant_fixture(model_path), f)
    print("wrote dequant_blocks.json")
    with open(os.path.join(FIXTURES, "smollm2_logits.json"), "w") as f:
        json.dump(logits_fixture(model_path), f, indent=1)
    print("wrote smollm2_logits.json")


if __name__ == "__main__":
    main()
