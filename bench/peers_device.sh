#!/usr/bin/env bash
# One GPU-machine call for the peer benchmarks (issue 12): builds MInference 0.1.6.0 from the carried
# sdist (or unpacks a carried build), then runs `minference bench e2e` (ours + HF transformers) and
# `minference bench attention` (ours + SDPA, MInference, Flex) with CSVs under $OUT.
#
# Here (where Rust is): build target/release/minference, strip a copy into .devbin/, keep the sdist
# (docs/engineering.md, "Peers on the GPU machine") in .peers/; then call the device tool with
# carry [".devbin", ".peers"] and:  bash bench/peers_device.sh
# Settings: ATTN_LENGTHS (16k,128k), E2E_LENGTHS (32k,128k), REPS (2), PEERS_TIME_BUDGET (s),
# E2E_WORKLOADS (not used yet), MINFERENCE_COMMIT.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
BIN=./.devbin/minference
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/card.txt"
MI=/tmp/minference-py
mkdir -p "$MI"
if [ -f .peers/minference-built.tgz ]; then
    tar -C "$MI" -xzf .peers/minference-built.tgz
    build_pid=
else
    ( t=$(date +%s)
      MINFERENCE_FORCE_BUILD=TRUE TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=12 python3 -m pip install -q \
          --no-build-isolation --no-deps --no-index --target "$MI" .peers/minference-0.1.6.0.tar.gz \
          > "$OUT/minference-build.log" 2>&1
      echo "build exit $? in $(( $(date +%s) - t )) s" >> "$OUT/minference-build.log"
      tar -C "$MI" -czf "$OUT/minference-built.tgz" minference ) &
    build_pid=$!
fi
export PYTHONPATH=$MI${PYTHONPATH:+:$PYTHONPATH}
t0=$(date +%s)
$BIN bench e2e --random-weights --shape qwen2.5-7b --lengths "${E2E_LENGTHS:-32k,128k}" \
    --csv "$OUT/e2e.csv" 2>&1 | tee "$OUT/e2e.log"
echo "e2e took $(( $(date +%s) - t0 )) s"
[ -n "$build_pid" ] && wait "$build_pid"
tail -2 "$OUT/minference-build.log" 2>/dev/null
t0=$(date +%s)
$BIN bench attention --lengths "${ATTN_LENGTHS:-16k,128k}" --regimes structured --reps "${REPS:-2}" \
    --csv "$OUT/attention.csv" 2>&1 | tee "$OUT/attention.log"
echo "attention took $(( $(date +%s) - t0 )) s"
ls -la "$OUT"
