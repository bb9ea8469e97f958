#!/usr/bin/env bash
# One device call: the pretraining step of the full-size model (HTS-AT + RoBERTa-base
# shapes, from scratch, bf16) timed on the GPU by `animalclap-train bench`, with the
# small procedural benchmark as data. A GPU host without network needs the wheels of
# what its image lacks, fetched beforehand into .whl (git-ignored) by
# `bash scripts/gpu/fetch_wheels.sh` on a machine with the registry; carry .whl.
# Extra settings for every bench run go in SETS, e.g. the compiled loop at batch 256:
#   BATCHES=256 SETS="compile=true" BENCH_TIMEOUT=400 bash scripts/gpu/bench_pretrain.sh
# STEPS and WARMUP set the timed and untimed steps (a warm-up longer than the
# prefetch queue, workers x 4 batches, makes the timed data wait the steady one).
# PROFILE=1 also profiles the step alone (bench --profile: $OUT/profile_b<batch>/).
# SHARDS=flac|wav reads the benchmark through `prepare`d shards (the paper run's path)
# instead of its FLAC files. SIZE=wide writes the benchmark of 2,000 species (prompts as
# long as a paper-size catalogue's) instead of small's 160.
set -o pipefail
SIZE=${SIZE:-small}
OUT=${OUT:-runs/gpu-bench}; mkdir -p "$OUT"
source scripts/gpu/wheels.sh
T() { python3 -c 'import sys; from training.cli import main; sys.exit(main())' "$@"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc;
  python3 -c 'import torch, transformers; print(torch.__version__, transformers.__version__)'; } \
    2>&1 | tee "$OUT/env.txt"
start=$(date +%s)
if [ ! -f /tmp/bench-$SIZE/catalogue.csv ]; then  # written once per machine
  timeout 170 bash -c "$(declare -f T); T benchmark --size $SIZE --out /tmp/bench-$SIZE --workers 16" \
      > "$OUT/benchmark.log" 2>&1; echo "benchmark rc=$? in $(( $(date +%s) - start )) s"
  tail -2 "$OUT/benchmark.log"
fi
DATA=/tmp/bench-$SIZE
# prepared once per machine (prepared.json is finalize's last word): compile_variants.sh
# calls this once per variant, and a re-run re-plans and re-finalizes (seconds each)
# outside the BENCH_TIMEOUT it budgets for the variant
if [ -n "${SHARDS:-}" ] && [ ! -f "/tmp/prepared-$SIZE-$SHARDS/prepared.json" ]; then
  python3 scripts/gpu/benchmark_manifest.py /tmp/bench-$SIZE > /dev/null || exit 1
  timeout 170 bash -c "$(declare -f T); T prepare --manifest /tmp/bench-$SIZE/manifest-cc0.csv \
      --catalogue /tmp/bench-$SIZE/catalogue.csv --out /tmp/prepared-$SIZE-$SHARDS --codec $SHARDS \
      --workers 16" > "$OUT/prepare.log" 2>&1; echo "prepare ($SHARDS) rc=$?"
  tail -c 300 "$OUT/prepare.log"
fi
[ -n "${SHARDS:-}" ] && DATA=/tmp/prepared-$SIZE-$SHARDS
[ -n "${SETUP_ONLY:-}" ] && exit 0  # wheels and data only (distill_full.sh)
for b in ${BATCHES:-64 256}; do
  timeout ${BENCH_TIMEOUT:-150} bash -c "$(declare -f T); T bench --set data=$DATA \
      batch_size=$b workers=14 ${SETS:-} --steps ${STEPS:-30} --warmup ${WARMUP:-5} --out $OUT/bench_b$b.json \
      ${PROFILE:+--profile $OUT/profile_b$b}" \
      > "$OUT/bench_b$b.log" 2>&1; echo "batch $b rc=$?"
  # the figures only: the progress bar's \r-joined line ("the step alone, synced") would
  # match a loose pattern and fill the call's output tail (2026-11-27)
  tr '\r' '\n' < "$OUT/bench_b$b.log" | grep -E "^ *(samples_per_s|sustained_samples_per_s|\
step_s|data_wait_s|compute_s|compute_alone_s|compute_alone_synced_s|host_overhead|\
loader_only_samples_per_s|loader_unpinned_samples_per_s|loader_pinned_samples_per_s|tflop_per_step|achieved_tflops|mfu|\
peak_memory_gb|peak_reserved_gb|paper_run_minutes|roofline_flash_s|roofline_fused_s|\
roofline_unfused_s|of_roofline|mfu_bound|roofline_error|verdict|[A-Za-z]*Error):"
  if [ -f "$OUT/profile_b$b/profile.md" ]; then head -c 2500 "$OUT/profile_b$b/profile.md"; fi
done
echo "total $(( $(date +%s) - start )) s"
