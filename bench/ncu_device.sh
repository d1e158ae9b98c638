#!/usr/bin/env bash
# ncu `--set full` of single attention-kernel launches, on the GPU machine, for binaries carried
# in $AB_DIR (m<Tag>.xz, as for bench/ab_device.sh). Each line of $NCU_RUNS is
#   <tag>;<kernel-name regex>;<name>;<bench attention arguments>
# and profiles the first launch of that kernel in that command. Writes the details page of each
# to $OUT/ncu-<name>.txt and the lines that compare kernels (duration, tensor pipe, issue,
# memory, stalls) to $OUT/ncu-summary.txt.
#
#   NCU_RUNS=$'mMain;d128_mixed;vs-main;--lengths 128k --sets vs --dense-max 1k' bash bench/ncu_device.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
AB_DIR=${AB_DIR:-.abx}
mkdir -p "$OUT" /tmp/ncu
while IFS=';' read -r tag kernel name args; do
    [ -n "$tag" ] || continue
    [ -x "/tmp/ncu/$tag" ] || { xz -dc "$AB_DIR/$tag.xz" > "/tmp/ncu/$tag" && chmod +x "/tmp/ncu/$tag"; } || exit 1
    echo "=== $name ($tag, $kernel): $args"
    # shellcheck disable=SC2086
    ncu --set "${NCU_SET:-full}" -k "regex:$kernel" -c 1 -o "/tmp/ncu/$name" -f "/tmp/ncu/$tag" bench attention \
        --regimes structured --reps 1 --no-peers --no-baseline $args > "/tmp/ncu/$name.log" 2>&1 \
        || { tail -5 "/tmp/ncu/$name.log"; continue; }
    ncu --import "/tmp/ncu/$name.ncu-rep" --page details > "$OUT/ncu-$name.txt" 2>&1
    ncu --import "/tmp/ncu/$name.ncu-rep" --page raw --csv > "$OUT/ncu-$name-raw.csv" 2>&1
    {
        echo "=== $name: $args"
        grep -E "^\s+(Duration|SM Active Cycles|Elapsed Cycles|Executed Ipc Active|Issue Slots Busy|No Eligible|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|L2 Hit Rate|L1/TEX Hit Rate|Executed Instructions|Registers Per Thread|Achieved Occupancy|Warp Cycles Per Issued Instruction|Avg. Active Threads Per Warp)\b" "$OUT/ncu-$name.txt" | head -20
        grep -iE "stall|tensor" "$OUT/ncu-$name.txt" | head -12
    } | tee -a "$OUT/ncu-summary.txt"
done <<< "${NCU_RUNS:-}"
