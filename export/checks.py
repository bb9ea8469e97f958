"""Path arguments checked before any model loads, each refusal naming its option.

Loading a full-size teacher and exporting its graph takes tens of seconds; a typo in
a folder name should cost less than that, and say which option held it.
"""

from __future__ import annotations

import json
from pathlib import Path

from animalclap_edge.contracts import bundle as B
from training.identity import PRETRAIN_RUN, TRAIN_RUN
from training.model import missing_local_path, models_in_run


def run_folder_models(run: Path) -> list[Path] | None:
    """The saved models of a training run folder; None if `run` is not one."""
    if not any((run / m).exists() for m in (*TRAIN_RUN, *PRETRAIN_RUN)):
        return None
    return models_in_run(run)


def check_checkpoint(value: str, option: str = "--checkpoint") -> None:
    """A hub id passes; a local path must be a saved CLAP checkpoint folder."""
    missing = missing_local_path(value)
    if missing:
        raise ValueError(f"{option} {value}: {missing}")
    p = Path(value).expanduser()
    if not p.exists():
        return  # a hub id: only loading can tell
    if not p.is_dir():
        raise ValueError(
            f"{option} {value}: a file; give the checkpoint folder (config.json and weights)"
        )
    if (p / "config.json").is_file():
        return
    if (p / B.MANIFEST).is_file():  # a bundle: name the checkpoint it was made of
        try:
            made_of = json.loads((p / B.MANIFEST).read_text())["producer"]["teacher_checkpoint"]
        except (OSError, ValueError, KeyError, TypeError):
            made_of = None
        raise ValueError(
            f"{option} {value} is a model bundle, not a checkpoint: give the CLAP checkpoint"
            + (f" it was made of, {option} {made_of}" if made_of else " it was made of")
        )
    if (p / "model" / "config.json").is_file():  # RUN/checkpoints/step-N: its model is inside
        raise ValueError(
            f"{option} {value} is a training checkpoint's folder: give {option} {p / 'model'}"
        )
    models = run_folder_models(p)
    if models:
        alts = " or ".join(str(m) for m in models)
        raise ValueError(
            f"{option} {value} is a training run folder, not a checkpoint: give {option} {alts}"
        )
    if models is not None:
        raise ValueError(
            f"{option} {value} is a training run folder with no saved model yet (no "
            "config.json in final/ or checkpoint/, and no complete step in checkpoints/latest)"
        )
    raise ValueError(
        f"{option} {value}: no config.json in it, so not a saved CLAP checkpoint "
        "(a folder written by save_pretrained)"
    )


MAX_WINDOW_S = 10.0  # CLAP's input length: the model hears no more of a longer window


def check_window(seconds: float) -> None:
    """ValueError for a window the encoder cannot take (bundle and distill alike)."""
    if not (0 < seconds <= MAX_WINDOW_S):  # also refuses NaN
        raise ValueError(
            f"--window {seconds}: give seconds above 0 and at most {MAX_WINDOW_S:g} "
            "(CLAP's input length: the model hears no more of a longer window)"
        )


def audio_files(folder: Path) -> list[Path]:
    """Recordings in the folder and its sub-folders, sorted by path: what the exporter
    takes windows from. Hidden folders and files (".Trash-1000", macOS "._x.wav") are
    skipped, as the recorder's folder source skips them."""
    import os

    from animalclap_edge.audio.decode import SUPPORTED_EXTENSIONS

    found = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [
            Path(here) / f
            for f in files
            if not f.startswith(".") and Path(f).suffix.lower() in SUPPORTED_EXTENSIONS
        ]
    return sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(folder).parts)


def check_audio_folder(value: str, option: str) -> int:
    """A folder with recordings in it or its sub-folders; returns how many."""
    from animalclap_edge.audio.decode import SUPPORTED_EXTENSIONS

    p = Path(value).expanduser()
    if not p.exists():
        raise ValueError(f"{option} {value}: no such folder")
    if not p.is_dir():
        raise ValueError(f"{option} {value}: a file; give a folder of recordings")
    n = len(audio_files(p))
    if n == 0:
        subs = sum(1 for q in p.rglob("*") if q.is_dir() and not q.name.startswith("."))
        hidden = sum(1 for q in p.rglob("*") if q.suffix.lower() in SUPPORTED_EXTENSIONS)
        where = f" or its {subs} sub-folder(s)" if subs else ""
        why = (
            f" ({hidden} hidden, which are not read, as the recorder skips them)" if hidden else ""
        )
        raise ValueError(
            f"{option} {value}: no recordings ({', '.join(sorted(SUPPORTED_EXTENSIONS))}) "
            f"in it{where}{why}: give a folder that holds some"
        )
    return n


def check_file(value: str, option: str) -> None:
    p = Path(value).expanduser()
    if not p.exists():
        raise ValueError(f"{option} {value}: no such file")
    if not p.is_file():
        raise ValueError(f"{option} {value}: a folder; give a file")


def check_student(value: str, option: str = "--student") -> None:
    p = Path(value).expanduser()
    if not p.is_dir():
        raise ValueError(
            f"{option} {value}: no such folder (give an `animalclap-export distill` --out)"
        )
    lacking = [f for f in ("student.json", "student.pt") if not (p / f).is_file()]
    if lacking:
        raise ValueError(
            f"{option} {value}: not a student folder (no {' or '.join(lacking)}; "
            "`animalclap-export distill` writes one)"
        )


def named(option: str, value: str, error: Exception) -> ValueError:
    """`error` as "OPTION VALUE: why", without the value said twice: the readers
    (open_labelled, Catalogue.from_csv, ZeroShotSplit) start their messages with it."""
    msg = str(error)
    for said in (f"data {value!r}: ", f"{value}: ", f"{Path(value).name}: "):
        msg = msg.removeprefix(said)
    return ValueError(f"{option} {value}: {msg}")
