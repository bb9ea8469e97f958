#!/usr/bin/env bash
# The next device call for pretraining throughput (about 9.5 min on an H100; carry .whl).
# 2026-11-27's calls showed the pinning thread caps the loader (1,945-2,459 clips/s
# pinned, 5,200 unpinned) near the step's own rate, so the ring comes first:
#  0. the hardware tests of the ring, run_ahead and attention=sdpa's fused mask (~60 s);
#  1. compile_variants.sh: ring (sdpa + pinned_ring=true: the loader through locked
#     shared slots, and the pinned loader alone timed in the same run as its peer),
#     then sdpa (the same without the ring: the loop-level A/B) if 200 s are left;
#  2. as time allows: HTS-AT's eager step with transformers' window attention against
#     one fused call (window_attention.py, batch 256).
# On the same warm machine afterwards, what did not fit: VARIANTS=sdpa with
# OUT=$OUT/gpu-next bash scripts/gpu/compile_variants.sh (about 210 s).
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
timeout 120 python3 -m pytest -q -p no:cacheprovider -m hardware -rfE \
    tests/training/pretrain/test_ring.py tests/training/pretrain/test_pacing.py \
    tests/training/pretrain/test_window_attention.py 2>&1 | tr '\r' '\n' | tail -8
VARIANTS=${VARIANTS:-ring sdpa} LIMIT=$((560 - SECONDS)) OUT=$OUT bash scripts/gpu/compile_variants.sh
echo "variants ${SECONDS} s"
if [ $SECONDS -lt 520 ]; then
  timeout $((575 - SECONDS)) python3 scripts/benchmarks/window_attention.py --batch 256 \
      --steps 5 2>&1 | tail -4
fi
rm -f "$OUT"/*/env.txt "$OUT"/*/prepare.log
echo "total ${SECONDS} s"
