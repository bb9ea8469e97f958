#!/usr/bin/env python
"""Mean pairwise cosine of audio and text embeddings at init for two weight inits
(PyTorch default and LeCun normal) on 16 tiny-benchmark species.
"""

import math

import numpy as np
import torch
from torch import nn
from transformers import ClapModel

from animalclap_edge.contracts.frontend import CLAP_UNFUSED
from animalclap_edge.contracts.prompts import Template, render
from training.labelled_audio import crop, open_labelled
from training.model import (
    AudioEncoder,
    LoadedClap,
    build_tokenizer,
    small_clap_config,
    text_embeddings,
)
from training.train import all_prompts

data = open_labelled("tiny")
tok = build_tokenizer(all_prompts(data.catalogue, data.catalogue.ids))  # init only: no eval
items = data.items[::10][:16]
x = torch.from_numpy(np.stack([crop(data.load(it), 144000, None) for it in items]))
prompts = [render(data.catalogue[i], Template.SCI) for i in range(16)]


def mk(kind):
    torch.manual_seed(0)
    m = ClapModel(small_clap_config(len(tok)))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                if kind == "default":
                    mod.reset_parameters()
                elif kind == "fanin":
                    nn.init.normal_(mod.weight, std=1 / math.sqrt(mod.weight[0].numel()))
                    if mod.bias is not None:
                        nn.init.zeros_(mod.bias)
    return m.eval()


for kind in ("default", "fanin"):
    m = mk(kind)
    with torch.no_grad():
        a = AudioEncoder(m, CLAP_UNFUSED)(x).numpy()
    t = text_embeddings(LoadedClap(m, tok, CLAP_UNFUSED, ""), prompts).numpy()
    off = ~np.eye(16, dtype=bool)
    print(
        kind,
        "audio cos",
        (a @ a.T)[off].mean().round(3),
        "text cos",
        (t @ t.T)[off].mean().round(4),
    )
