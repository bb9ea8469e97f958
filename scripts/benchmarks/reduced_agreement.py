"""A reduced-precision student against its fp32 graph on real audio: agreement, cosine,
and the margin figures the export gate records (`export.quantize.agreement`).

The windows are the exporter's (`export.pipeline._calibration_and_gate_windows`: 64
calibrate INT8, 128 others are judged, the recordings in a fixed shuffled order), the species text embeddings a bundle's (as it stores them).

    python scripts/benchmarks/reduced_agreement.py --fp32 runs/student-gates-e30/student.fp32.onnx \
        --reduced runs/student-gates-e30/student.int8.onnx --fp16 \
        --bundle runs/bundle-student-fp32 --audio ../shared/realaudio
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from animalclap_edge.bundle import load_bundle
from export import quantize as Q
from export.pipeline import _calibration_and_gate_windows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp32", required=True, help="the student's fp32 ONNX graph")
    ap.add_argument("--reduced", nargs="*", default=[], help="reduced graphs to judge")
    ap.add_argument("--fp16", action="store_true", help="also make and judge the fp16 graph")
    ap.add_argument("--bundle", required=True, help="bundle whose species text embeddings to use")
    ap.add_argument("--audio", default="../shared/realaudio")
    a = ap.parse_args()
    fp32 = Path(a.fp32)
    _, held = _calibration_and_gate_windows(Path(a.audio), 144_000, 48_000, 64, 128)
    text = load_bundle(a.bundle).text_embeddings
    ref = Q.embed(fp32, held)
    with tempfile.TemporaryDirectory() as tmp:
        graphs = [Path(p) for p in a.reduced]
        if a.fp16:
            graphs.append(Q.to_fp16(fp32, Path(tmp) / "student.fp16.onnx"))
        for g in graphs:
            figures = Q.agreement(ref, Q.embed(g, held), text)
            print(g.name, f"({len(held)} windows):", {k: round(v, 5) for k, v in figures.items()})


if __name__ == "__main__":
    main()
