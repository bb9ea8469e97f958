"""train_curves.png of a pretrain or finetune run, from its train_log.jsonl: the loss,
the learning rate, the logit scale and the throughput with the share of each step
spent waiting for data, against the step. Drawn when a run ends and by
`animalclap-train curves --run RUN` while one runs; TensorBoard shows the same live,
where it can be reached."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SMOOTH = 0.05  # the moving average spans this share of the logged steps (at least 1)


def read_log(path: Path) -> dict[str, np.ndarray]:
    """The logged steps' figures, by name, in step order ("step" among them); notes and
    lines a crash cut short are left out."""
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # the last line of a run killed mid-write
                continue
            if isinstance(rec, dict) and "step" in rec:
                rows.append(rec)
    rows.sort(key=lambda r: r["step"])
    keys = {k for r in rows for k, v in r.items() if isinstance(v, int | float)}
    return {k: np.array([float(r.get(k, math.nan)) for r in rows], dtype=np.float64) for k in keys}


def _smooth(y: np.ndarray) -> np.ndarray:
    """Centred moving average over SMOOTH of the points, NaNs skipped."""
    n = max(1, round(len(y) * SMOOTH))
    ok = np.isfinite(y)
    kernel = np.ones(n)
    total = np.convolve(np.where(ok, y, 0.0), kernel, mode="same")
    count = np.convolve(ok.astype(np.float64), kernel, mode="same")
    return np.divide(total, count, out=np.full_like(total, np.nan), where=count > 0)


def wait_share(d: dict[str, np.ndarray]) -> np.ndarray | None:
    """The share of each logged step spent waiting for data (None: not logged).
    pretrain logs the wait and the whole step; train the wait and the compute after it."""
    wait_s, step_s = d.get("data_wait_s", d.get("data_s")), d.get("step_s")
    if step_s is None and "data_s" in d and "compute_s" in d:
        step_s = d["data_s"] + d["compute_s"]
    if wait_s is None or step_s is None:
        return None
    return np.divide(wait_s, step_s, out=np.full_like(step_s, np.nan), where=step_s > 0)


def plot_curves(log: Path, out_png: Path, title: str = "") -> Path:
    """Draw the run's curves; ValueError where the log holds no step yet."""
    d = read_log(log)
    if "step" not in d or not len(d["step"]):
        raise ValueError(f"{log}: no step logged yet: plot once the run has logged one")
    out_png = Path(out_png)
    curves_figure(d, title or str(Path(log).parent)).savefig(out_png, dpi=100, format="png")
    return out_png


def curves_figure(d: dict[str, np.ndarray], title: str) -> Figure:
    """The four panels of a read log (`read_log`); a panel whose series the log lacks
    says so."""
    from matplotlib.figure import Figure  # Figure, not pyplot: no global state touched

    step = d["step"]
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    (loss, lr), (scale, speed) = fig.subplots(2, 2, sharex=True)
    if "loss" in d:
        loss.plot(step, d["loss"], lw=0.6, alpha=0.35, color="C0", label="logged")
        loss.plot(step, _smooth(d["loss"]), lw=1.6, color="C0", label="moving average")
        loss.legend(fontsize=8)
    loss.set_ylabel("contrastive loss")
    if "lr" in d:
        lr.plot(step, d["lr"], color="C1")
    lr.set_ylabel("learning rate")
    scales = [k for k in ("logit_scale", "logit_scale_t") if k in d]
    for key, style in zip(scales, ("-", "--"), strict=False):
        scale.plot(step, d[key], style, color="C2", label=key)
    scale.set_ylabel("logit scale (1 / temperature)")
    if scales:
        scale.legend(fontsize=8)
    if "samples_per_s" in d:
        speed.plot(step, d["samples_per_s"], color="C3")
    speed.set_ylabel("samples / s", color="C3")
    share = wait_share(d)
    if share is not None:
        wait = speed.twinx()
        wait.plot(step, 100 * share, color="C7", lw=0.8)
        wait.set_ylabel("waiting for data, % of the step", color="C7")
        wait.set_ylim(0, 100)
    for ax, drawn, what in (
        (loss, "loss" in d, "loss"),
        (lr, "lr" in d, "learning rate"),
        (scale, bool(scales), "logit scale"),
        (speed, "samples_per_s" in d, "throughput"),
    ):
        if not drawn:  # `train` logs no logit scale or throughput: an empty panel said so
            ax.text(0.5, 0.5, f"{what}: not in this log", ha="center", va="center",
                    transform=ax.transAxes, color="0.45")  # fmt: skip
    for ax in (scale, speed):
        ax.set_xlabel("step")
    fig.suptitle(title, fontsize=10)
    return fig


def draw_run_curves(out: Path, label: str) -> None:
    """OUT/train_curves.png of a run that ended; a figure that cannot be drawn is said,
    and the run, whose model is saved, still succeeds."""
    from training.atomic import write_whole

    try:
        write_whole(
            out / "train_curves.png",
            lambda path: plot_curves(out / "train_log.jsonl", path, f"{label}: {out}"),
        )
    except (ImportError, ValueError, OSError) as e:
        print(f"{label}: train_curves.png not drawn ({e})", flush=True)
