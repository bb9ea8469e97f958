"""Training data for a run: one labelled set, or regional recordings with replay.

Regional retraining trains on every regional species (train/val by site-day, no
held-out species) and replays the training side of the global data's zero-shot
split, so the global benchmark's unseen species stay unseen: the split the checkpoint
was trained with where its run folder says so (`training.lineage`), else one drawn
from the run's seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from animalclap_edge.contracts.catalogue import Catalogue
from training.labelled_audio import Item, LabelledSet, open_labelled
from training.prepare.manifest import background_unmatched, unmatched_note
from training.splits import (
    ZeroShotSplit,
    heard_unseen_note,
    resumed_split,
)

REGIONAL, GLOBAL = "r/", "g/"


@dataclass
class TrainingData:
    data: LabelledSet  # what the loop loads from (both sets when replaying)
    train: list[Item]
    val: list[Item]
    is_replay: np.ndarray  # (len(train),) bool
    split: ZeroShotSplit  # of the primary data: written to split.json
    notes: list[str] = field(default_factory=list)  # for the run's log
    replay_split: ZeroShotSplit | None = None  # of the replayed data: replay_split.json

    @property
    def seen_species(self) -> list[str]:
        """The species the run trains or validates on (sorted ids), replay included: the
        only ones whose names a from-scratch tokenizer may be fitted on."""
        return sorted({it.species_id for it in self.train + self.val})


def background_notes(data: LabelledSet) -> list[str]:
    """The run log's warning of background names `data`'s catalogue does not know."""
    note = unmatched_note(background_unmatched(data.items, data.catalogue))
    return [note] if note else []


def silent_species_notes(data: LabelledSet) -> list[str]:
    """The run log's line on catalogue species no recording is labelled with: they are
    not trained on audio, only scored from their names (zero-shot) once exported."""
    heard = {it.species_id for it in data.items}
    silent = [sp.id for sp in data.catalogue if sp.id not in heard]
    if not silent:
        return []
    shown = ", ".join(silent[:10]) + (f" and {len(silent) - 10} more" if len(silent) > 10 else "")
    return [
        f"{len(silent)} of {len(data.catalogue)} catalogue species have no recordings, so "
        f"are not trained on audio (a bundle scores them from their names alone): {shown}"
    ]


def merge(regional: LabelledSet, global_: LabelledSet) -> LabelledSet:
    """One set over both: regional species first, global species the regional
    catalogue lacks after; item ids prefixed so loading goes to the right source."""
    species = list(regional.catalogue)
    known = {sp.id: sp for sp in species}
    by_name = {sp.scientific_name.casefold(): sp.id for sp in species}
    for sp in global_.catalogue:
        # two species under one id would train as one: the global species' recordings
        # replayed under the regional species' names
        mine = known.get(sp.id)
        if mine is not None and mine.scientific_name.casefold() != sp.scientific_name.casefold():
            raise ValueError(
                f"replay: {sp.id!r} is {mine.scientific_name} in {regional.name} and "
                f"{sp.scientific_name} in {global_.name}: give the regional species an id "
                f"the replayed data does not use"
            )
    for sp in global_.catalogue:  # one species under two ids would train as two
        mine_id = by_name.get(sp.scientific_name.casefold())
        if mine_id is not None and mine_id != sp.id:
            raise ValueError(
                f"replay: {regional.name} calls {sp.scientific_name} {mine_id!r}, {global_.name} "
                f"{sp.id!r}: use {sp.id!r} in the regional catalogue and recordings, so the "
                "species is one species in training and in the report"
            )
    species += [sp for sp in global_.catalogue if sp.id not in known]
    items = [replace(it, id=REGIONAL + it.id, group=REGIONAL + it.group) for it in regional.items]
    items += [replace(it, id=GLOBAL + it.id, group=GLOBAL + it.group) for it in global_.items]

    def source(it: Item) -> tuple[LabelledSet, Item]:
        return (regional if it.id.startswith(REGIONAL) else global_), replace(it, id=it.id[2:])

    def load(it: Item):
        data, own = source(it)
        return data.load(own)

    def file_of(it: Item):
        data, own = source(it)
        return data.file_of(own) if data.file_of else None

    if regional.sample_rate != global_.sample_rate:  # one rate for the crops of both
        raise ValueError(
            f"replay: {regional.name} is opened at {regional.sample_rate} Hz and "
            f"{global_.name} at {global_.sample_rate} Hz; open both at one rate"
        )
    return LabelledSet(
        name=f"{regional.name} + replay of {global_.name}",
        catalogue=Catalogue(species, source="merged"),
        items=items,
        load=load,
        traits=None,
        schema=regional.schema,
        # Crops read only their frames from either source's files (before, a replayed
        # crop decoded its whole recording: a 60 s record for a 10 s crop).
        file_of=file_of,
        sample_rate=regional.sample_rate,
        loads_files=regional.loads_files and global_.loads_files,
    )


def replay_split(
    old: LabelledSet,
    replay: str,
    init: str | None,
    seed: int,
    val_fraction: float,
    kept: Path | None = None,
) -> tuple[ZeroShotSplit, str]:
    """The replayed data's zero-shot split, and a note of where it came from: `kept`, the
    replay_split.json of the run being resumed, where there is one (a new draw could
    hold out species it has already replayed); else the split `init` was trained with
    when its run folder shows it trained on `replay`, so that its unseen species are
    neither replayed nor reported as unseen after training on them; else a fresh one
    from (seed, val_fraction)."""
    from training.lineage import inherited_split, split_as_saved
    from training.train import make_split, replay_advice

    found: tuple[ZeroShotSplit, str] | None
    if kept is not None and kept.is_file():
        found = split_as_saved(kept, replay, old.items, seed, val_fraction, "this run began with")
    else:
        found = inherited_split(init, replay, old.items, seed, val_fraction)
    if found is not None:
        return found[0], f"replay: {found[1]}"
    split = make_split(old, "zeroshot", seed, val_fraction, advice=replay_advice(replay))
    return split, (
        f"replay: no run folder shows {init} trained on {replay}, so its zero-shot split "
        f"is drawn from seed {seed}, val_fraction {val_fraction}; if the checkpoint was "
        "trained on it with another split, some 'unseen' species were seen"
    )


def training_data(
    data: str,
    split_kind: str,
    seed: int,
    val_fraction: float,
    replay: str | None = None,
    init: str | None = None,
    resumed: Path | None = None,
) -> TrainingData:
    """The run's data; with `replay`, the checkpoint `init`'s global data joins it.
    `resumed`: the folder of a run being resumed, whose split.json (and
    replay_split.json) it goes on with rather than a new draw (`resumed_split`)."""
    from training.lineage import init_split
    from training.pretrain.loop import refuse_changed_data
    from training.train import make_split

    primary = open_labelled(data)
    notes = background_notes(primary) + silent_species_notes(primary)
    split = make_split(primary, split_kind, seed, val_fraction)
    if resumed is not None and (resumed / "split.json").is_file():
        refuse_changed_data(resumed, data, split)  # the saved indices are for these items
        saved = ZeroShotSplit.from_json(resumed / "split.json")
        split, note = resumed_split(saved, primary.items, fresh=split)
        notes += [note] if note else []
    elif split_kind == "zeroshot" and (found := init_split(init, data, primary.items, split)):
        split, note = found
        notes.append(note)
    train = [primary.items[i] for i in split.train]
    val = [primary.items[i] for i in split.val]
    if heard := heard_unseen_note(split):  # the run's log says what it left out
        notes.append(heard)
    if not replay:
        return TrainingData(primary, train, val, np.zeros(len(train), bool), split, notes)
    old = open_labelled(replay)
    notes += [f"replay: {n}" for n in background_notes(old)]
    kept = resumed / "replay_split.json" if resumed is not None else None
    old_split, note = replay_split(old, replay, init, seed, val_fraction, kept)
    notes.append(note)
    if heard := heard_unseen_note(old_split):
        notes.append(f"replay: {heard}")
    merged = merge(primary, old)
    train = [replace(it, id=REGIONAL + it.id, group=REGIONAL + it.group) for it in train]
    val = [replace(it, id=REGIONAL + it.id, group=REGIONAL + it.group) for it in val]
    old_train = [
        replace(old.items[i], id=GLOBAL + old.items[i].id, group=GLOBAL + old.items[i].group)
        for i in old_split.train
    ]
    mask = np.r_[np.zeros(len(train), bool), np.ones(len(old_train), bool)]
    return TrainingData(merged, train + old_train, val, mask, split, notes, old_split)
