#!/usr/bin/env bash
# Runs on the GPU machine after the four carries of scripts/gpu-tests.sh: joins the model, checks
# its hash, unpacks the tools, runs every GPU test with skips turned into failures (twice, to catch
# flakes, when MINFERENCE_GPU_RUNS=2), then the SASS check of the cubins.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/gpu-stage.sh
s=${MINFERENCE_GPU_STAGE:-/tmp/minference-gpu}
mkdir -p models
cat "$s/.devgpu-2/part" "$s/.devgpu-3/part" > models/SmolLM2-135M-Instruct.Q4_1.gguf
want=$(cat "$s/.devgpu-3/md5")
got=$(md5sum models/SmolLM2-135M-Instruct.Q4_1.gguf | cut -d' ' -f1)
[ "$want" = "$got" ] || { echo "model hash mismatch: $got != $want"; exit 1; }
cat "$s/.devgpu-1/gpu-tests.part0" "$s/.devgpu-4/gpu-tests.part1" > "$s/gpu-tests.tar.zst" || exit 1
mkdir -p .devbin
xz -dc "$s/.devgpu-3/cargo-nextest.xz" > .devbin/cargo-nextest && chmod +x .devbin/cargo-nextest
xz -dc "$s/.devgpu-3/minference.xz" > .devbin/minference && chmod +x .devbin/minference
export NCCL_NVLS_ENABLE=0 MINFERENCE_REQUIRE_GPU=1 MINFERENCE_MODEL=$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
rc=0
for run in $(seq 1 "${MINFERENCE_GPU_RUNS:-1}"); do
    echo "=== GPU test run $run"
    ./.devbin/cargo-nextest nextest run --archive-file "$s/gpu-tests.tar.zst" --workspace-remap . \
        --no-fail-fast "$@" || rc=1
done
mkdir -p /tmp/cubins && tar -C /tmp/cubins -xzf "$s/.devgpu-3/cubins.tgz"
for f in /tmp/cubins/*.cubin; do
    echo "$(basename "$f"): $(cuobjdump --dump-sass "$f" | grep -oE "HGMMA|HMMA|UTMALDG|LDGSTS|LDL|STL" | sort | uniq -c | tr '\n' ' ')"
done
exit $rc
