#!/usr/bin/env python
"""Is the signal in the data? Logistic regression on mean/std log-mel of 600 random
3 s crops of runs/bench-small, class and family, against the majority share.
"""

import numpy as np
from sklearn.linear_model import LogisticRegression

from animalclap_edge.contracts.frontend import log_mel_reference, repeat_pad
from training.labelled_audio import crop, open_labelled

data = open_labelled("runs/bench-small")
rng = np.random.default_rng(0)
idx = rng.choice(len(data.items), 600, replace=False)
X, yc, ys = [], [], []
for i in idx:
    it = data.items[i]
    w = crop(data.load(it), 144000, rng)
    mel = log_mel_reference(repeat_pad(w, 480000))
    X.append(np.concatenate([mel.mean(0), mel.std(0)]))
    sp = data.catalogue[data.catalogue.index(it.species_id)]
    yc.append(sp.class_)
    ys.append(sp.family)
X = np.array(X)
print("rms-ish", X[:3, :5])
for name, y in (("class", yc), ("family", ys)):
    clf = LogisticRegression(max_iter=2000).fit(X[:450], y[:450])
    print(
        name,
        "acc",
        clf.score(X[450:], y[450:]),
        "majority",
        max(np.mean(np.array(y[450:]) == v) for v in set(y)),
    )
