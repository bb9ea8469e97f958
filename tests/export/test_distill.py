"""Distillation: crops fixed by the seed, the teacher run once and cached, the student
saved with its figures; a folder of unlabelled real recordings works as audio."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from export.distill import DistillConfig, distill, plan_crops
from export.student import load_student


def test_crop_plan_is_fixed_by_the_seed():
    a = plan_crops([48_000 * 10, 1000, 144_000], 144_000, 3, seed=1)
    assert a == plan_crops([48_000 * 10, 1000, 144_000], 144_000, 3, seed=1)
    assert [c.offset for c in a if c.item == 1] == [0]  # shorter than a window: padded
    assert all(0 <= c.offset <= 48_000 * 10 - 144_000 for c in a if c.item == 0)
    assert a != plan_crops([48_000 * 10, 1000, 144_000], 144_000, 3, seed=2)


def test_distill_caches_the_teacher_and_saves_a_loadable_student(
    pretrain_checkpoint, realaudio, tmp_path, monkeypatch, capsys
):
    cfg = _small(pretrain_checkpoint, realaudio, tmp_path / "s")  # unlabelled: cosine only
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
    with pytest.raises(FileExistsError, match="already holds a distilled student"):
        distill(cfg, progress=False)  # refused before the teacher is even loaded
    assert calls == []
    again = distill(replace(cfg, overwrite=True), progress=False)  # the cache answers
    assert calls == [1]  # only the one-window MAC count; no crop went through the teacher
    assert again["val_mean_cosine"] == figures["val_mean_cosine"]  # the same student
    student, meta = load_student(tmp_path / "s")
    assert meta["distill"]["crops"] == figures["crops"]
    assert json.loads((tmp_path / "s" / "student.json").read_text())["architecture"].startswith(
        "mobilenetv3"
    )
    assert student.frontend.mode == "dft"  # exported with the ONNX-friendly front-end

    # the teacher is known by its weights, wherever it is copied; another is refused
    import shutil

    from export.distill import weights_digest
    from export.pipeline import ExportConfig, make_bundle

    copy = shutil.copytree(pretrain_checkpoint, tmp_path / "teacher-copy")
    assert meta["distill"]["teacher_weights_sha256"] == weights_digest(str(copy))
    other = tmp_path / "other-teacher"
    shutil.copytree(pretrain_checkpoint, other)
    sd = other / "model.safetensors"
    sd.write_bytes(sd.read_bytes()[:-4] + b"\0\0\0\1")  # other weights, same shapes
    with pytest.raises(ValueError, match="was distilled from another teacher"):
        make_bundle(
            ExportConfig(checkpoint=str(other), out=str(tmp_path / "b"), data="tiny",
                         student=str(tmp_path / "s")),
            progress=False,
        )  # fmt: skip
    # a bundle window other than the student's was taken without a word
    import export.pipeline as pipeline

    class Written(Exception):  # stops before the bundle is written: the note came first
        pass

    monkeypatch.setattr(pipeline, "BundleWriter", lambda *a, **k: (_ for _ in ()).throw(Written))
    with pytest.raises(Written):
        make_bundle(
            ExportConfig(checkpoint=str(copy), out=str(tmp_path / "b5"), data="tiny",
                         student=str(tmp_path / "s"), window_seconds=5.0),
            progress=False,
        )  # fmt: skip
    assert (
        f"note: student {tmp_path / 's'} was distilled on 3 s windows; this bundle's are 5 s"
    ) in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"precision": "fp16"}, "precision: 'fp16' is not one of"),
        ({"device": "gpu0"}, "device: 'gpu0' is not a device; use auto, cpu, cuda or cuda:N"),
        ({"device": "meta"}, "only cpu and cuda are supported"),
        ({"teacher_batch": 0}, "teacher_batch must be at least 1"),
        # --window 0 ended in a ZeroDivisionError; 60 trained a student bundle refused
        ({"window_seconds": 0.0}, r"--window 0.0: give seconds above 0 and at most 10"),
        ({"window_seconds": 60.0}, r"--window 60.0: give seconds above 0 and at most 10"),
        # these trained (width 0: 9,344 parameters), or failed after the teacher's cache
        ({"width": 0.0}, r"--width 0.0: give a number above 0"),
        ({"lr": -1.0}, r"--lr -1.0: give a number above 0"),
        ({"kl_weight": -1.0}, r"--kl-weight -1.0: give 0 \(cosine loss only\) or more"),
    ],
)
def test_bad_settings_say_what_is_wrong(change, message, tmp_path):
    cfg = DistillConfig(teacher="t", audio="a", out=str(tmp_path), **change)
    with pytest.raises(ValueError, match=message):
        cfg.check()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"teacher": "RUN"}, "--teacher RUN is a training run folder, not a checkpoint: "),
        ({"audio": "NOPE"}, "--audio NOPE: not a folder and not a benchmark size"),
        ({"exclude_test_of": "NOPE"}, "--exclude-test-of NOPE: no such file"),
    ],
)
def test_bad_paths_are_refused_by_option_before_the_teacher_loads(
    change, message, tmp_path, monkeypatch
):
    import training.model

    def fail(*a, **kw):
        raise AssertionError("the teacher was loaded before the paths were checked")

    monkeypatch.setattr(training.model, "load_clap", fail)
    run, nope = tmp_path / "run", str(tmp_path / "nope")
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "a.wav").write_bytes(b"")
    paths = {"RUN": str(run), "NOPE": nope}
    good = {"teacher": str(run / "final"), "audio": str(tmp_path / "audio")}
    bad = {k: paths[v] for k, v in change.items()}
    cfg = DistillConfig(out=str(tmp_path / "s"), device="cpu", **{**good, **bad})
    with pytest.raises(ValueError) as e:
        distill(cfg, progress=False)
    for k, v in paths.items():
        message = message.replace(k, v)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only host")
def test_asking_for_a_gpu_that_is_not_there_is_refused_and_auto_takes_the_cpu(tmp_path):
    with pytest.raises(ValueError, match="no CUDA GPU is visible; use --device cpu"):
        DistillConfig(teacher="t", audio="a", out=str(tmp_path), device="cuda").check()
    assert DistillConfig(teacher="t", audio="a", out=str(tmp_path)).check().type == "cpu"


def _small(pretrain_checkpoint, realaudio, out, **kw) -> DistillConfig:
    return DistillConfig(
        teacher=str(pretrain_checkpoint),
        audio=str(realaudio),
        out=str(out),
        width=0.25,
        crops_per_recording=1,
        epochs=1,
        batch_size=32,
        threads=1,
        **kw,
    )


def test_a_bf16_teacher_gets_its_own_cache_close_to_the_fp32_one(
    pretrain_checkpoint, realaudio, tmp_path
):
    out = tmp_path / "s"
    fp32 = distill(_small(pretrain_checkpoint, realaudio, out), progress=False)
    bf16 = distill(
        _small(pretrain_checkpoint, realaudio, out, precision="bf16", overwrite=True),
        progress=False,
    )
    assert bf16["precision"] == "bf16" and fp32["precision"] == "fp32"
    assert bf16["device"] == fp32["device"] == "cpu"
    caches = sorted((out / "teacher_cache").glob("teacher-*.npy"))
    assert len(caches) == 2  # bf16 embeddings never answer for fp32 ones
    a, b = (np.load(c).astype(np.float32) for c in caches)
    cos = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99, cos.min()
    assert -1 <= bf16["val_mean_cosine"] <= 1


@pytest.mark.hardware
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_teacher_cache_matches_the_cpu_one(pretrain_checkpoint, tmp_path):
    # the procedural tiny set: GPU hosts get the repository, not shared/realaudio
    cpu = _small(pretrain_checkpoint, "tiny", tmp_path / "cpu", device="cpu")
    gpu = _small(pretrain_checkpoint, "tiny", tmp_path / "gpu", device="cuda")
    assert distill(gpu, progress=False)["device"] == "cuda"
    distill(cpu, progress=False)
    a = np.load(next((tmp_path / "cpu" / "teacher_cache").glob("*.npy"))).astype(np.float32)
    b = np.load(next((tmp_path / "gpu" / "teacher_cache").glob("*.npy"))).astype(np.float32)
    np.testing.assert_allclose(a, b, atol=2e-3)  # fp16 storage, TF32 matmuls on the GPU


def test_windows_decoded_in_workers_train_the_same_student(pretrain_checkpoint, tmp_path):
    """The loader's workers change where windows are decoded, not which or in what order."""
    from export.student import load_student

    here = _small(pretrain_checkpoint, "tiny", tmp_path / "here", workers=0)
    there = _small(pretrain_checkpoint, "tiny", tmp_path / "there", workers=2)
    a, b = distill(here, progress=False), distill(there, progress=False)
    assert a["val_mean_cosine"] == b["val_mean_cosine"]
    wa, wb = load_student(tmp_path / "here")[0], load_student(tmp_path / "there")[0]
    for (k, x), y in zip(wa.state_dict().items(), wb.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
