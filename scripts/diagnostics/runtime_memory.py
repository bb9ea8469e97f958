"""Where the runtime's memory goes, option by option (each case in a fresh process).

    python scripts/diagnostics/runtime_memory.py session --onnx runs/bundle-student-fp32/audio_encoder.onnx
    python scripts/diagnostics/runtime_memory.py decode --audio ../shared/realaudio
    python scripts/diagnostics/runtime_memory.py imports
    python scripts/diagnostics/runtime_memory.py validators   # pydantic against msgspec
    python scripts/diagnostics/runtime_memory.py array --bundle runs/bundle-student-fp32 --minutes 10

`session`: onnxruntime's encoder session under the options tried for peak RSS (arena
off, basic graph optimisation, no weight pre-packing, no memory pattern) at batch 1, 4 and 8: RSS the
session adds, RSS running adds, peak, and ms per window. `decode`: what decoding a
folder of recordings costs in RSS after the runtime's imports (why `bench` decodes in
its driver, not in the engines' workers). `imports`: the RSS each of the runtime's
heavy imports adds, in order (pydantic's share is the config's validation). `array`:
the peak RSS `Detector.detect_array` adds above an in-memory clip of noise.
The session cases also load the graph with its weights as ONNX external data
(memory-mapped) and as an ORT-format model, and with an environment arena that
extends by exactly what is asked (kSameAsRequested).
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
    "weights as external data": {"pattern": False, "model": "external"},
    "ORT-format model": {"pattern": False, "model": "ort"},
    "env arena, same as requested": {"pattern": False, "env_arena": True},
}


def _model_variants(onnx: str, tmp: Path) -> dict[str, str]:
    """The graph as given, with its weights as external data, and in ORT format."""
    import onnx as onnx_lib

    external = tmp / "external.onnx"
    model = onnx_lib.load(onnx)
    onnx_lib.save(
        model,
        external,
        save_as_external_data=True,
        location="external.onnx.data",
        size_threshold=1024,
    )
    convert = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort"]
    subprocess.run(
        [*convert, str(external), "--output_dir", str(tmp / "ort")],
        check=True,
        capture_output=True,
    )
    return {"onnx": onnx, "external": str(external), "ort": str(tmp / "ort" / "external.ort")}


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
    env_arena: bool = False,
) -> dict:
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    if env_arena:
        same_as_requested = 1  # ArenaExtendStrategy::kSameAsRequested
        info = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, same_as_requested, -1, -1))
        so.add_session_config_entry("session.use_env_allocators", "1")
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


def _array_case(bundle: str, minutes: float) -> dict:
    import numpy as np

    from animalclap_edge.bundle import load_bundle
    from animalclap_edge.config import config_from_dict
    from animalclap_edge.detector import Detector

    config = config_from_dict({"backend": {"threads": 1, "batch_size": 4}})
    det = Detector(load_bundle(bundle), config)
    x = np.random.default_rng(0).standard_normal(round(minutes * 60 * 48_000), dtype=np.float32)
    x *= 0.05
    before = _peak()
    det.detect_array(x, 48_000)
    return {"array_mb": x.nbytes / 2**20, "added_mb": _peak() - before}


def _child(kind: str, args: dict) -> dict:
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import runtime_memory as m; print(json.dumps(m._{kind}_case(**{args!r})))"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode:
        lines = out.stderr.strip().splitlines() or [f"exit status {out.returncode}"]
        raise subprocess.CalledProcessError(out.returncode, kind, out.stdout, lines[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["session", "decode", "imports", "validators", "array"])
    ap.add_argument("--bundle", default="runs/bundle-student-fp32")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--onnx", default="runs/bundle-student-fp32/audio_encoder.onnx")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--audio", default="../shared/realaudio")
    a = ap.parse_args()
    needs = {"array": a.bundle, "session": a.onnx, "decode": a.audio}.get(a.what)
    if needs and not Path(needs).exists():
        ap.error(
            f"{needs} does not exist: build the student bundle as docs/runtime-bench.md says "
            '("The student bundle"), or pass --bundle/--onnx/--audio'
        )
    try:
        _run(a)
    except subprocess.CalledProcessError as e:
        sys.exit(f"runtime_memory.py {a.what}: the measuring process failed: {e.stderr}")


def _run(a: argparse.Namespace) -> None:
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
    if a.what == "array":
        r = _child("array", {"bundle": a.bundle, "minutes": a.minutes})
        print(
            f"detect_array on {a.minutes:g} min ({r['array_mb']:.0f} MB of float32): "
            f"peak RSS +{r['added_mb']:.1f} MB above the array"
        )
        return
    with tempfile.TemporaryDirectory() as tmp:
        models = _model_variants(a.onnx, Path(tmp))
        for name, opts in CASES.items():
            opts = dict(opts)
            onnx = models[opts.pop("model", "onnx")]
            for b in a.batches:
                _print_session(name, b, _child("session", {"onnx": onnx, "batch": b, **opts}))


def _print_session(name: str, b: int, r: dict) -> None:
    print(
        f"{name}, batch {b}: session +{r['session_mb']:.1f} MB, running +{r['running_mb']:.1f} MB, "
        f"peak {r['peak_mb']:.1f} MB, {r['ms_per_window']:.2f} ms per window"
    )


if __name__ == "__main__":
    main()
