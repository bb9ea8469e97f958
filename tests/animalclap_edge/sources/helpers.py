"""Real recordings and test tones the source tests share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REALAUDIO = Path(__file__).resolve().parents[3] / ".." / "shared" / "realaudio"
needs_real = pytest.mark.skipif(
    not REALAUDIO.is_dir(), reason=f"real audio folder {REALAUDIO} not present"
)
TARGET = 48_000


def sine(sr: int, seconds: float, hz: float = 1000.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(round(sr * seconds)) / sr)).astype(np.float32)


def peak_hz(y: np.ndarray, sr: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(y * np.hanning(len(y))))) * sr / len(y))


def a_real_wav() -> Path:
    return min(
        (p for p in REALAUDIO.glob("*.wav") if sf.info(str(p)).samplerate == 44100),
        key=lambda p: p.stat().st_size,
    )
