#!/usr/bin/env bash
# The next device call for pretraining throughput (about 8.5 min on an H100; carry .whl).
# 2026-11-28 showed the ring lifts the loader to 6,579 clips/s, so the step (0.103 s at
# batch 256, MFU 13%) is the limit. This call asks whether packing the prompts, instead
# of padding each to the catalogue's longest, shortens it, and what the step is made of:
#  0. scripts/benchmarks/prompt_packing.py: the text tower alone on eBird prompts,
#     padded against packed (on the 2-core CPU packed ran 4.49x faster at batch 256);
#  1. packed: compiled, CUDA graphs, sdpa, pinned_ring, prompt_packing=64;
#  2. ring: the same with prompt_length=auto, the peer in the same call;
#  1 and 2 with PROFILE=1: the step alone under torch.profiler, device time by kind of
#  kernel and idle gaps (profile_b<batch>/profile.md, .json, trace.json.gz).
# bench reports each step's roofline, recorded on the GPU (of_roofline, mfu_bound); on
# the CPU (scripts/benchmarks/roofline.py, wide, batch 256) the flash bounds were 30.9
# ms for ring (padded to 48) and 26.2 ms for packed.
# ring512 and packed512 (batch 512) are for the call after. The hardware tests (ring,
# pacing, fused window mask) passed on 2026-11-28 and are left out; run them with
# `python3 -m pytest -m hardware tests/training/pretrain`.
set -o pipefail
OUT=${OUT:-runs/gpu-next}; mkdir -p "$OUT"
# wide: 2,000 species, whose prompts are as long as a paper-size catalogue's (padded to
# 48 by auto, as eBird's 6,823 are; small's pad to 24-32), so both the padded peer and
# the paper-run estimate are the paper's, not small's. Earlier rows used small.
export SIZE=${SIZE:-wide}
# bench_pretrain.sh reports a failed benchmark or prepare as an rc line and goes on: the
# prepared set is checked here, or every step below would fail with its errors filtered
SETUP_ONLY=1 SHARDS=wav OUT=/tmp/setup bash scripts/gpu/bench_pretrain.sh > /tmp/setup.log 2>&1 \
    && [ -f "/tmp/prepared-$SIZE-wav/prepared.json" ] \
    || { echo "setup failed:"; tail -5 /tmp/setup.log; exit 1; }
echo "setup ${SECONDS} s"
# the device, its cores, torch and transformers, once: compile_variants.sh filters these
# lines out of each variant's output and the env.txt files are removed below
cat /tmp/setup/env.txt
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# the text tower alone, padded against packed (under a minute): a figure even if a variant fails
mkdir -p "$OUT/text"
timeout 90 python3 scripts/benchmarks/prompt_packing.py --batch 256 --steps 5 --simulate 300 \
    2>&1 | tee "$OUT/text/prompt_packing.txt" | grep -vE "Warning|warn"
echo "text tower ${SECONDS} s"
PROFILE=1 VARIANTS=${VARIANTS:-packed ring} LIMIT=$((570 - SECONDS)) OUT=$OUT \
    bash scripts/gpu/compile_variants.sh
rm -f "$OUT"/*/env.txt "$OUT"/*/prepare.log
echo "total ${SECONDS} s"
