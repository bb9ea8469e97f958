"""One entry point from a command-line spec, and the runtime's light imports."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from animalclap_edge.sources import (
    FileSource,
    FolderSource,
    SourceError,
    StdinSource,
    open_source,
)

from .helpers import REALAUDIO, TARGET, a_real_wav, needs_real


@needs_real
def test_open_source_dispatch(tmp_path):
    assert isinstance(open_source(str(REALAUDIO), TARGET), FolderSource)
    cli_kwargs = dict(input_device=None, capture_sample_rate=None, channels=1, block_s=0.5)
    assert isinstance(open_source(str(a_real_wav()), TARGET, **cli_kwargs), FileSource)
    with pytest.raises(SourceError, match="needs its sample rate"):
        open_source("-", TARGET)
    src = open_source("-", TARGET, stdin=io.BytesIO(b"\0\0" * 800), stdin_rate=16000)
    assert isinstance(src, StdinSource)
    (rec,) = src.recordings()
    assert sum(len(b) for b in rec.blocks) == 2400
    live = open_source(
        "-", TARGET, stdin=io.BytesIO(b"\0\0" * 48_000), stdin_rate=48_000, stdin_live=True
    )
    (rec,) = live.recordings()
    assert rec.start_time is not None and rec.clock_note.startswith("wall clock when")
    with pytest.raises(SourceError, match="empty --source"):
        open_source(" ", TARGET)
    with pytest.raises(SourceError) as e:
        open_source(str(tmp_path / "nope.wav"), TARGET)
    assert str(e.value) == (
        f"source '{tmp_path / 'nope.wav'}' not found: give a WAV/FLAC/OGG/MP3 file, "
        "a folder of them, 'mic', '-' for raw PCM on stdin, or a named pipe (mkfifo) with "
        "--stdin-rate"
    )


def test_raw_pcm_from_a_path_that_is_no_pipe_is_refused(tmp_path):
    """`arecord > /run/acl/mic.pcm` before the pipe was made wrote a regular file: `run
    --stdin-rate` then read it as one skipped non-audio file and exited 0, in a loop
    under systemd, while arecord filled /run (found in a deployment trial)."""
    plain = tmp_path / "mic.pcm"
    plain.write_bytes(b"\0" * 9600)
    for path, what in ((plain, "a regular file"), (tmp_path / "gone.pcm", "not found"),
                       (tmp_path, "a folder")):  # fmt: skip
        with pytest.raises(SourceError) as e:
            open_source(str(path), TARGET, stdin_rate=48000)
        assert f"{path} is {what}" in str(e.value) and f"mkfifo {path}" in str(e.value)


def test_runtime_imports_stay_light():
    code = (
        "import sys, animalclap_edge.audio, animalclap_edge.sources; "
        "heavy = {'torch', 'transformers', 'sounddevice'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3]
    )
