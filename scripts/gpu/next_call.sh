#!/usr/bin/env bash
# The next device call for pretraining throughput (about 9 min on an H100; carry .whl):
#  0. the hardware tests of run_ahead (tests/training/pretrain/test_pacing.py);
#  1. the loader alone on the benchmark's WAV shards with 4, 8 and 14 workers, unpinned
#     (a worker on the H100 host delivered a third of a 2-core CPU host's: is it cores?),
#     and at 14 the loader as before 2026-11-27 beside it (crops not yet read straight
#     into the batch: 1.5x on the CPU);
#  2. HTS-AT's step with transformers' window attention against one fused
#     scaled_dot_product_attention call (scripts/benchmarks/window_attention.py, eager
#     mode, batch 256: under a minute), which on CPU has no fused kernel to use;
#  3. compile_variants.sh's variants, as time allows: graphs (the fastest loop so far),
#     sdpa (graphs with attention=sdpa), synced (graphs with run_ahead=0: a sync
#     after every step, as every figure before 2026-11-26 evening), prefetch (splits
#     the 1.13x that prefetch + CUDA graphs gave together) and graphs512 (larger
#     matmuls). Each bench also reports the loader pinned and unpinned, which says
#     whether the pinning thread limits it.
set -o pipefail
OUT=${OUT:-runs/gpu-next}; mkdir -p "$OUT"
# bench_pretrain.sh reports a failed benchmark or prepare as an rc line and goes on: the
# prepared set is checked here, or every step below would fail with its errors filtered
SETUP_ONLY=1 SHARDS=wav OUT=/tmp/setup bash scripts/gpu/bench_pretrain.sh > /tmp/setup.log 2>&1 \
    && [ -f /tmp/prepared-wav/prepared.json ] \
    || { echo "setup failed:"; tail -5 /tmp/setup.log; exit 1; }
echo "setup ${SECONDS} s"
# the device, its cores, torch and transformers, once: compile_variants.sh filters these
# lines out of each variant's output and the env.txt files are removed below
cat /tmp/setup/env.txt
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# run_ahead on a real GPU first (about 30 s): at most one step in flight, same losses;
# and attention=sdpa: a fused kernel takes the window mask, with eager's gradients
timeout 150 python3 -m pytest -q -p no:cacheprovider -m hardware \
    tests/training/pretrain/test_pacing.py tests/training/pretrain/test_window_attention.py 2>&1 | tail -6
for w in 4 8 14; do  # at 14 also the loader as before 2026-11-27 (--per-item), alternating
  timeout 90 python3 scripts/benchmarks/loader_alone.py --data /tmp/prepared-wav --batch 256 \
      --workers $w --passes 1 $([ $w = 14 ] && echo --per-item) 2>&1 | grep -E "clips/s| workers$|Error"
done
echo "loader ${SECONDS} s"
timeout 120 python3 scripts/benchmarks/window_attention.py --batch 256 --steps 5 2>&1 | tail -4
echo "window attention ${SECONDS} s"
VARIANTS="graphs sdpa synced prefetch graphs512" LIMIT=$((570 - SECONDS)) OUT=$OUT bash scripts/gpu/compile_variants.sh
rm -f "$OUT"/*/env.txt "$OUT"/*/prepare.log
echo "total ${SECONDS} s"
