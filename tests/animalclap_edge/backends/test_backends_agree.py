"""Every backend `select_backend` knows embeds real audio as onnxruntime-cpu does, and
gives the same detections; one that cannot run here is skipped with the reason it
gives. A backend added to select.BACKENDS is checked here without editing this file."""

import typing

import numpy as np
import pytest

from animalclap_edge.audio.decode import read_all
from animalclap_edge.backends import BackendError, select_backend
from animalclap_edge.backends.select import BACKENDS
from animalclap_edge.bundle import load_bundle
from animalclap_edge.config import BackendName, EdgeConfig
from animalclap_edge.contracts.frontend import repeat_pad
from animalclap_edge.detector import Detector

OTHERS = [b for b in BACKENDS if b not in ("auto", "onnxruntime-cpu")]


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def windows(bundle, realaudio):
    """(5, window) of five real recordings, repeat-padded as the runtime pads them."""
    w = bundle.manifest.window_samples
    files = sorted(realaudio.glob("*.ogg"))[:5]
    sr = bundle.frontend.sample_rate
    return np.stack([repeat_pad(read_all(f, sr), w)[:w] for f in files]).astype(np.float32)


def test_the_config_and_the_selector_name_the_same_backends_in_one_order():
    assert typing.get_args(BackendName) == BACKENDS


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("onxruntime-cpu", "onnxruntime-cpu"),
        ("tensor-rt", "tensorrt"),
        ("onnx_reference", "onnx-reference"),
    ],
)
def test_a_mistyped_backend_name_is_refused_with_the_nearest_one(bundle, typed, meant):
    with pytest.raises(BackendError) as e:
        select_backend(bundle, typed)
    assert str(e.value) == (
        f"unknown backend {typed!r}; did you mean {meant!r}? choose one of {', '.join(BACKENDS)}"
    )


def test_a_backend_name_near_none_is_refused_without_a_guess(bundle):
    with pytest.raises(BackendError, match=r"^unknown backend 'coreml'; choose one of auto, "):
        select_backend(bundle, "coreml")


def _backend_or_skip(bundle, name):
    try:
        return select_backend(bundle, name, threads=1).backend
    except BackendError as e:  # tensorrt, onnxruntime-cuda: not on a CPU machine
        pytest.skip(str(e))


@pytest.mark.parametrize("name", OTHERS)
def test_each_backend_embeds_as_onnxruntime_cpu(name, bundle, windows):
    other = _backend_or_skip(bundle, name)
    ref = select_backend(bundle, "onnxruntime-cpu", threads=1).backend
    try:
        assert other.name == name
        a, b = other.embed(windows), ref.embed(windows)
        assert a.shape == b.shape == (len(windows), bundle.manifest.embedding_dim)
        # fp32 graphs: the same numbers but for the order of float sums
        np.testing.assert_allclose(a, b, atol=1e-4)
        assert 1 - np.sum(a * b, axis=1).min() < 1e-5
        # and they tell the windows apart alike (not one constant row each)
        np.testing.assert_allclose(a @ a.T, b @ b.T, atol=1e-4)
        assert np.ptp(b @ b.T) > 1e-3
    finally:
        other.close()
        ref.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", OTHERS)
def test_each_backend_named_in_the_config_gives_the_same_detections(name, bundle, realaudio):
    _backend_or_skip(bundle, name).close()
    path = max(realaudio.glob("*.wav"), key=lambda p: p.stat().st_size)
    out = {}
    for chosen in (name, "onnxruntime-cpu"):
        cfg = EdgeConfig.model_validate(
            {"backend": {"name": chosen, "threads": 1}, "scoring": {"threshold": 0.01}}
        )
        det = Detector(bundle, cfg)
        try:
            assert det.backend.name == chosen and chosen in det.backend_reason
            out[chosen] = [
                (d.window_start_s, d.taxon, round(d.probability, 4)) for d in det.detect_file(path)
            ]
        finally:
            det.close()
    assert len(out["onnxruntime-cpu"]) > 0
    assert out[name] == out["onnxruntime-cpu"]
