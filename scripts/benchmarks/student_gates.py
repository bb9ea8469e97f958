"""The export issue's gates on a real teacher: MACs, zero-shot top-1, INT8 agreement.

    python scripts/benchmarks/student_gates.py --run runs/experiments/all-seed0 \
        --data runs/experiments/benchmark/small-seed0 --student runs/student-all0 \
        --real ../shared/realaudio --out runs/student-gates

--run is a training run folder (checkpoint/ and split.json). The student must have
been distilled without the split's test recordings (`animalclap-export distill
--exclude-test-of RUN/split.json`). Prints a table and writes gates.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--student", required=True)
    ap.add_argument("--real", required=True, help="folder of real recordings for INT8 checks")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from animalclap_edge.contracts.prompts import Template
    from export import quantize as Q
    from export.onnx_export import export_audio_encoder
    from export.pipeline import _calibration_and_gate_windows
    from export.student import load_student, macs
    from export.text import species_embeddings
    from training.evaluate import EvalConfig, evaluate
    from training.labelled_audio import open_labelled
    from training.model import AudioEncoder, load_clap
    from training.splits import ZeroShotSplit

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_clap(str(Path(args.run) / "checkpoint"))
    data = open_labelled(args.data)
    split = ZeroShotSplit.from_json(Path(args.run) / "split.json")
    student_fft, meta = load_student(args.student, mode="fft")
    student_dft, _ = load_student(args.student, mode="dft")
    cfg = EvalConfig(maps=False)
    ev_t = evaluate(teacher, data, split, out / "teacher", cfg, progress=False)
    ev_s = evaluate(teacher, data, split, out / "student", cfg, False, audio_encoder=student_fft)
    window = 144_000
    t_macs = macs(AudioEncoder(teacher.model, teacher.frontend, mode="dft"), window)
    s_macs = macs(student_dft, window)

    export_audio_encoder(student_dft, window, out / "student.fp32.onnx", {})
    calib, held = _calibration_and_gate_windows(Path(args.real), window, 48_000, 64, 128)
    Q.to_int8(out / "student.fp32.onnx", out / "student.int8.onnx", calib)
    text = species_embeddings(teacher, data.catalogue, [Template.TAX_COM])
    ref, got = Q.embed(out / "student.fp32.onnx", held), Q.embed(out / "student.int8.onnx", held)
    unit = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    spread = float((unit @ unit.T)[~np.eye(len(unit), dtype=bool)].mean())
    res = {
        "teacher": str(Path(args.run) / "checkpoint"),
        "student": meta["architecture"],
        "distill": meta.get("distill", {}),
        "macs": {"teacher": t_macs, "student": s_macs, "ratio": t_macs / s_macs},
        "zero_shot_unseen_top1": {
            q: {
                "teacher": ev_t["unseen"][q]["top1"],
                "student": ev_s["unseen"][q]["top1"],
                "ratio": ev_s["unseen"][q]["top1"] / max(1e-9, ev_t["unseen"][q]["top1"]),
            }
            for q in ("com", "sci", "tax")
        },
        "int8_vs_fp32_on_real_audio": {
            **Q.agreement(ref, got, text),
            "windows": len(held),
            "fp32_spread": spread,
        },
    }
    (out / "gates.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
