#!/usr/bin/env bash
# One device call (about 9 min on an H100): the compiled loop at batch 256 through WAV
# shards, three ways in the same call so that they compare:
#   base      compile=true
#   prefetch  + device_prefetch=true (batch n+1 copied to the GPU during step n)
#   graphs    + compile_mode=reduce-overhead prompt_length=auto (CUDA graphs)
#   graphs512 the same at batch 512 (not in the default list; VARIANTS="... graphs512")
#   sdpa      graphs with attention=sdpa: each attention layer of both towers as one
#             fused scaled_dot_product_attention call (not in the default list; A/B
#             against graphs)
#   ring      sdpa with pinned_ring=true: workers write into locked shared slots that
#             the GPU copies from, no pinning thread; the bench also times the pinned
#             loader alone as its peer (not in the default list; A/B against sdpa)
#   ring512   ring at batch 512 (26.6 GB locked; not in the default list)
#   packed    ring with prompt_packing=64 instead of prompt_length=auto: prompts packed
#             end to end into fixed rows (packing.py; not in the default list; A/B
#             against ring)
#   packed512 packed at batch 512 (not in the default list)
#   synced    graphs with run_ahead=0: a sync after every step, as every run before
#             2026-11-26 evening did (not in the default list; A/B against graphs)
# 2026-11-26 on an H100, base and graphs in one call: 1,875 and 2,120 samples/s, host
# overhead 26% and 12%; prefetch alone, which would split the gain, not yet run.
# A warm-up longer than the prefetch queue (14 workers x 4 batches) so the timed steps
# see the loader's steady rate. A variant starts only with 200 s left of LIMIT.
# Needs .whl (see bench_pretrain.sh); carry it.
set -o pipefail
OUT=${OUT:-runs/gpu-variants}; LIMIT=${LIMIT:-560}
declare -A SETS_OF=(
  [base]="compile=true"
  [prefetch]="compile=true device_prefetch=true"
  [graphs]="compile=true device_prefetch=true compile_mode=reduce-overhead prompt_length=auto"
  [graphs512]="compile=true device_prefetch=true compile_mode=reduce-overhead prompt_length=auto"
  [synced]="compile=true device_prefetch=true compile_mode=reduce-overhead prompt_length=auto run_ahead=0"
  [sdpa]="compile=true device_prefetch=true compile_mode=reduce-overhead prompt_length=auto attention=sdpa"
  [ring]="compile=true compile_mode=reduce-overhead prompt_length=auto attention=sdpa pinned_ring=true"
  [ring512]="compile=true compile_mode=reduce-overhead prompt_length=auto attention=sdpa pinned_ring=true"
  [packed]="compile=true compile_mode=reduce-overhead prompt_packing=64 attention=sdpa pinned_ring=true"
  [packed512]="compile=true compile_mode=reduce-overhead prompt_packing=64 attention=sdpa pinned_ring=true"
)
declare -A BATCH_OF=([graphs512]=512 [ring512]=512 [packed512]=512)  # larger matmuls; about 50 GB at batch 512
for v in ${VARIANTS:-base prefetch graphs}; do
  if [ $((LIMIT - SECONDS)) -lt 200 ]; then echo "$v: skipped, ${SECONDS}s gone"; continue; fi
  echo "== $v: ${SETS_OF[$v]}"
  BATCHES=${BATCH_OF[$v]:-256} SETS="${SETS_OF[$v]}" SHARDS=wav STEPS=60 WARMUP=70 \
      BENCH_TIMEOUT=$((LIMIT - SECONDS - 20)) OUT=$OUT/$v bash scripts/gpu/bench_pretrain.sh \
      2>&1 | grep -vE "^(name|NVIDIA|[0-9]+$|[0-9.]+\+cu)"
done
echo "elapsed $SECONDS s"
