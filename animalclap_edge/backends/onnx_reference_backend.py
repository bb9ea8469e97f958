"""The bundle's encoder graph run by onnx's reference evaluator (numpy, no onnxruntime).

Slow, and never chosen by `auto`: a second, independent implementation of every
operator in the graph, against which the test that all backends agree checks
onnxruntime (and any backend a contributor adds). `backend.name: onnx-reference`.
"""

from __future__ import annotations

import numpy as np

from animalclap_edge.backends.base import BackendError
from animalclap_edge.backends.graph import check_graph
from animalclap_edge.bundle import Bundle, BundleError


def _shape(value_info) -> list[int | str | None]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]


class OnnxReferenceBackend:
    name = "onnx-reference"

    def __init__(self, bundle: Bundle):
        try:
            import onnx
            from onnx.reference import ReferenceEvaluator
        except ImportError as e:
            raise BackendError(
                f"backend onnx-reference unavailable: the onnx package is not importable "
                f"({e}); pip install 'animalclap-edge[reference]'"
            ) from None
        try:
            model = onnx.load(str(bundle.encoder_path))
        except Exception as e:  # protobuf's DecodeError and others
            raise BundleError(
                bundle.manifest.audio_encoder.file, f"onnx cannot load it: {e}"
            ) from None
        check_graph(
            bundle,
            {i.name: _shape(i) for i in model.graph.input},
            {o.name: _shape(o) for o in model.graph.output},
            {p.key: p.value for p in model.metadata_props},
        )
        spec = bundle.manifest.audio_encoder
        self.input_name, self.output_name = spec.input_name, spec.output_name
        self._evaluator: ReferenceEvaluator | None = ReferenceEvaluator(model)

    def embed(self, windows: np.ndarray) -> np.ndarray:
        if self._evaluator is None:
            raise BackendError("backend onnx-reference was closed")
        x = np.ascontiguousarray(windows, dtype=np.float32)
        (y,) = self._evaluator.run([self.output_name], {self.input_name: x})
        return np.asarray(y, dtype=np.float32)

    def close(self) -> None:
        self._evaluator = None
