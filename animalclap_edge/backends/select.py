"""Choose a backend once, and say which and why."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from animalclap_edge.backends.base import BackendError, EmbeddingBackend
from animalclap_edge.bundle import Bundle

# auto tries the first three in this order; onnx-reference runs only when named
BACKENDS = ("auto", "tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "onnx-reference")
__all__ = ["BACKENDS", "BackendChoice", "BackendError", "select_backend"]


@dataclass
class BackendChoice:
    backend: EmbeddingBackend
    reason: str  # one line: why this backend (and why not the ones before it)


def select_backend(
    bundle: Bundle,
    name: str = "auto",
    threads: int = 0,
    precision: str = "fp16",
    max_batch: int = 8,
    engine_cache: str | None = None,
) -> BackendChoice:
    """auto: TensorRT, then onnxruntime CUDA, then onnxruntime CPU; the first that can run.

    TensorRT runs only an engine already built for this bundle on this GPU
    (`animalclap-edge build-engine`): building takes minutes, so it never happens
    behind the user's back at start-up."""
    if name not in BACKENDS:
        near = difflib.get_close_matches(str(name), BACKENDS, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise BackendError(f"unknown backend {name!r}; {hint}choose one of {', '.join(BACKENDS)}")
    if name == "onnx-reference":  # before onnxruntime's import: it needs none
        from animalclap_edge.backends.onnx_reference_backend import OnnxReferenceBackend

        return BackendChoice(OnnxReferenceBackend(bundle), _reason("onnx-reference", []))
    import onnxruntime as ort

    from animalclap_edge.backends.onnxruntime_backend import OnnxRuntimeBackend

    skipped: list[str] = []
    if name in ("auto", "tensorrt"):
        from animalclap_edge.backends import tensorrt_backend as T

        try:
            engine = T.find_engine(bundle, precision, max_batch, engine_cache)
            if engine is None:
                raise T.TensorRTUnavailable(
                    f"no engine built for bundle {bundle.manifest.bundle_id} on this GPU "
                    "(run: animalclap-edge build-engine)"
                )
            return BackendChoice(
                T.TensorRTBackend(bundle, engine, max_batch),
                _reason("tensorrt", skipped) + f" engine {engine.name}",
            )
        except T.TensorRTUnavailable as e:
            if name == "tensorrt":
                raise BackendError(f"backend tensorrt unavailable: {e}") from None
            skipped.append(f"tensorrt: {e}")
    if name in ("auto", "onnxruntime-cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return BackendChoice(
                OnnxRuntimeBackend(bundle, "CUDAExecutionProvider", threads),
                _reason("onnxruntime-cuda", skipped),
            )
        why = "this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu / NVIDIA's Jetson wheel)"
        if name == "onnxruntime-cuda":
            raise BackendError(f"backend onnxruntime-cuda unavailable: {why}")
        skipped.append(f"onnxruntime-cuda: {why}")
    return BackendChoice(
        OnnxRuntimeBackend(bundle, "CPUExecutionProvider", threads),
        _reason("onnxruntime-cpu", skipped),
    )


def _reason(chosen: str, skipped: list[str]) -> str:
    return f"backend {chosen}" + (f" (skipped {'; '.join(skipped)})" if skipped else " (requested)")
