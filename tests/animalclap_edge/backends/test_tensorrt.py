"""TensorRT: engine keys and precision rules everywhere; building and running (and
agreeing with onnxruntime) only where TensorRT and a GPU exist (marked hardware)."""

import dataclasses
import importlib.util

import numpy as np
import pytest

from animalclap_edge.backends import select_backend
from animalclap_edge.backends.select import BackendError
from animalclap_edge.backends.tensorrt_backend import (
    EngineKey,
    TensorRTUnavailable,
    cache_dir,
    engine_precision,
)
from animalclap_edge.bundle import demo_bundle_path, load_bundle
from animalclap_edge.cli import main

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_engine_key_changes_with_everything_that_invalidates_an_engine():
    key = EngineKey("b1", "10.3.0", "Orin", "8.7", "fp16", 8)
    names = {key.filename()}
    for field, value in [
        ("bundle_id", "b2"),
        ("tensorrt", "10.4.0"),
        ("gpu", "Orin Nano"),
        ("compute_capability", "8.9"),
        ("precision", "int8"),
        ("max_batch", 16),
    ]:
        names.add(dataclasses.replace(key, **{field: value}).filename())
    assert len(names) == 7
    # the timing cache is shared by bundles on one GPU and TensorRT version
    assert key.timing_cache_name() == dataclasses.replace(key, bundle_id="b2").timing_cache_name()
    assert key.timing_cache_name() != dataclasses.replace(key, gpu="Xavier").timing_cache_name()


def test_int8_engines_come_only_from_qdq_bundles():
    fp32_bundle = load_bundle(demo_bundle_path())
    with pytest.raises(TensorRTUnavailable, match="--precision int8"):
        engine_precision(fp32_bundle, "int8")
    assert engine_precision(fp32_bundle, "fp16") == "fp16"
    assert engine_precision(fp32_bundle, "fp32") == "fp32"
    # an INT8 (QDQ) bundle builds int8 engines, whatever precision the config asks
    m = fp32_bundle.manifest
    enc = m.audio_encoder.model_copy(update={"precision": "int8"})
    int8_bundle = dataclasses.replace(
        fp32_bundle, manifest=m.model_copy(update={"audio_encoder": enc})
    )
    assert [engine_precision(int8_bundle, p) for p in ("int8", "fp16", "fp32")] == ["int8"] * 3


def test_engine_cache_defaults_under_xdg_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir(None) == tmp_path / "animalclap-edge" / "engines"
    assert cache_dir("/data/engines").as_posix() == "/data/engines"


@pytest.mark.skipif(HAS_TRT, reason="checks the message on machines without TensorRT")
def test_without_tensorrt_auto_says_why_and_tensorrt_refuses(capsys):
    bundle = load_bundle(demo_bundle_path())
    choice = select_backend(bundle, "auto")
    assert choice.backend.name.startswith("onnxruntime")
    assert "tensorrt: TensorRT Python bindings not importable" in choice.reason
    choice.backend.close()
    with pytest.raises(BackendError, match="backend tensorrt unavailable: TensorRT"):
        select_backend(bundle, "tensorrt")
    assert main(["build-engine"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--system-site-packages" in err
    # an int8 engine of an fp32 bundle is the request's own error: said before TensorRT's
    assert main(["build-engine", "--precision", "int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "int8 engines are built from a QDQ graph" in err and "--system-site" not in err


@pytest.mark.hardware
@pytest.mark.skipif(not HAS_TRT, reason="TensorRT not installed")
def test_tensorrt_engine_agrees_with_onnxruntime(tiny_bundle, realaudio, tmp_path):
    from animalclap_edge.audio.decode import read_all
    from animalclap_edge.backends.onnxruntime_backend import OnnxRuntimeBackend
    from animalclap_edge.backends.tensorrt_backend import TensorRTBackend, build_engine
    from animalclap_edge.contracts.frontend import repeat_pad

    bundle = load_bundle(tiny_bundle)
    w = bundle.manifest.window_samples
    files = sorted(realaudio.glob("*.wav"))[:12]
    x = np.stack([repeat_pad(read_all(f, 48_000), w)[:w] for f in files]).astype(np.float32)
    engine, built = build_engine(bundle, "fp16", 4, str(tmp_path))
    assert built and build_engine(bundle, "fp16", 4, str(tmp_path)) == (engine, False)
    trt, ort = TensorRTBackend(bundle, engine, 4), OnnxRuntimeBackend(bundle)
    try:
        a, b = trt.embed(x), ort.embed(x)
    finally:
        trt.close()
        ort.close()
    cos = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99
