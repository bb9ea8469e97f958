#!/usr/bin/env bash
# Run here, where the package registry is reachable, before a device call: fetches into
# .whl (git-ignored) the wheels the GPU host's image lacks, at the versions this
# checkout's .venv runs (pydantic and pydantic_core must match each other), built for
# the device's Python 3.12 on x86_64. The device has no network; carry .whl:
#   bash scripts/gpu/fetch_wheels.sh && run(command="bash scripts/gpu/next_call.sh", carry=[".whl"])
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
NAMES="pydantic pydantic_core annotated-types typing-inspection soundfile cffi pycparser soxr
birdnames pytest pytest-timeout pluggy iniconfig pygments packaging"
PINS=$("$PY" - $NAMES <<'EOF'
import importlib.metadata as md
import sys

missing = []
for name in sys.argv[1:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        missing.append(name)
if missing:
    sys.exit(f"not installed in this .venv: {' '.join(missing)} (bash setup.sh --install-only)")
EOF
)
mkdir -p .whl
# shellcheck disable=SC2086  # one pin per word
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 -d .whl $PINS
ls .whl/*.whl | wc -l | xargs -I{} echo "{} wheels in .whl ($(du -sh .whl | cut -f1)); carry .whl"
