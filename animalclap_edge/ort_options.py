"""onnxruntime session options for the encoder. Outside the backends package, whose
imports load the bundle and pydantic, so that a graph timed alone (`bench --onnx`)
gets the runtime's options and nothing more."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime


def session_options(
    threads: int = 0, provider: str = "CPUExecutionProvider"
) -> onnxruntime.SessionOptions:
    """The encoder session's options. On CPU without onnxruntime's memory pattern: the
    pattern preallocates one block per input shape on top of the arena; without it the
    arena reuses freed chunks. Student encoder, 1 thread: running memory +23.5 -> +18.4
    MB at batch 4 and +39 -> +28 MB at batch 8, same ms per window (docs/runtime-bench.md)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if provider == "CPUExecutionProvider":
        so.enable_mem_pattern = False
    return so
