#!/usr/bin/env bash
# One device call (about 6 min on an H100): distillation at full size on the GPU.
#  1. a full-size teacher (scratch:full, HTS-AT + RoBERTa-base shapes) pretrained for
#     STEPS steps on the small benchmark through WAV shards, compiled, batch 256;
#  2. `animalclap-export distill` from it on the GPU in bf16 (teacher cache, then the
#     student), with the split's unseen species left out; figures -> $OUT/student;
#  3. the GPU tests of the code paths CPU hosts cannot run (pytest -m hardware).
# 2026-11-26 on an H100 (figures in docs/export.md):
#   STEPS=120 WARMUP=30 COMPILE=false EPOCHS=4 bash scripts/gpu/distill_full.sh
# Needs .whl (see bench_pretrain.sh; pytest and its dependencies for step 3); carry it.
set -o pipefail
OUT=${OUT:-runs/gpu-distill}; STEPS=${STEPS:-600}; EPOCHS=${EPOCHS:-30}; mkdir -p "$OUT"
COMPILE=${COMPILE:-true}; WARMUP=${WARMUP:-100}
SETUP_ONLY=1 SHARDS=wav OUT=$OUT/setup bash scripts/gpu/bench_pretrain.sh | tail -3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T() { python3 -c 'import sys; from training.cli import main; sys.exit(main())' "$@"; }
X() { python3 -c 'import sys; from export.cli import main; sys.exit(main())' "$@"; }
start=$SECONDS
timeout 240 bash -c "$(declare -f T); T pretrain --set data=/tmp/prepared-small-wav init=scratch:full \
    batch_size=256 workers=14 compile=$COMPILE max_steps=$STEPS warmup_steps=$WARMUP \
    checkpoint_every=100000 tensorboard=false out=/tmp/teacher" > "$OUT/teacher.log" 2>&1
echo "teacher rc=$? in $((SECONDS - start)) s"; tail -c 400 "$OUT/teacher.log"; echo
start=$SECONDS
timeout 240 bash -c "$(declare -f X); X distill --teacher /tmp/teacher/final \
    --audio /tmp/prepared-small-wav --exclude-test-of /tmp/teacher/split.json --out $OUT/student \
    --device cuda --precision bf16 --teacher-batch 256 --batch-size 256 --epochs $EPOCHS \
    --workers 12" \
    > "$OUT/distill.log" 2>&1
echo "distill rc=$? in $((SECONDS - start)) s"; tail -c 1500 "$OUT/distill.log"; echo
timeout 120 python3 -m pytest -q -p no:cacheprovider -m hardware \
    tests/training/pretrain/test_prefetch.py tests/export/test_distill.py 2>&1 | tail -5
echo "elapsed $SECONDS s"
