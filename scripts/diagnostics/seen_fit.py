#!/usr/bin/env python
"""How well a trained run ranks the species of its own training and validation
recordings, per query template: top-1 among the whole catalogue and among the seen
species only. A run that scores at chance on recordings it trained on has not left the
ln(batch) plateau, whatever its unseen figures say.

    python scripts/diagnostics/seen_fit.py RUN [RUN ...] [--train-sample 300]

RUN is a run folder of `animalclap-train train` or `experiments` (its checkpoint/,
split.json and train_summary.json). 2026-11-27, the sweep's seed 1 (docs/results.md):
`all` 0.007 / 0.003 / 0.010 (com / sci / tax) on 300 training recordings, `tax` 0.237
on tax prompts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from animalclap_edge.contracts.prompts import Template
from training.embed_audio import embed_items
from training.labelled_audio import open_labelled
from training.metrics import topk_accuracy
from training.model import AudioEncoder, load_clap
from training.splits import ZeroShotSplit
from training.zeroshot import species_prompt_embeddings


def fit(run: Path, train_sample: int) -> list[str]:
    cfg = json.loads((run / "train_summary.json").read_text(encoding="utf-8"))["config"]
    data = open_labelled(cfg["data"])
    split = ZeroShotSplit.from_json(run / "split.json")
    loaded = load_clap(str(run / "checkpoint"))
    loaded.model.eval()
    encoder = AudioEncoder(loaded.model, loaded.frontend, mode="fft")
    window = round(cfg["crop_seconds"] * loaded.frontend.sample_rate)
    rng = np.random.default_rng(0)
    n = min(train_sample, len(split.train))
    seen = sorted(data.catalogue.index(s) for s in split.seen_species)
    pos = {s: k for k, s in enumerate(seen)}
    queries = (Template.COM, Template.SCI, Template.TAX)  # the page's query templates
    texts = {t: species_prompt_embeddings(loaded, data.catalogue, t) for t in queries}
    lines = []
    for name, idx in (("train", rng.choice(split.train, n, replace=False)), ("val", split.val)):
        items = [data.items[i] for i in idx]
        audio = embed_items(encoder, data, items, window, desc=name, progress=False)
        labels = np.array([data.catalogue.index(it.species_id) for it in items])
        for t, text in texts.items():
            whole = topk_accuracy(audio, text, labels)["top1"]
            among_seen = topk_accuracy(audio, text[seen], np.array([pos[x] for x in labels]))
            lines.append(
                f"{run.name:20s} {name:5s} {t.value}: top-1 {whole:.3f} among "
                f"{len(data.catalogue)} species, {among_seen['top1']:.3f} among the "
                f"{len(seen)} seen (n={len(items)})"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--train-sample", type=int, default=300, help="training recordings drawn")
    a = ap.parse_args()
    for run in a.runs:
        if not (run / "checkpoint").is_dir():
            raise SystemExit(f"{run}: no checkpoint/ (give a finished run's folder)")
        print("\n".join(fit(run, a.train_sample)), flush=True)


if __name__ == "__main__":
    main()
