#!/usr/bin/env bash
# A short device call (about 3 min; carry .whl): evaluation on the GPU, new on
# 2026-11-29 and not yet run on one.
#  1. the hardware test: a model loaded on the GPU embeds as on the CPU (cosine > 0.9999);
#  2. scripts/benchmarks/eval_windows.py with the full-size model: embed_items end to end
#     on the GPU with its feed (batch 128, up to 8 workers) against the model alone there
#     and on the host's CPU (where evaluation ran before), and windows read alone
#     against whole decodes.
set -o pipefail
OUT=${OUT:-runs/gpu-eval}; mkdir -p "$OUT"; OUT=$(realpath "$OUT")
source scripts/gpu/wheels.sh
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; nproc;
  python3 -c 'import torch, transformers; print(torch.__version__, transformers.__version__)'; } 2>&1
timeout 120 python3 -m pytest -q -p no:cacheprovider -m hardware tests/training/test_embed_audio.py \
    2>&1 | tail -3
cd scripts/benchmarks && timeout 300 python3 eval_windows.py --files 200 --items 6000 \
    --seconds 22 --rounds 1 --model full 2>&1 | grep -vE "Warning|warn" | tee "$OUT/eval_windows.txt"
echo "total ${SECONDS} s"
