"""Calibration and gate windows both span the folder, not its alphabetical halves."""

from pathlib import Path

import numpy as np
import soundfile as sf

from export.pipeline import _calibration_and_gate_windows

SR = 48_000


def _folder(tmp_path: Path) -> Path:
    # a folder named by species, as field folders are: the "a_" half quiet, "z_" half loud
    d = tmp_path / "audio"
    d.mkdir()
    t = np.arange(SR // 2) / SR
    for i in range(20):
        sf.write(d / f"a_bat_{i:02d}.wav", 0.01 * np.sin(2 * np.pi * 300 * t), SR)
        sf.write(d / f"z_whale_{i:02d}.wav", 0.9 * np.sin(2 * np.pi * 900 * t), SR)
    return d


def test_calibration_and_gates_each_hear_both_halves_of_a_sorted_folder(tmp_path):
    d = _folder(tmp_path)
    calib, held = _calibration_and_gate_windows(d, SR, SR, n_calib=16, n_gate=24, option="x")
    assert len(calib) == 16 and len(held) == 24
    loud = lambda w: np.abs(w).max(axis=1) > 0.5  # noqa: E731
    # before: calibration was the first 16 files by name, all quiet "a_" ones; the
    # int8 ranges never saw the loud half the gates were then judged on
    assert 0 < loud(calib).sum() < len(calib)
    assert 0 < loud(held).sum() < len(held)
    # deterministic: the same folder gives the same split
    again, held2 = _calibration_and_gate_windows(d, SR, SR, n_calib=16, n_gate=24, option="x")
    assert np.array_equal(again, calib) and np.array_equal(held2, held)
