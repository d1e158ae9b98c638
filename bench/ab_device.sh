#!/usr/bin/env bash
# A/B of kernel versions in one device call: every binary in $AB_DIR (default .abx; stripped and
# xz-compressed `minference` builds named m<Tag>.xz, carried there) runs `bench attention` on the
# same inputs, alternating A B C ... A B C ... so that drift of the card shows as spread, not as a
# difference. The log keeps the table rows and each set's plan summary (chunk kinds, owned and
# issued pairs). No peers here: a version picked this way is then timed beside the peers with
# bench/peers_device.sh before any figure goes into README.
#
#   AB_ARGS="--lengths 16k,128k --sets vs-mix,bs" ROUNDS=2 bash bench/ab_device.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
AB_DIR=${AB_DIR:-.abx}
ROUNDS=${ROUNDS:-2}
AB_ARGS=${AB_ARGS:---lengths 16k,128k --regimes structured --reps 2}
mkdir -p "$OUT" /tmp/ab
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/ab.log"
tags=()
for f in "$AB_DIR"/m*.xz; do
    tag=$(basename "$f" .xz)
    xz -dc "$f" > "/tmp/ab/$tag" && chmod +x "/tmp/ab/$tag" && tags+=("$tag")
done
for r in $(seq 1 "$ROUNDS"); do
    for tag in "${tags[@]}"; do
        echo "=== round $r $tag" | tee -a "$OUT/ab.log"
        # shellcheck disable=SC2086
        "/tmp/ab/$tag" bench attention $AB_ARGS --no-peers --no-baseline 2>&1 \
            | grep -E '^\||^  plan of' | tee -a "$OUT/ab.log"
    done
done
# Optional e2e TTFT of every binary, alternating as above, e.g.
#   E2E_ARGS="--random-weights --shape qwen2.5-7b --lengths 128k --workload structured --attention minference"
if [ -n "${E2E_ARGS:-}" ]; then
    for r in $(seq 1 "$ROUNDS"); do
        for tag in "${tags[@]}"; do
            echo "=== e2e round $r $tag" | tee -a "$OUT/ab.log"
            # shellcheck disable=SC2086
            "/tmp/ab/$tag" bench e2e $E2E_ARGS --no-hf 2>&1 | grep -E '^\|' | tee -a "$OUT/ab.log"
        done
    done
fi
# Optional per-kernel times of one more command under ncu (durations only), by the binary
# NCU_TAG (default: the last one), e.g.
#   NCU_ARGS="bench attention --lengths 16k --sets vs-mix --regimes structured --reps 1"
if [ -n "${NCU_ARGS:-}" ] && command -v ncu > /dev/null; then
    # shellcheck disable=SC2086
    ncu --clock-control none --print-units base --metrics gpu__time_duration.sum --csv "/tmp/ab/${NCU_TAG:-${tags[-1]}}" $NCU_ARGS \
        --no-peers --no-baseline > /tmp/ab/ncu.csv 2> /tmp/ab/ncu.err
    python3 - /tmp/ab/ncu.csv /tmp/ab/ncu.err <<'PY' | tee "$OUT/ncu-kernels.txt"
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows:  # ncu or the command failed: say why instead of a traceback
    print("no kernels profiled; ncu said:")
    print("".join(open(sys.argv[2]).readlines()[-10:]))
    sys.exit(0)
head = rows[0]
name, val = head.index("Kernel Name"), head.index("Metric Value")
tot = collections.defaultdict(float); cnt = collections.Counter()
for r in rows[1:]:
    try:
        v = float(r[val].replace(",", ""))
    except ValueError:
        continue
    tot[r[name][:60]] += v; cnt[r[name][:60]] += 1
for k, v in sorted(tot.items(), key=lambda kv: -kv[1]):
    print(f"{v / 1e3:10.1f} us  {cnt[k]:5d}x  {k}")
PY
fi
