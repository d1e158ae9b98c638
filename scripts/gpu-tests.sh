#!/usr/bin/env bash
# Builds every GPU test (CUDA kernels, GPU engine, multi-GPU group, GPU search) and the CLI here,
# where Rust is, for the GPU machine, which has no Rust; splits the real SmolLM2 GGUF into two
# parts (one device call carries at most 64 MiB) and prints the two device calls to make.
#
#   scripts/gpu-tests.sh
#
# On the GPU machine the tests run with MINFERENCE_REQUIRE_GPU=1: a test that would skip (no GPU,
# no model file) fails instead. Tests needing 2 GPUs skip on one unless MINFERENCE_REQUIRE_GPUS=2.
set -euo pipefail
cd "$(dirname "$0")/.."
for d in .devbin .devmodel-a .devmodel-b; do
    grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
done
mkdir -p .devbin .devmodel-a .devmodel-b
export MINFERENCE_REQUIRE_CUBINS=1
export CARGO_PROFILE_RELEASE_DEBUG=0   # keeps the archive small enough to carry
cargo nextest archive --release -p minference-cuda -p minference-engine-gpu -p minference-multi-gpu \
    -p minference-search --archive-file .devbin/gpu-tests.tar.zst
cargo build --release -p minference-cli
cp "${CARGO_TARGET_DIR:-target}/release/minference" .devbin/
strip .devbin/minference
cp "$(command -v cargo-nextest)" .devbin/
# The cubins and ptxas report, for the SASS check with cuobjdump there.
out_dir=$(ls -td "${CARGO_TARGET_DIR:-target}"/release/build/minference-cuda-*/out | head -1)
tar -C "$out_dir" -czf .devbin/cubins.tgz $(cd "$out_dir" && ls *.cubin) ptxas-report.txt

model=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] || scripts/fetch-model.sh
rm -f .devmodel-a/* .devmodel-b/*
head -c 40000000 "$model" > .devmodel-a/part
tail -c +40000001 "$model" > .devmodel-b/part
md5sum "$model" | cut -d' ' -f1 > .devmodel-b/md5
du -sh .devbin/* .devmodel-a .devmodel-b
cat <<'CMD'
Device call 1 (carry [".devbin", ".devmodel-a"]): anything short, e.g.
  nvidia-smi -L
Device call 2, right after (the machine is still warm; carry [".devmodel-b"]):
  scripts/gpu-run.sh
CMD
