"""What any backend gives is checked before it is scored: a backend of one's own that
returns the wrong thing is named, not turned into detections."""

import numpy as np
import pytest

from animalclap_edge.backends import BackendError, checked_embeddings, select_backend
from animalclap_edge.bundle import load_bundle
from animalclap_edge.config import EdgeConfig
from animalclap_edge.detector import Detector


class Altered:
    """The real onnxruntime backend, its output passed through `change`."""

    name = "altered"

    def __init__(self, inner, change):
        self.inner, self.change, self.closed = inner, change, 0

    def embed(self, windows):
        return self.change(self.inner.embed(windows))

    def close(self):
        self.closed += 1
        self.inner.close()


def _nan_row(e):
    e = e.copy()
    e[0] = np.nan
    return e


@pytest.fixture
def real_file(realaudio):
    return max(realaudio.glob("*.wav"), key=lambda p: p.stat().st_size)


# low enough that the tiny model's windows give detections to compare
LOW = EdgeConfig.model_validate({"scoring": {"threshold": 0.01, "backoff": False}})


def _detector(tiny_bundle, change):
    bundle = load_bundle(tiny_bundle)
    cfg = LOW
    inner = select_backend(bundle, "onnxruntime-cpu", threads=1).backend
    return Detector(bundle, cfg, backend=Altered(inner, change))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda e: 7 * e, "not unit vectors (a norm of 7"),
        (_nan_row, "non-finite embeddings (NaN/Inf) for 1 of"),
        (lambda e: e[:-1], "embeddings of shape"),
        (lambda e: e[:, :-1], "the bundle's embedding_dim"),
    ],
    ids=["norm-7", "nan", "a-row-short", "a-column-short"],
)
def test_a_backend_giving_what_no_backend_may_is_named(tiny_bundle, real_file, change, says):
    det = _detector(tiny_bundle, change)
    try:
        with pytest.raises(BackendError, match="backend altered") as e:
            det.detect_file(real_file)
        assert says in str(e.value)
    finally:
        det.close()


def test_unit_rows_pass_unchanged_and_close_is_idempotent(tiny_bundle, real_file):
    same = _detector(tiny_bundle, lambda e: e)
    plain = Detector(load_bundle(tiny_bundle), LOW)
    try:
        got, want = same.detect_file(real_file), plain.detect_file(real_file)
        assert len(want) > 0 and [(d.taxon, d.probability) for d in got] == [
            (d.taxon, d.probability) for d in want
        ]
    finally:
        same.close()
        same.close()
        plain.close()
    assert same.backend.closed == 1  # a TensorRT engine freed twice would crash


def test_checked_embeddings_accepts_fp16_rounding_and_an_empty_batch():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(4, 8)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    assert checked_embeddings("x", e.astype(np.float16), 4, 8).dtype == np.float32
    assert checked_embeddings("x", np.zeros((0, 8)), 0, 8).shape == (0, 8)
