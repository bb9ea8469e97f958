"""Real audio for the fault tests: the orca calls of shared/realaudio, laid end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

SR = 48_000


@pytest.fixture(scope="session")
def orca_calls(realaudio: Path) -> np.ndarray:
    """(samples,) float32 at 48 kHz: every srkw*.wav, decoded once per session."""
    from animalclap_edge.audio.decode import read_all

    return np.concatenate([read_all(f, SR) for f in sorted(realaudio.glob("srkw*.wav"))])


@pytest.fixture()
def orca_folder(orca_calls: np.ndarray) -> Callable[[Path, int], Path]:
    """make(dst, n): n 16-bit WAV recordings of 30 s each, cut from the calls in turn."""
    import soundfile as sf

    def make(dst: Path, n: int) -> Path:
        dst.mkdir()
        per = 30 * SR
        for i in range(n):
            start = (i * per) % max(1, len(orca_calls) - per)
            sf.write(dst / f"rec{i:03d}.wav", orca_calls[start : start + per], SR, subtype="PCM_16")
        return dst

    return make


@pytest.fixture()
def orca_pcm(orca_calls: np.ndarray) -> Callable[[float], bytes]:
    """make(seconds): the first `seconds` of the calls as raw s16le mono PCM at 48 kHz."""

    def make(seconds: float) -> bytes:
        x = orca_calls[: round(seconds * SR)]
        return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()

    return make
