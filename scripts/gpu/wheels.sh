# Sourced by the device scripts: the wheels the GPU image lacks, from .whl (filled by
# `bash scripts/gpu/fetch_wheels.sh` where the registry is reachable; carry .whl),
# installed into /tmp/site, and this checkout on the path.
compgen -G ".whl/*.whl" > /dev/null || {
  echo "no wheels in .whl: run bash scripts/gpu/fetch_wheels.sh where the registry is reachable, then carry .whl"
  exit 1
}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
