"""The onnxruntime backend's session options save memory without changing a result."""

import numpy as np
import onnxruntime as ort

from animalclap_edge.audio.decode import read_all
from animalclap_edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from animalclap_edge.bundle import load_bundle
from animalclap_edge.ort_options import session_options


def test_cpu_sessions_drop_the_memory_pattern_and_embed_as_a_default_session(
    tiny_bundle, realaudio
):
    assert session_options().enable_mem_pattern is False
    assert session_options(provider="CUDAExecutionProvider").enable_mem_pattern is True
    bundle = load_bundle(tiny_bundle)
    n = bundle.manifest.window_samples
    x = read_all(sorted(realaudio.glob("*.wav"))[0], bundle.frontend.sample_rate)
    windows = np.resize(x, (3, n)).astype(np.float32)  # repeated if shorter
    ours = OnnxRuntimeBackend(bundle, threads=1)
    plain = ort.InferenceSession(str(bundle.encoder_path), providers=["CPUExecutionProvider"])
    spec = bundle.manifest.audio_encoder
    want = plain.run([spec.output_name], {spec.input_name: windows})[0]
    # batch sizes in turn, as a stream's last partial batch arrives
    for rows in (slice(0, 3), slice(0, 1), slice(1, 3)):
        np.testing.assert_allclose(ours.embed(windows[rows]), want[rows], rtol=1e-5, atol=1e-6)
