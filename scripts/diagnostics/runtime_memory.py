"""Where the runtime's memory goes, option by option (each case in a fresh process).

    python scripts/diagnostics/runtime_memory.py session --onnx runs/bundle-student-fp32/audio_encoder.onnx
    python scripts/diagnostics/runtime_memory.py decode --audio ../shared/realaudio
    python scripts/diagnostics/runtime_memory.py imports
    python scripts/diagnostics/runtime_memory.py validators   # pydantic against msgspec

`session`: onnxruntime's encoder session under the options tried for peak RSS (arena
off, basic graph optimisation, no weight pre-packing, no memory pattern) at batch 1, 4 and 8: RSS the
session adds, RSS running adds, peak, and ms per window. `decode`: what decoding a
folder of recordings costs in RSS after the runtime's imports (why `bench` decodes in
its driver, not in the engines' workers). `imports`: the RSS each of the runtime's
heavy imports adds, in order (pydantic's share is the config's validation).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "default": {},
    "arena off": {"arena": False},
    "basic optimisation": {"opt": "basic"},
    "no pre-packing": {"prepack": False},
    "no memory pattern": {"pattern": False},  # the runtime's choice since 2026-11-26
}


def _rss() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _session_case(
    onnx: str,
    batch: int,
    arena: bool = True,
    opt: str = "all",
    prepack: bool = True,
    pattern: bool = True,
) -> dict:
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.enable_cpu_mem_arena = arena
    so.enable_mem_pattern = pattern
    if opt == "basic":
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if not prepack:
        so.add_session_config_entry("session.disable_prepacking", "1")
    before = _rss()
    sess = ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])
    loaded = _rss()
    inp = sess.get_inputs()[0]
    x = 0.1 * np.random.default_rng(0).standard_normal((batch, inp.shape[1])).astype(np.float32)
    for _ in range(5):
        sess.run(None, {inp.name: x})
    t = time.perf_counter()
    for _ in range(20):
        sess.run(None, {inp.name: x})
    ms = (time.perf_counter() - t) / 20 / batch * 1000
    return {
        "session_mb": loaded - before,
        "running_mb": _peak() - loaded,
        "peak_mb": _peak(),
        "ms_per_window": ms,
    }


def _decode_case(audio: str) -> dict:
    import animalclap_edge.bundle
    import animalclap_edge.detector  # noqa: F401
    from animalclap_edge.bench import decode_to_raw

    before, peak_before = _rss(), _peak()
    with tempfile.TemporaryDirectory() as tmp:
        decode_to_raw(audio, 48_000, Path(tmp) / "a.f32")
    return {"kept_mb": _rss() - before, "peak_added_mb": _peak() - peak_before}


# In the order that separates what any Python runtime on onnxruntime pays from what
# ours adds: the standard library our modules import (without the modules pydantic
# alone pulls in), then the libraries, then pydantic and the contracts built on it.
STDLIB = (
    "collections contextlib csv dataclasses datetime difflib ipaddress json logging "
    "operator pathlib re resource shutil socket stat subprocess tempfile threading "
    "time types typing uuid weakref"
)
IMPORTS = (
    "numpy",
    "onnxruntime",
    STDLIB,
    "importlib.resources",
    "tarfile",
    "sqlite3",
    "yaml",
    "hashlib",  # OpenSSL's libcrypto behind _hashlib
    "soundfile",
    "soxr",
    "pydantic",
    "animalclap_edge.contracts.bundle",  # the first pydantic models: most of its cost
    "animalclap_edge.config",
    "animalclap_edge.runtime",
)


def _imports_case() -> dict:
    import importlib

    before, added = _rss(), {}
    for names in IMPORTS:
        for name in names.split():
            importlib.import_module(name)
        key = "standard library (the runtime's own)" if names == STDLIB else names
        added[key], before = _rss() - before, _rss()
    return {"interpreter_mb": _rss() - sum(added.values()), "added_mb": added}


def _validators_case(which: str) -> dict:
    """RSS a config validator adds: its import and a first two-level model (what the
    runtime's config and manifest contracts would pay, at the least)."""
    import numpy  # noqa: F401  (imported by every runtime before its validator)

    before = _rss()
    if which == "pydantic":
        from pydantic import BaseModel, Field

        class Backend(BaseModel):
            batch_size: int = Field(8, ge=1)

        class Config(BaseModel):
            backend: Backend = Field(default_factory=Backend)

        Config.model_validate({"backend": {"batch_size": 4}})
    else:
        from typing import Annotated

        import msgspec

        # defstruct: this module's string annotations would not resolve local classes
        strict = {"forbid_unknown_fields": True}
        Backend = msgspec.defstruct(
            "Backend", [("batch_size", Annotated[int, msgspec.Meta(ge=1)], 8)], **strict
        )
        field = msgspec.field(default_factory=Backend)
        Config = msgspec.defstruct("Config", [("backend", Backend, field)], **strict)
        msgspec.convert({"backend": {"batch_size": 4}}, Config)
    return {"added_mb": _rss() - before}


def _child(kind: str, args: dict) -> dict:
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import runtime_memory as m; print(json.dumps(m._{kind}_case(**{args!r})))"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["session", "decode", "imports", "validators"])
    ap.add_argument("--onnx", default="runs/bundle-student-fp32/audio_encoder.onnx")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--audio", default="../shared/realaudio")
    a = ap.parse_args()
    if a.what == "imports":
        r = _child("imports", {})
        print(f"interpreter: {r['interpreter_mb']:.1f} MB")
        for name, mb in r["added_mb"].items():
            print(f"  + {name}: {mb:+.1f} MB")
        return
    if a.what == "validators":  # msgspec is not a dependency: pip install msgspec
        for which in ("pydantic", "msgspec"):
            try:
                r = _child("validators", {"which": which})
            except subprocess.CalledProcessError as e:
                print(f"{which}: not measured ({e.stderr.strip().splitlines()[-1]})")
                continue
            print(f"{which}: +{r['added_mb']:.1f} MB (import and a first model)")
        return
    if a.what == "decode":
        r = _child("decode", {"audio": a.audio})
        print(
            f"decoding {a.audio}: +{r['peak_added_mb']:.1f} MB peak, {r['kept_mb']:.1f} MB kept after"
        )
        return
    for name, opts in CASES.items():
        for b in a.batches:
            r = _child("session", {"onnx": a.onnx, "batch": b, **opts})
            print(
                f"{name}, batch {b}: session +{r['session_mb']:.1f} MB, running +{r['running_mb']:.1f} MB, "
                f"peak {r['peak_mb']:.1f} MB, {r['ms_per_window']:.2f} ms per window"
            )


if __name__ == "__main__":
    main()
