#!/usr/bin/env bash
# The next device call for pretraining throughput (about 9.5 min on an H100; carry .whl).
# Ordered by what each answer is worth, since a review (2026-11-27) estimated that the
# old order (loader sweep and micro-benchmark first) left time for one loop variant:
#  0. the hardware tests of run_ahead and of attention=sdpa's fused window mask (~45 s);
#  1. compile_variants.sh: sdpa (CUDA graphs with attention=sdpa: one fused attention
#     call per layer, the untried candidate for a faster step), then graphs (the fastest
#     loop so far, 2,120 samples/s on 2026-11-26), each about 200 s. Each bench also
#     times the step alone with a sync after every step (compute_alone_synced_s: the
#     run_ahead A/B on the same compiled module) and the loader pinned and unpinned;
#  2. as time allows: the loader alone with 14 workers, with the loader as before
#     2026-11-27 beside it (--per-item); then HTS-AT's eager step with transformers'
#     window attention against one fused call (window_attention.py, batch 256).
# Not in this call any more: the loader with 4 and 8 workers (a worker on the H100 host
# delivered a third of a 2-core CPU host's: is it cores?), and the prefetch, synced
# and graphs512 variants. VARIANTS=... and the loop below run them on a later call.
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
timeout 90 python3 -m pytest -q -p no:cacheprovider -m hardware \
    tests/training/pretrain/test_pacing.py tests/training/pretrain/test_window_attention.py 2>&1 | tail -6
VARIANTS=${VARIANTS:-sdpa graphs} LIMIT=$((530 - SECONDS)) OUT=$OUT bash scripts/gpu/compile_variants.sh
echo "variants ${SECONDS} s"
if [ $SECONDS -lt 535 ]; then  # at 14 workers, with the loader as before 2026-11-27 (--per-item)
  timeout 45 python3 scripts/benchmarks/loader_alone.py --data /tmp/prepared-wav --batch 256 \
      --workers 14 --passes 1 --per-item 2>&1 | grep -E "clips/s| workers$|Error"
fi
if [ $SECONDS -lt 520 ]; then
  timeout $((575 - SECONDS)) python3 scripts/benchmarks/window_attention.py --batch 256 \
      --steps 5 2>&1 | tail -4
fi
rm -f "$OUT"/*/env.txt "$OUT"/*/prepare.log
echo "total ${SECONDS} s"
