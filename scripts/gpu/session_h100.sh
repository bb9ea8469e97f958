#!/usr/bin/env bash
# One device call (about 8 min) for the issue-4 figures of 2026-11-26:
#  1. the compiled loop at batch 256 through WAV shards (`bench`: throughput, data wait,
#     MFU, paper-run time, loader alone);
#  2. the same step's compute alone, eager (profile_step.py, same machine: the baseline);
#  3. compiled with bf16 weights, with the kernel table (where the compiled step goes);
#  4. if time is left, the compiled loop through FLAC shards (the default codec).
# Needs .whl (see bench_pretrain.sh); carry it.
set -o pipefail
OUT=${OUT:-runs/gpu-session}; mkdir -p "$OUT"; export OUT
BATCHES=256 SETS="compile=true" SHARDS=wav BENCH_TIMEOUT=240 OUT=$OUT/wav \
    bash scripts/gpu/bench_pretrain.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
P() { timeout "$1" python3 scripts/gpu/profile_step.py --data /tmp/bench-small --batch 256 "${@:2}"; }
P 90 --no-profile > "$OUT/profile_eager.log" 2>&1; echo "eager rc=$?"
grep -E "warm-up|per step" "$OUT/profile_eager.log"
P 200 --compile --bf16-weights > "$OUT/profile_compile_bf16.log" 2>&1; echo "compile+bf16 rc=$?"
grep -E "warm-up|per step" "$OUT/profile_compile_bf16.log"
echo "elapsed $SECONDS s"
if [ "$SECONDS" -lt 300 ]; then
  BATCHES=256 SETS="compile=true" SHARDS=flac BENCH_TIMEOUT=$((500 - SECONDS - 40)) \
      OUT=$OUT/flac bash scripts/gpu/bench_pretrain.sh
fi
echo "elapsed $SECONDS s"
