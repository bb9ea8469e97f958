#!/usr/bin/env python
"""Can the from-scratch HTS-AT learn a label supervised? Cross-entropy on a linear head.

Usage: python scripts/diagnostics/supervised_audio_probe.py '{"patch_size": 16, ...}' class_ 150 5e-4
(audio-config overrides as JSON, taxon attribute, steps, lr). Needs runs/bench-small
(animalclap-train benchmark --size small --out runs/bench-small). Prints loss and accuracy per 25 steps.
"""

import json
import statistics as s
import sys
import time

import numpy as np
import torch

from animalclap_edge.contracts.frontend import CLAP_UNFUSED
from training.labelled_audio import crop, open_labelled
from training.model import AudioEncoder, new_clap_model, small_clap_config
from training.sampling import balanced_epoch

torch.manual_seed(0)
over = json.loads(sys.argv[1])
level = sys.argv[2]
steps = int(sys.argv[3])
lr = float(sys.argv[4])
data = open_labelled("runs/bench-small")
cfg = small_clap_config(100)
for k, v in over.items():
    setattr(cfg.audio_config, k, v)
m = new_clap_model(cfg)
enc = AudioEncoder(m, CLAP_UNFUSED, mode="fft")


def lab(it):
    return getattr(data.catalogue[data.catalogue.index(it.species_id)], level)


labels = sorted({lab(it) for it in data.items})
idx = {name: i for i, name in enumerate(labels)}
head = torch.nn.Linear(512, len(labels))
opt = torch.optim.AdamW(
    list(m.audio_model.parameters())
    + list(m.audio_projection.parameters())
    + list(head.parameters()),
    lr=lr,
)
plan = balanced_epoch([it.species_id for it in data.items], 30, 0, 0)
rng = np.random.default_rng(0)
cache = {}


def load(it):
    if it.id not in cache:
        cache[it.id] = data.load(it)
    return cache[it.id]


print("params", sum(p.numel() for p in m.audio_model.parameters()) / 1e6, "M")
losses, accs = [], []
t0 = time.time()
for step in range(steps):
    items = [data.items[i] for i in plan[step * 16 : (step + 1) * 16]]
    x = torch.from_numpy(np.stack([crop(load(it), 144000, rng) for it in items]))
    y = torch.tensor([idx[lab(it)] for it in items])
    logits = head(enc(x)) * 10
    loss = torch.nn.functional.cross_entropy(logits, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
    accs.append((logits.argmax(1) == y).float().mean().item())
    if step % 25 == 24:
        print(
            step + 1,
            round(s.mean(losses[-25:]), 3),
            round(s.mean(accs[-25:]), 3),
            round(time.time() - t0),
            flush=True,
        )
