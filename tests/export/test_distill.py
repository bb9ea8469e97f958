"""Distillation: crops fixed by the seed, the teacher run once and cached, the student
saved with its figures; a folder of unlabelled real recordings works as audio."""

import json

import numpy as np

from export.distill import DistillConfig, distill, plan_crops
from export.student import load_student


def test_crop_plan_is_fixed_by_the_seed():
    a = plan_crops([48_000 * 10, 1000, 144_000], 144_000, 3, seed=1)
    assert a == plan_crops([48_000 * 10, 1000, 144_000], 144_000, 3, seed=1)
    assert [c.offset for c in a if c.item == 1] == [0]  # shorter than a window: padded
    assert all(0 <= c.offset <= 48_000 * 10 - 144_000 for c in a if c.item == 0)
    assert a != plan_crops([48_000 * 10, 1000, 144_000], 144_000, 3, seed=2)


def test_distill_caches_the_teacher_and_saves_a_loadable_student(
    pretrain_checkpoint, realaudio, tmp_path, monkeypatch
):
    cfg = DistillConfig(
        teacher=str(pretrain_checkpoint),
        audio=str(realaudio),  # unlabelled folder: no KL term, cosine only
        out=str(tmp_path / "s"),
        width=0.25,
        crops_per_recording=1,
        epochs=1,
        batch_size=32,
        threads=1,
    )
    figures = distill(cfg, progress=False)
    assert figures["crops"] > 150 and figures["val_crops"] > 0
    assert -1 <= figures["val_mean_cosine"] <= 1 and "val_top1_agreement" not in figures
    assert figures["student_macs_per_window"] < figures["teacher_macs_per_window"]
    cached = list((tmp_path / "s" / "teacher_cache").glob("teacher-*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).dtype == np.float16

    import training.model as model

    calls = []
    real = model.AudioEncoder.forward
    monkeypatch.setattr(
        model.AudioEncoder, "forward", lambda self, w: calls.append(len(w)) or real(self, w)
    )
    distill(cfg, progress=False)  # same teacher and crops: the cache answers
    assert calls == [1]  # only the one-window MAC count; no crop went through the teacher
    student, meta = load_student(tmp_path / "s")
    assert meta["distill"]["crops"] == figures["crops"]
    assert json.loads((tmp_path / "s" / "student.json").read_text())["architecture"].startswith(
        "mobilenetv3"
    )
    assert student.frontend.mode == "dft"  # exported with the ONNX-friendly front-end
