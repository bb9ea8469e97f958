#!/usr/bin/env bash
# Rebuild the demo bundle packaged in animalclap_edge/data/demo_bundle with the project's
# own pipeline. Deterministic inputs (seeded benchmark and init); CPU timing decides how
# many steps fit in the budget, so weights differ slightly between machines.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
RUN=runs/demo-bundle
# SKIP_TRAIN=1 re-exports the last checkpoint (e.g. after a manifest change).
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  animalclap-train train --data tiny --out "$RUN" --minutes "${MINUTES:-12}" --seed 0
fi
animalclap-export bundle --checkpoint "$RUN/checkpoint" --data tiny --out animalclap_edge/data/demo_bundle \
  --name animalclap-demo --demo --run-id "$(date -u +%Y%m%dT%H%M%SZ)-tiny-seed0" \
  --notice "DEMO bundle: trained for minutes on generated audio (procedural calls given real species names); it is not a field model and its detections on real recordings mean nothing" \
  --parity-audio ../shared/realaudio --overwrite
