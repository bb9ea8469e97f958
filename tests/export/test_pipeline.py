"""make_bundle refuses bad paths and too little audio before the model loads, and its
one-line errors name the option that was wrong."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import export.pipeline as P
from export.pipeline import ExportConfig, audio_needed, make_bundle
from export.quantize import CalibrationError


@pytest.fixture()
def never_load(monkeypatch):
    def fail(*a, **kw):
        raise AssertionError("the model was loaded before the request was checked")

    monkeypatch.setattr(P, "load_clap", fail)


def _recordings(folder: Path, n: int) -> str:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        sf.write(folder / f"r{i:03d}.wav", 0.1 * rng.standard_normal(9600), 48_000)
    return str(folder)


@pytest.fixture()
def request_parts(tmp_path, tiny_catalogue) -> dict:
    """A request whose every path is fine, without a real model (it never loads)."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    student = tmp_path / "student"
    student.mkdir()
    for f in ("student.json", "student.pt"):
        (student / f).write_text("")
    tiny_catalogue.to_csv(tmp_path / "species.csv")
    return {
        "checkpoint": str(ckpt),
        "out": str(tmp_path / "b"),
        "catalogue": str(tmp_path / "species.csv"),
        "parity_audio": _recordings(tmp_path / "audio", 3),
        "student": str(student),
    }


def _refusal(parts: dict, error=ValueError, **change) -> str:
    with pytest.raises(error) as e:
        make_bundle(ExportConfig(**{**parts, **change}), progress=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert not Path(parts["out"]).exists()
    return msg


@pytest.mark.parametrize(
    ("option", "field", "bad"),
    [
        ("--parity-audio", "parity_audio", "missing"),
        ("--parity-audio", "parity_audio", "file"),
        ("--calibration-audio", "calibration_audio", "missing"),
        ("--catalogue", "catalogue", "missing"),
        ("--catalogue", "catalogue", "malformed"),
        ("--student", "student", "missing"),
        ("--checkpoint", "checkpoint", "missing"),
        ("--data", "data", "unknown"),
    ],
)
def test_a_bad_path_is_refused_by_its_option_name_before_the_model_loads(
    option, field, bad, request_parts, tmp_path, never_load
):
    value = {
        "missing": str(tmp_path / "not-here"),
        "file": request_parts["catalogue"],
        "malformed": str(tmp_path / "bad.csv"),
        "unknown": "no-such-benchmark-size",
    }[bad]
    (tmp_path / "bad.csv").write_text("id,scientific_name\na,Aa bb\n")
    change = {field: value}
    if field == "calibration_audio":
        change["precision"] = "fp16"
    msg = _refusal(request_parts, **change)
    assert msg.startswith(f"{option} "), msg
    assert "calibration" not in msg or field == "calibration_audio"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"window_seconds": 0.0}, "--window 0.0: give seconds above 0 and at most 10"),
        ({"window_seconds": -1.0}, "--window -1.0: give seconds above 0"),
        ({"window_seconds": float("nan")}, "--window nan: give seconds above 0"),
        # past CLAP's 10 s input the end of every window was silently never heard
        ({"window_seconds": 12.0}, "--window 12.0: give seconds above 0 and at most 10"),
        ({"default_threshold": 1.5}, "--threshold 1.5: give a probability, 0 to 1"),
        ({"default_threshold": float("nan")}, "--threshold nan: give a probability"),
    ],
)
def test_a_window_or_threshold_out_of_range_is_refused_before_the_model_loads(
    change, message, request_parts, never_load
):
    assert _refusal(request_parts, **change).startswith(message)


def test_a_run_folder_as_checkpoint_names_the_model_to_use(request_parts, tmp_path, never_load):
    run = tmp_path / "runs" / "demo"
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    msg = _refusal(request_parts, checkpoint=str(run))
    assert msg == (
        f"--checkpoint {run} is a training run folder, not a checkpoint: "
        f"give --checkpoint {run / 'final'}"
    )


