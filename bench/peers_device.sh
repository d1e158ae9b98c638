#!/usr/bin/env bash
# One GPU-machine call for the peer benchmarks (issue 12): builds MInference 0.1.6.0 from the carried
# sdist (or unpacks a carried build: copy $OUT/minference-built.tgz into .peers/), then runs `minference bench e2e` (ours + HF transformers) and
# `minference bench attention` (ours + SDPA, MInference, Flex) with CSVs under $OUT.
#
# Here (where Rust is): build target/release/minference, strip a copy into .devbin/, keep the sdist
# (docs/engineering.md, "Peers on the GPU machine") in .peers/; then call the device tool with
# carry [".devbin", ".peers"] and:  bash bench/peers_device.sh
# Settings: ATTN_LENGTHS (16k,128k), E2E_LENGTHS (32k,128k), E2E_WORKLOADS (random,structured),
# REPS (2), PEERS_TIME_BUDGET (s, for the peer script), MINFERENCE_COMMIT; E2E_LENGTHS=none or
# ATTN_LENGTHS=none skips that part. Measured on an H200 (2026-12-03): attention at
# 16k,32k,128k,512k,1m with REPS=1 and every peer, E2E_LENGTHS=none: 474 s (MInference built in
# 70 s first); e2e 32k,128k both workloads with HF: 76 s. A dense 1M e2e prefill (~28 x 12 s of
# attention) does not fit beside them: run `bench e2e --lengths 1m --attention minference` alone.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
BIN=./.devbin/minference
# At most 8 files come back from $OUT: card and build go to setup.log.
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/setup.log"
MI=/tmp/minference-py
mkdir -p "$MI"
if [ -f .peers/minference-built.tgz ]; then
    tar -C "$MI" -xzf .peers/minference-built.tgz
    build_pid=
else
    ( t=$(date +%s)
      MINFERENCE_FORCE_BUILD=TRUE TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=12 python3 -m pip install -q \
          --no-build-isolation --no-deps --no-index --target "$MI" .peers/minference-0.1.6.0.tar.gz \
          > /tmp/minference-build.log 2>&1
      echo "MInference build exit $? in $(( $(date +%s) - t )) s" >> /tmp/minference-build.log
      tar -C "$MI" -czf "$OUT/minference-built.tgz" minference ) &
    build_pid=$!
fi
export PYTHONPATH=$MI${PYTHONPATH:+:$PYTHONPATH}
t0=$(date +%s)
if [ "${E2E_LENGTHS:-}" != none ]; then
    $BIN bench e2e --random-weights --shape qwen2.5-7b --lengths "${E2E_LENGTHS:-32k,128k}" \
        --workload "${E2E_WORKLOADS:-random,structured}" \
        --csv "$OUT/e2e.csv" 2>&1 | tee "$OUT/e2e.log"
    echo "e2e took $(( $(date +%s) - t0 )) s"
fi
[ -n "$build_pid" ] && wait "$build_pid"
[ -f /tmp/minference-build.log ] && tail -5 /tmp/minference-build.log | tee -a "$OUT/setup.log"
t0=$(date +%s)
if [ "${ATTN_LENGTHS:-}" != none ]; then
    $BIN bench attention --lengths "${ATTN_LENGTHS:-16k,128k}" --regimes structured --reps "${REPS:-2}" \
        --csv "$OUT/attention.csv" 2>&1 | tee "$OUT/attention.log"
    echo "attention took $(( $(date +%s) - t0 )) s"
fi
ls -la "$OUT"
