#!/usr/bin/env bash
# Builds every GPU test (CUDA kernels, GPU engine, multi-GPU group, GPU search) and the CLI here,
# where Rust is, for the GPU machine, which has no Rust, and packs them with the real SmolLM2 GGUF
# into four folders of at most ~58 MB (one device call carries at most 64 MiB with the tree):
# .devgpu-1 and .devgpu-4 (the test archive in two parts), .devgpu-2 (model, first part), .devgpu-3
# (the rest, cargo-nextest, the CLI, the cubins). Prints the four device calls to make, one after the other on a warm machine.
#
#   scripts/gpu-tests.sh
#
# On the GPU machine the tests run with MINFERENCE_REQUIRE_GPU=1: a test that would skip (no GPU,
# no model file) fails instead. Tests needing 2 GPUs skip on one unless MINFERENCE_REQUIRE_GPUS=2.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)   # also right in a git worktree
mkdir -p "$(dirname "$exclude")"
for d in .devgpu-1 .devgpu-2 .devgpu-3 .devgpu-4; do
    grep -qx "/$d/" "$exclude" 2>/dev/null || echo "/$d/" >> "$exclude"
done
rm -rf .devgpu-1 .devgpu-2 .devgpu-3 .devgpu-4
mkdir -p .devgpu-1 .devgpu-2 .devgpu-3 .devgpu-4
export MINFERENCE_REQUIRE_CUBINS=1
export CARGO_PROFILE_RELEASE_DEBUG=0   # keeps the archive small enough to carry
cargo nextest archive --release -p minference-cuda -p minference-engine-gpu -p minference-multi-gpu \
    -p minference-search --archive-file .devgpu-1/gpu-tests.tar.zst
# The archive outgrew one carry: its first 55 MB stay in .devgpu-1, the rest goes to .devgpu-4.
head -c 55000000 .devgpu-1/gpu-tests.tar.zst > .devgpu-1/gpu-tests.part0
tail -c +55000001 .devgpu-1/gpu-tests.tar.zst > .devgpu-4/gpu-tests.part1
rm .devgpu-1/gpu-tests.tar.zst
cargo build --release -p minference-cli
strip -o .devgpu-3/minference "${CARGO_TARGET_DIR:-target}/release/minference"
xz -T2 -6 .devgpu-3/minference
xz -T2 -6 -c "$(command -v cargo-nextest)" > .devgpu-3/cargo-nextest.xz
# The cubins and ptxas report, for the SASS check with cuobjdump there.
out_dir=$(ls -td "${CARGO_TARGET_DIR:-target}"/release/build/minference-cuda-*/out/hopper_attention.cubin | head -1 | xargs dirname)
tar -C "$out_dir" -czf .devgpu-3/cubins.tgz $(cd "$out_dir" && ls *.cubin) ptxas-report.txt

model=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] || scripts/fetch-model.sh
head -c 55000000 "$model" > .devgpu-2/part
tail -c +55000001 "$model" > .devgpu-3/part
md5sum "$model" | cut -d' ' -f1 > .devgpu-3/md5
du -sh .devgpu-1 .devgpu-2 .devgpu-3 .devgpu-4
cat <<'CMD'
Device calls, one right after the other (the machine stays warm 30 s; earlier carries stay there):
  1. carry [".devgpu-1"]: scripts/gpu-stage.sh
  2. carry [".devgpu-2"]: scripts/gpu-stage.sh
  3. carry [".devgpu-4"]: scripts/gpu-stage.sh
  4. carry [".devgpu-3"]: scripts/gpu-run.sh        (MINFERENCE_GPU_RUNS=2 scripts/gpu-run.sh runs twice)
CMD