def test_the_audio_each_precision_needs():
    assert audio_needed("int8") == (64, 16)  # docs/export.md: int8 >= 80 recordings
    assert audio_needed("fp16") == (0, 16)  # fp16 >= 16
    assert audio_needed("fp32") == (0, 0)
    assert audio_needed("int8", calibration_windows=32) == (32, 16)


@pytest.mark.parametrize(
    ("precision", "have", "needs"),
    [
        ("int8", 79, "int8 needs 80 windows (64 to calibrate + 16 to check)"),
        ("fp16", 15, "fp16 needs 16 windows (16 to check)"),
    ],
)
def test_too_few_recordings_are_refused_with_the_counts_and_seconds(
    precision, have, needs, request_parts, tmp_path, never_load
):
    audio = _recordings(tmp_path / "calib", have)
    msg = _refusal(request_parts, CalibrationError, precision=precision, calibration_audio=audio)
    need = int(needs.split()[2])
    assert msg.startswith(f"--calibration-audio {audio}: found {have} recordings, {needs}")
    assert "one 3 s window from the start of each recording" in msg
    assert f"give at least {need} recordings ({need * 3} s of audio in {need} windows)" in msg
    assert "sub-folders" not in msg


def test_recordings_in_sub_folders_are_read_and_counted(request_parts, tmp_path, monkeypatch):
    """A card's files sit in folders by day: 5 at the top and 20 below said only "found
    5 recordings" (then: "20 more in its sub-folders are not read"); all 25 are read now,
    as `bundle --data` and the recorder read sub-folders, and fp16's 16 are there."""

    class Loaded(Exception):
        pass

    def loaded(*a, **kw):
        raise Loaded

    monkeypatch.setattr(P, "load_clap", loaded)
    audio = _recordings(tmp_path / "calib", 5)
    _recordings(Path(audio) / "2024-05-01", 20)
    with pytest.raises(Loaded):
        make_bundle(
            ExportConfig(**request_parts, precision="fp16", calibration_audio=audio),
            progress=False,
        )


def test_too_little_calibration_audio_counts_its_sub_folders(request_parts, tmp_path, never_load):
    """5 at the top and 5 in a day folder are 10 recordings found, not 5."""
    audio = _recordings(tmp_path / "calib", 5)
    _recordings(Path(audio) / "2024-05-01", 5)
    msg = _refusal(request_parts, CalibrationError, precision="fp16", calibration_audio=audio)
    assert msg.startswith(f"--calibration-audio {audio}: found 10 recordings, fp16 needs 16")
    assert "not read" not in msg


def test_the_parity_audio_fallback_is_named_when_it_is_too_little(
    request_parts, tmp_path, never_load
):
    msg = _refusal(request_parts, CalibrationError, precision="fp16", window_seconds=2.5)
    parity = request_parts["parity_audio"]
    assert msg.startswith(f"--parity-audio {parity} (no --calibration-audio given): found 3 ")
    assert "(40 s of audio in 16 windows)" in msg


def test_enough_recordings_get_past_the_checks(request_parts, tmp_path, monkeypatch):
    """The checks refuse no more than they must: 80 recordings reach the model."""

    class Loaded(Exception):
        pass

    def loaded(*a, **kw):
        raise Loaded

    monkeypatch.setattr(P, "load_clap", loaded)
    audio = _recordings(tmp_path / "calib", 80)
    with pytest.raises(Loaded):
        make_bundle(
            ExportConfig(**request_parts, precision="int8", calibration_audio=audio),
            progress=False,
        )


@pytest.mark.parametrize("rows", [0, 1])
def test_a_catalogue_of_fewer_than_two_species_is_refused_before_the_model_loads(
    rows, request_parts, tmp_path, tiny_catalogue, never_load
):
    """A header-only catalogue made a 0-species bundle the recorder then refused with
    "no species left after include/exclude/regions filters"; a one-species one (a team
    after lions only) made a bundle that logs every window as that species at p=1.00:
    the softmax over one species is 1 whatever the sound."""
    path = tmp_path / f"{rows}.csv"
    tiny_catalogue.subset(tiny_catalogue.ids[:rows]).to_csv(path)
    msg = _refusal({**request_parts, "student": None}, catalogue=str(path))
    assert f"--catalogue {path}: {rows} species" in msg
