#!/usr/bin/env bash
# On the GPU machine: copies whichever .devgpu-N folder this call carried into a staging folder
# outside the checkout (/tmp/minference-gpu), where it survives the next call on the warm machine
# (carried folders that a later call does not name are removed from the checkout there).
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${MINFERENCE_GPU_STAGE:-/tmp/minference-gpu}
mkdir -p "$stage"
for d in .devgpu-1 .devgpu-2 .devgpu-3 .devgpu-4; do
    if [ -d "$d" ]; then
        mkdir -p "$stage/$d" && cp -a "$d"/. "$stage/$d"/ || exit 1
    fi
done
ls -la "$stage" "$stage"/.devgpu-*
