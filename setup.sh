#!/usr/bin/env bash
# Set up a virtual environment with everything (device runtime + training + export + dev
# tools), then run the main job: train a small model on generated audio, export a bundle,
# and run the recorder runtime on real recordings.
#
#   bash setup.sh                 set up, then run the demo pipeline (about 10 minutes on 2 CPU cores)
#   bash setup.sh --install-only  set up only (what CI does)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch==2.13.0 (pinned in pyproject) resolves to the local CPU wheel on our dev machines
# and to PyPI's CUDA build on a GPU server.
.venv/bin/python -m pip install --quiet -e '.[dev]'
echo "installed: $(.venv/bin/animalclap-edge --version)"
if [ "${1:-}" = "--install-only" ]; then
  exit 0
fi
exec bash scripts/demo.sh
