#!/bin/bash
# Build + test + bench of the sm_90a attention prototype, in one call on the GPU machine:
#   bash bench/hopper/run.sh [--quick]
# Writes fa3_log.txt, ptxas.txt, sass_counts.txt to $OUT (or /tmp/fa3_out).
set -o pipefail
OUTD=${OUT:-/tmp/fa3_out}; mkdir -p "$OUTD"
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
SRC=crates/cuda/kernels/hopper/fa3_launch.cu
B=/tmp/fa3_build; mkdir -p $B
FLAGS="-gencode=arch=compute_90a,code=sm_90a -O3 -std=c++17 -Icrates/cuda/kernels"
$NVCC $FLAGS -Xptxas -v -shared -Xcompiler -fPIC -o $B/libfa3.so $SRC 2>&1 | tee $OUTD/ptxas.txt | grep -E "error|warning|registers|spill" || true
[ -f $B/libfa3.so ] || { echo "build failed"; exit 1; }
$NVCC $FLAGS -cubin -o $B/fa3.cubin $SRC && cuobjdump --dump-sass $B/fa3.cubin > $B/fa3.sass 2>&1
{ for f in HGMMA UTMALDG UTMASTG USETMAXREG SYNCS LDGSTS LDL STL; do echo "$f $(grep -c "$f" $B/fa3.sass)"; done; } | tee $OUTD/sass_counts.txt | tr '\n' ' '; echo
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv,noheader
PYTHONUNBUFFERED=1 python3 bench/hopper/fa3_bench.py $B/libfa3.so "$OUTD" "$@"
