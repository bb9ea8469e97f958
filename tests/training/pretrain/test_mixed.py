"""A run's training data: the warning for background names the catalogue does not know."""

from __future__ import annotations

import csv

import numpy as np
import soundfile as sf

from training.pretrain.mixed import training_data

# Genus Aa: aa_rare (rare) and aa_host. Genus Bb: bb_rare (rare) and bb_host, every
# recording of which has bb_rare calling behind it. Drawn without background species
# (before 2026-11-27) either rare species may be the one test species; drawn with
# them, bb_rare may not: holding it out would leave genus Bb nothing to train on.
SPECIES = {"aa_rare": ("Aa", 3), "aa_host": ("Aa", 20), "bb_rare": ("Bb", 3), "bb_host": ("Bb", 20)}


def _folder(root, also: str = "Bb rare"):
    """A recordings folder of SPECIES (half-second clips, one site-day each); `also`
    is bb_host's background_species cell."""
    root.mkdir()
    with open(root / "catalogue.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "scientific_name", "common_name", "class", "order", "family", "genus"])
        for sid, (genus, _) in SPECIES.items():
            name = f"{genus} {sid.split('_')[1]}"
            w.writerow([sid, name, f"{name} bird", "Aves", "Passeriformes", "Fam", genus])
    clip = np.zeros(24_000, np.float32)
    with open(root / "recordings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "species_id", "site", "date", "background_species"])
        for sid, (_, n) in SPECIES.items():
            for j in range(n):
                sf.write(root / f"{sid}-{j}.wav", clip, 48_000)
                heard = also if sid == "bb_host" else ""
                w.writerow([f"{sid}-{j}.wav", sid, f"{sid}-{j}", "2026-05-01", heard])
    return root


def test_unmatched_background_names_are_a_warning_in_the_run_log(tmp_path):
    """A name no catalogue species has (a typo, an unknown form) let its recordings
    train unremarked; counted only in a prepare's plan."""
    root = _folder(tmp_path / "data", also="['Bb rare', 'Bb rar']")
    td = training_data(str(root), "zeroshot", 0, 0.1)
    assert all(it.background[0] == "bb_rare" for it in td.data.items if it.background)
    (note,) = [n for n in td.notes if n.startswith("warning")]
    assert note.startswith(
        "warning: 1 background species name(s) in 20 recording(s) match no catalogue id, "
        "scientific or common name ('Bb rar'): "
    )
