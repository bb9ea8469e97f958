"""A run's training data: the split a resumed run goes on with, and the warning for
background names the catalogue does not know."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf

from training.labelled_audio import open_labelled
from training.pretrain.mixed import training_data
from training.splits import ZeroShotSplit, zero_shot_split

from .conftest import tiny_run

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


def _old_rule_split(data, seed: int) -> ZeroShotSplit:
    """The split a run begun before 2026-11-27 saved: drawn as if no background species
    were known, with no heard_unseen in its file."""
    silent = [dataclasses.replace(it, background=()) for it in data.items]
    return zero_shot_split(silent, data.catalogue, seed=seed, val_fraction=0.1)


def _write_old(split: ZeroShotSplit, path) -> None:
    split.to_json(path)
    saved = json.loads(path.read_text())
    del saved["heard_unseen"], saved["left_out_species"]  # not in files of that time
    path.write_text(json.dumps(saved))


@pytest.fixture(scope="module")
def changed_draw(tmp_path_factory):
    """The folder, and a seed for which the old rule held out bb_rare (the new one may not)."""
    root = _folder(tmp_path_factory.mktemp("mixed") / "data")
    data = open_labelled(str(root))
    seed = next(s for s in range(20) if _old_rule_split(data, s).test_species == ["bb_rare"])
    return root, data, seed


def test_a_resumed_run_keeps_the_test_species_it_began_with(changed_draw, tmp_path):
    """Resuming redrew the split under the new background rule: the items' digest (ids
    and species) had not changed, so the run went on with aa_rare held out, which it
    had trained on, and bb_rare, held out before, trained on from then."""
    root, data, seed = changed_draw
    old = _old_rule_split(data, seed)
    _write_old(old, tmp_path / "split.json")
    fresh = training_data(str(root), "zeroshot", seed, 0.1)
    assert fresh.split.test_species == ["aa_rare"]  # what a new draw gives now

    td = training_data(str(root), "zeroshot", seed, 0.1, resumed=tmp_path)
    assert td.split.test_species == ["bb_rare"] and td.split.test == old.test
    # the rule applies to the kept split: bb_host's recordings hear bb_rare
    hosts = [i for i, it in enumerate(data.items) if it.species_id == "bb_host"]
    assert td.split.heard_unseen == hosts and td.split.left_out_species == ["bb_host"]
    assert {it.species_id for it in td.train + td.val} == {"aa_rare", "aa_host"}
    (note,) = [n for n in td.notes if n.startswith("resumed")]
    assert note == (
        "resumed on the split it began with (split.json, its 1 test species kept): 20 "
        "train/val recordings that hear one of its test species moved out (heard_unseen), "
        "leaving 1 seen species with none; a new draw would hold out 1 species it has "
        "trained on"
    )
    # a run begun under the rule resumes on its split with nothing to say
    fresh.split.to_json(tmp_path / "split.json")
    again = training_data(str(root), "zeroshot", seed, 0.1, resumed=tmp_path)
    assert again.split == fresh.split and not [n for n in again.notes if "resumed" in n]


def test_a_resumed_run_replays_the_split_it_began_with(changed_draw, tmp_path):
    """With no run folder to show the init's split, a replay split is drawn from the
    seed: on resume, under the new rule, another one, replaying the species it had held
    out. A finetune's "before" report, run again at a resume, drew it too."""
    from training.pretrain.mixed import replay_split

    root, data, seed = changed_draw
    _write_old(_old_rule_split(data, seed), tmp_path / "replay_split.json")
    drawn, _ = replay_split(data, str(root), None, seed, 0.1)
    assert drawn.test_species == ["aa_rare"]
    kept, note = replay_split(data, str(root), None, seed, 0.1, tmp_path / "replay_split.json")
    assert kept.test_species == ["bb_rare"] and "bb_host" in kept.left_out_species
    assert (
        note
        == f"replay: the zero-shot split this run began with ({tmp_path / 'replay_split.json'})"
    )
    absent, _ = replay_split(data, str(root), None, seed, 0.1, tmp_path / "none.json")
    assert absent == drawn


def test_a_resumed_pretrain_run_does_not_overwrite_its_split(changed_draw, tmp_path):
    """The loop wrote the redrawn split over split.json at every resume."""
    from training.pretrain.loop import pretrain

    root, data, seed = changed_draw
    out = tmp_path / "run"
    cfg = tiny_run(out, "scratch:fast", data=str(root), seed=seed, max_steps=1, batch_size=4)
    cfg = dataclasses.replace(cfg, checkpoint_every=1)
    pretrain(cfg, progress=False)
    # the run as one begun before 2026-11-27 left it (same items, so same digest)
    _write_old(_old_rule_split(data, seed), out / "split.json")
    pretrain(dataclasses.replace(cfg, max_steps=2), progress=False)
    assert ZeroShotSplit.from_json(out / "split.json").test_species == ["bb_rare"]
    log = (out / "train_log.jsonl").read_text()
    assert "resumed on the split it began with (split.json, its 1 test species kept)" in log


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


def test_a_run_from_a_checkpoint_trained_on_the_same_data_keeps_its_split(tmp_path):
    """pretrain --init RUN/final on RUN's data with another seed drew a new split: the
    species it held out had been trained on by the init, and were reported unseen."""
    from training.train import make_split

    run = tmp_path / "a"
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    (run / "pretrain_config.json").write_text(json.dumps({"config": {"data": "tiny"}}))
    tiny = open_labelled("tiny")
    saved = make_split(tiny, "zeroshot", 0, 0.1)
    saved.to_json(run / "split.json")
    assert make_split(tiny, "zeroshot", 3, 0.1).test_species != saved.test_species
    td = training_data("tiny", "zeroshot", 3, 0.1, init=str(run / "final"))
    assert td.split.test_species == saved.test_species and td.split.train == saved.train
    assert any(
        n.startswith(f"split: the zero-shot split {run / 'final'} was trained with")
        for n in td.notes
    )
    other = training_data("tiny", "zeroshot", 3, 0.1, init="laion/clap-htsat-unfused")
    assert other.split.test_species != saved.test_species  # a hub checkpoint: no run to follow


def test_the_run_log_names_catalogue_species_with_no_recordings(real_folder, tmp_path):
    """A regional catalogue of 26 species with recordings of 8 trained 8 on audio; the
    log said '28 species' (8 + 20 replayed) and nothing of the 18 others, which the
    report then counted as '26 in the catalogue'."""
    import shutil

    region = tmp_path / "region"
    shutil.copytree(real_folder, region)
    with open(region / "catalogue.csv", "a", encoding="utf-8") as f:
        f.write(
            "ostric2,Struthio camelus,Common Ostrich,Aves,Struthioniformes,Struthionidae,Struthio\n"
        )
    td = training_data(str(region), "seen", 0, 0.1)
    note = next(n for n in td.notes if "no recordings" in n)
    assert note.startswith("1 of ") and "ostric2" in note
