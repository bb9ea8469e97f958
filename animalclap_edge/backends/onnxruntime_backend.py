"""onnxruntime backend for the bundle's audio encoder (CPU or CUDA provider)."""

from __future__ import annotations

import json

import numpy as np

from animalclap_edge.bundle import Bundle, BundleError
from animalclap_edge.contracts import bundle as B
from animalclap_edge.contracts.frontend import FrontendConfig, FrontendMismatch
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
        self._check_graph(bundle, name, spec.input_name, spec.output_name)
        self.input_name, self.output_name = spec.input_name, spec.output_name

    def _check_graph(self, bundle: Bundle, name: str, input_name: str, output_name: str) -> None:
        m = bundle.manifest
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if input_name not in inputs or output_name not in outputs:
            raise BundleError(
                name,
                f"graph has inputs {list(inputs)} / outputs {list(outputs)}, manifest expects {input_name!r} -> {output_name!r}",
            )
        in_shape, out_shape = inputs[input_name].shape, outputs[output_name].shape
        if len(in_shape) != 2 or in_shape[1] != m.window_samples:
            raise BundleError(
                name, f"input shape {in_shape}, manifest window_samples is {m.window_samples}"
            )
        if len(out_shape) != 2 or out_shape[1] != m.embedding_dim:
            raise BundleError(
                name,
                f"embedding size {out_shape[1] if len(out_shape) == 2 else out_shape} does not match manifest embedding_dim {m.embedding_dim}",
            )
        meta = self.session.get_modelmeta().custom_metadata_map
        if B.ONNX_META_FRONTEND not in meta:
            raise BundleError(
                name,
                "no front-end settings in the graph metadata; re-export with animalclap-export",
            )
        try:
            bundle.frontend.require_equal(
                FrontendConfig.from_dict(json.loads(meta[B.ONNX_META_FRONTEND])),
                "manifest vs graph",
            )
        except FrontendMismatch as e:
            raise BundleError(name, str(e)) from None

    def embed(self, windows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(windows, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def close(self) -> None:
        self.session = None
