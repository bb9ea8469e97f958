"""train_curves.png from a run's train_log.jsonl."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.curves import _smooth, plot_curves, read_log


def _log(path, steps, note_first=True, torn_tail=True):
    lines = [json.dumps({"note": "warm-up: 3 steps"})] if note_first else []
    lines += [
        json.dumps(
            {
                "step": s,
                "loss": 3.0 - 0.1 * s,
                "lr": 1e-4,
                "logit_scale": 14.3,
                "data_wait_s": 0.01,
                "step_s": 0.1,
                "samples_per_s": 80.0,
            }
        )
        for s in steps
    ]
    text = "\n".join(lines) + "\n" + ('{"step": 9, "lo' if torn_tail else "")
    path.write_text(text, encoding="utf-8")
    return path


def test_the_log_reads_steps_in_order_without_notes_or_a_torn_last_line(tmp_path):
    """A run killed mid-write leaves half a line; notes are not steps."""
    d = read_log(_log(tmp_path / "train_log.jsonl", [2, 1, 3]))
    assert d["step"].tolist() == [1.0, 2.0, 3.0]
    assert d["loss"] == pytest.approx([2.9, 2.8, 2.7])


def test_the_moving_average_skips_gaps():
    """A step that logged no loss (NaN) neither poisons its neighbours nor counts."""
    y = np.array([1.0, np.nan, 3.0] + [2.0] * 37)  # 40 points: a window of 2
    s = _smooth(y)
    assert np.isfinite(s).all() and s[0] == 1.0 and s[2] == pytest.approx(3.0)


def test_a_run_curves_are_drawn_and_an_empty_log_is_refused(tmp_path, capsys):
    from training.cli import main

    run = tmp_path / "run"
    run.mkdir()
    _log(run / "train_log.jsonl", range(1, 30))
    assert main(["curves", "--run", str(run)]) == 0
    png = run / "train_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out == f"-> {png}\n"
    empty = _log(tmp_path / "empty.jsonl", [], torn_tail=False)
    with pytest.raises(ValueError, match="no step logged yet"):
        plot_curves(empty, tmp_path / "x.png")
    assert main(["curves", "--run", str(tmp_path / "nope")]) == 2
    assert "no train_log.jsonl in it" in capsys.readouterr().err


def test_the_wait_share_reads_either_commands_log(tmp_path):
    """pretrain logs the wait and the whole step; `train` the data time and the compute
    after it, not the whole step."""
    from training.curves import wait_share

    log = tmp_path / "train_log.jsonl"
    rows = [{"step": s, "loss": 2.0, "lr": 1e-4, "data_s": 0.1, "compute_s": 0.3} for s in (1, 2)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert wait_share(read_log(log)) == pytest.approx([0.25, 0.25])
    assert plot_curves(log, tmp_path / "c.png").stat().st_size
    pretrain_log = _log(tmp_path / "p.jsonl", [1, 2])  # data_wait_s 0.01 of step_s 0.1
    assert wait_share(read_log(pretrain_log)) == pytest.approx([0.1, 0.1])
    assert wait_share({"step": np.array([1.0])}) is None


def test_a_panel_whose_series_the_log_lacks_says_so(tmp_path):
    """`train` logs no logit scale or throughput: its train_curves.png had two empty
    panels, with no word of why (found by a researcher)."""
    from training.curves import curves_figure

    lines = [json.dumps({"step": s, "loss": 3.0 - 0.1 * s, "lr": 1e-4}) for s in range(1, 9)]
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fig = curves_figure(read_log(tmp_path / "log.jsonl"), "train")
    said = sorted(t.get_text() for ax in fig.axes for t in ax.texts)
    assert said == ["logit scale: not in this log", "throughput: not in this log"]
    full = curves_figure(read_log(_log(tmp_path / "full.jsonl", range(1, 9))), "pretrain")
    assert not [t for ax in full.axes for t in ax.texts]
