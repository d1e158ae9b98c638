#!/usr/bin/env bash
# Issue 11's behaviour check in one device call: the binary from before the architecture change
# (96ef9ee, built from a worktree of that commit) and today's, both on the mma.sync kernels
# (the new one with MINFERENCE_HOPPER=0: the old binary has no Hopper mainloop), run
# `bench attention` and `bench e2e` on the same inputs, alternating old / new, so that drift of the
# card shows as spread between rounds rather than as a difference between binaries.
#
# Here: strip and xz both `minference` builds into .abx11/old.xz and .abx11/new.xz; then call the
# device tool with carry [".abx11"] and:  bash bench/old_new_device.sh
# Settings: ROUNDS (2), ATTN_ARGS, E2E_ARGS. Results: $OUT/old-new.log (tables as printed).
set -uo pipefail
OUT=${OUT:-/tmp/out}
ROUNDS=${ROUNDS:-2}
ATTN_ARGS=${ATTN_ARGS:---lengths 32k,128k --regimes structured --reps 2 --no-baseline}
# The old binary knows only random-weight indices; the new one's `random` workload is that one.
E2E_ARGS=${E2E_ARGS:---random-weights --shape qwen2.5-7b --lengths 32k,128k}
mkdir -p "$OUT" /tmp/on
log="$OUT/old-new.log"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$log"
for tag in old new; do xz -dc ".abx11/$tag.xz" > "/tmp/on/$tag" && chmod +x "/tmp/on/$tag"; done
# The new binary on the mma.sync kernels; its own flags that the old one lacks.
env_of() { [ "$1" = new ] && echo MINFERENCE_HOPPER=0; }
attn_flags() { [ "$1" = new ] && echo --no-peers; }
e2e_flags() { [ "$1" = new ] && echo --workload random --no-hf; }
run() {  # tag, then the command's arguments
    local tag=$1
    shift
    echo "=== $tag: $*" | tee -a "$log"
    # shellcheck disable=SC2046
    env $(env_of "$tag") "/tmp/on/$tag" "$@" 2>&1 | grep -E '^\||rror' | tee -a "$log"
}
for r in $(seq 1 "$ROUNDS"); do
    # Alternate which binary goes first from round to round.
    order="old new"
    [ $((r % 2)) -eq 0 ] && order="new old"
    # shellcheck disable=SC2086,SC2046
    for tag in $order; do run "$tag" bench attention $ATTN_ARGS $(attn_flags "$tag"); done
    # shellcheck disable=SC2086,SC2046
    for tag in $order; do run "$tag" bench e2e $E2E_ARGS $(e2e_flags "$tag"); done
done
