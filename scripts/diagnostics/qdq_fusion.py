"""What onnxruntime makes of a QDQ graph on CPU: operator counts before and after its
graph optimisation (how many convolutions became QLinearConv, and how many
Quantize/DequantizeLinear nodes stay around operators without an int8 kernel).

    python scripts/diagnostics/qdq_fusion.py runs/student-gates-e30/student.int8.onnx
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(a.onnx, so, providers=["CPUExecutionProvider"])
        after = collections.Counter(
            n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node
        )
    before = collections.Counter(n.op_type for n in onnx.load(a.onnx).graph.node)
    for name, counts in (("as exported", before), ("as onnxruntime runs it", after)):
        print(f"{name}: " + ", ".join(f"{op} {n}" for op, n in counts.most_common(12)))


if __name__ == "__main__":
    main()
