#!/usr/bin/env bash
# Runs on the GPU machine after the two carries of scripts/gpu-tests.sh: joins the model, checks its
# hash, runs every GPU test with skips turned into failures (twice, to catch flakes when
# MINFERENCE_GPU_RUNS=2), then the SASS check of the cubins.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p models
cat .devmodel-a/part .devmodel-b/part > models/SmolLM2-135M-Instruct.Q4_1.gguf
want=$(cat .devmodel-b/md5)
got=$(md5sum models/SmolLM2-135M-Instruct.Q4_1.gguf | cut -d' ' -f1)
[ "$want" = "$got" ] || { echo "model hash mismatch: $got != $want"; exit 1; }
export NCCL_NVLS_ENABLE=0 MINFERENCE_REQUIRE_GPU=1 MINFERENCE_MODEL=$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
rc=0
for run in $(seq 1 "${MINFERENCE_GPU_RUNS:-1}"); do
    echo "=== GPU test run $run"
    ./.devbin/cargo-nextest nextest run --archive-file .devbin/gpu-tests.tar.zst --workspace-remap . \
        --no-fail-fast "$@" || rc=1
done
mkdir -p /tmp/cubins && tar -C /tmp/cubins -xzf .devbin/cubins.tgz
for f in /tmp/cubins/*.cubin; do
    echo "$(basename "$f"): $(cuobjdump --dump-sass "$f" | grep -oE "HGMMA|HMMA|UTMALDG|LDGSTS|LDL|STL" | sort | uniq -c | tr '\n' ' ')"
done
exit $rc
