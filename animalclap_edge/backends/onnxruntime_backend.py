"""onnxruntime backend for the bundle's audio encoder (CPU or CUDA provider)."""

from __future__ import annotations

import numpy as np

from animalclap_edge.backends.graph import check_graph
from animalclap_edge.bundle import Bundle, BundleError
from animalclap_edge.ort_options import session_options


class OnnxRuntimeBackend:
    def __init__(self, bundle: Bundle, provider: str = "CPUExecutionProvider", threads: int = 0):
        import onnxruntime as ort

        so = session_options(threads, provider)
        name = bundle.manifest.audio_encoder.file
        try:
            self.session = ort.InferenceSession(str(bundle.encoder_path), so, providers=[provider])
        except Exception as e:  # onnxruntime raises several unrelated types
            raise BundleError(
                name, f"onnxruntime cannot load it: {str(e).splitlines()[0]}"
            ) from None
        self.name = "onnxruntime-" + ("cuda" if provider.startswith("CUDA") else "cpu")
        spec = bundle.manifest.audio_encoder
        check_graph(
            bundle,
            {i.name: i.shape for i in self.session.get_inputs()},
            {o.name: o.shape for o in self.session.get_outputs()},
            self.session.get_modelmeta().custom_metadata_map,
        )
        self.input_name, self.output_name = spec.input_name, spec.output_name

    def embed(self, windows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(windows, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def close(self) -> None:
        self.session = None
