#!/usr/bin/env bash
# Builds every GPU test (CUDA kernels, GPU engine, multi-GPU group, GPU search) and the attention
# benchmark here, where Rust is, into .devbin/, for the GPU machine, which has no Rust. Prints the
# one command to run there. The multi-GPU tests need 2 GPUs (device kind nvidia-h100-x2 or larger;
# they skip on one); tests of the real SmolLM2 need MINFERENCE_MODEL pointing at the GGUF there.
#
#   scripts/gpu-tests.sh            # build .devbin/{gpu-tests.tar.zst,cargo-nextest,bench_attention}
# then call the device tool with carry [".devbin"] and the printed command.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.devbin/' .git/info/exclude 2>/dev/null || echo '/.devbin/' >> .git/info/exclude
mkdir -p .devbin
export MINFERENCE_REQUIRE_CUBINS=1
export CARGO_PROFILE_RELEASE_DEBUG=0   # keeps the archive small enough to carry
cargo nextest archive --release -p minference-cuda -p minference-engine-gpu -p minference-multi-gpu \
    -p minference-search --archive-file .devbin/gpu-tests.tar.zst
cargo build --release -p minference-cuda --example bench_attention
cp "${CARGO_TARGET_DIR:-target}/release/examples/bench_attention" .devbin/
cp "$(command -v cargo-nextest)" .devbin/
cp bench/sdpa_baseline.py .devbin/ 2>/dev/null || true
# The cubins and ptxas report, for the SASS check with cuobjdump (needs nvdisasm, present there).
out_dir=$(ls -td "${CARGO_TARGET_DIR:-target}"/release/build/minference-cuda-*/out | head -1)
rm -rf .devbin/cubins
tar -C "$out_dir" -czf .devbin/cubins.tgz $(cd "$out_dir" && ls *.cubin) ptxas-report.txt
strip .devbin/bench_attention
du -sh .devbin/*
cat <<'CMD'
Run on the GPU machine (device tool, carry [".devbin"]):
  export NCCL_NVLS_ENABLE=0
  ./.devbin/cargo-nextest nextest run --archive-file .devbin/gpu-tests.tar.zst --workspace-remap . --no-fail-fast
SASS check there:
  mkdir -p /tmp/cubins && tar -C /tmp/cubins -xzf .devbin/cubins.tgz
  for f in /tmp/cubins/*.cubin; do cuobjdump --dump-sass $f | grep -oE "HGMMA|HMMA|LDGSTS|LDSM|LDL|STL" | sort | uniq -c; done
CMD
