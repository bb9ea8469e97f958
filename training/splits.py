"""The paper's zero-shot evaluation split: unseen rare test species, grouped train/val.

Rules
-----
- Test species are unseen: every recording of a test species goes to test, none to
  train or validation.
- A test species has fewer than `max_test_recordings` (15) recordings: rare species
  are the ones a zero-shot model is for, and holding them out costs training little.
- A test species' genus, and hence its family, keeps at least one training species
  (a seen species with recordings on the train side). Zero-shot transfer is then
  measured within known genera and families, as in the paper, rather than to taxa
  the model has never heard at all.
- The seen species' recordings are split train/validation (9:1 by default) with
  `group_split`, so the same-day recordings of a site are never on both sides.
- An unseen species is not heard in training either: a seen species' recording with
  a test species among its background species (`Item.background`: the benchmark's
  second caller, a manifest's background_species/also column) goes to neither train
  nor validation. Those recordings are listed in `heard_unseen` and counted in the
  summary; a seen species left with none is listed in `left_out_species`. The genus
  rule counts training recordings after this exclusion.

Selection (deterministic in `seed`)
-----------------------------------
Target: round(test_fraction * n_species), n_species counting the species that have
recordings (a catalogue species without recordings can be neither trained on nor
tested, so it is left out of both lists). Candidates: species with
0 < recordings < max_test_recordings whose genus would still keep a training species
if they were picked. Picks go round-robin over the classes (sorted names); within a
class the order is the one with the fewest picks so far that still has a candidate
(ties broken by the seeded generator), and the species is a seeded-random candidate
of that order. Every pick re-checks the genus rule against the picks so far, so the
rule holds for the final set. Picking stops at the target or when no class has a
candidate left; the split then records "eligible species exhausted".

Validation membership comes from `group_split`, which hashes each group with the
seed, so it does not depend on which species are picked. Which train-side recordings
remain does (a pick removes the recordings that hear it), so each pick is checked
against the train-side recordings left after it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from animalclap_edge.contracts.catalogue import Catalogue, Species
from training.labelled_audio import Item
from training.sampling import group_split

FORMAT = "animalclap-zero-shot-split"
FORMAT_VERSION = 1
TARGET_REACHED = "target reached"
EXHAUSTED = "eligible species exhausted"


def items_digest(items: Sequence[Item]) -> str:
    """Fingerprint of the item list (ids, species, order): split indices only mean
    something against the very list they were made from."""
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.id}\t{it.species_id}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class ZeroShotSplit:
    train: list[int]  # indices into items
    val: list[int]
    test: list[int]
    test_species: list[str]  # sorted ids
    seen_species: list[str]  # sorted ids: species with recordings in train or val
    target_test_species: int = 0
    stop_reason: str = ""  # TARGET_REACHED or EXHAUSTED
    params: dict[str, Any] = field(default_factory=dict)  # seed and fractions used
    items_digest: str = ""  # items_digest() of the list the indices refer to
    # seen species' recordings in which a test species calls in the background: in no side
    heard_unseen: list[int] = field(default_factory=list)
    left_out_species: list[str] = field(
        default_factory=list
    )  # sorted: every recording heard_unseen

    @property
    def recordings(self) -> int:
        """Recordings the split covers: train, val, test and those left out."""
        return len(self.train) + len(self.val) + len(self.test) + len(self.heard_unseen)

    def summary(self, catalogue: Catalogue) -> dict[str, Any]:
        """Counts for logs and reports: species and recordings per side, test species
        per class and per order, and why picking stopped."""
        test_sp = [catalogue[catalogue.index(s)] for s in self.test_species]
        seen_sp = [catalogue[catalogue.index(s)] for s in self.seen_species]
        listed = set(self.test_species) | set(self.seen_species) | set(self.left_out_species)
        out: dict[str, Any] = {
            "params": dict(self.params),
            "species": len(listed),
            "species_without_recordings": sum(1 for s in catalogue.ids if s not in listed),
            # seen species whose every recording hears an unseen one: in no list
            "species_left_out": len(self.left_out_species),
            "test_species": len(self.test_species),
            "target_test_species": self.target_test_species,
            "stop_reason": self.stop_reason,
            "seen_species": len(self.seen_species),
            "recordings": {
                "train": len(self.train),
                "val": len(self.val),
                "test": len(self.test),
                "heard_unseen": len(self.heard_unseen),
            },
            "test_species_per_class": _count(sp.class_ for sp in test_sp),
            "seen_species_per_class": _count(sp.class_ for sp in seen_sp),
            "test_species_per_order": _count(f"{sp.class_}/{sp.order}" for sp in test_sp),
            "test_genera": len({_genus_key(sp) for sp in test_sp}),
            "test_families": len({sp.lineage()[:3] for sp in test_sp}),
        }
        if self.stop_reason == EXHAUSTED:
            out["note"] = (
                f"{len(self.test_species)} of {self.target_test_species} test species: {EXHAUSTED}"
            )
        return out

    def to_json(self, path: str | Path) -> None:
        data = {"format": FORMAT, "version": FORMAT_VERSION}
        data.update(
            train=self.train,
            val=self.val,
            test=self.test,
            test_species=self.test_species,
            seen_species=self.seen_species,
            target_test_species=self.target_test_species,
            stop_reason=self.stop_reason,
            params=self.params,
            items_digest=self.items_digest,
            heard_unseen=self.heard_unseen,
            left_out_species=self.left_out_species,
        )
        Path(path).write_text(json.dumps(data, indent=1), encoding="utf-8")

    @classmethod
    def from_json(cls, path: str | Path) -> ZeroShotSplit:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read split: {e}") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path}: not a zero-shot split file (format {FORMAT!r})")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: split format version {data.get('version')}, this code reads {FORMAT_VERSION}"
            )
        return cls(
            train=[int(i) for i in data["train"]],
            val=[int(i) for i in data["val"]],
            test=[int(i) for i in data["test"]],
            test_species=list(data["test_species"]),
            seen_species=list(data["seen_species"]),
            target_test_species=int(data["target_test_species"]),
            stop_reason=str(data["stop_reason"]),
            params=dict(data["params"]),
            items_digest=str(data["items_digest"]),
            # splits written before 2026-11-27 left nothing out for its background
            # (`heard_unseen_excluded` applies the rule to them where they are reused)
            heard_unseen=[int(i) for i in data.get("heard_unseen", [])],
            left_out_species=list(data.get("left_out_species", [])),
        )

    def check_items(self, items: Sequence[Item]) -> None:
        """Raise ValueError unless `items` is the list this split was made from."""
        if self.items_digest and items_digest(items) != self.items_digest:
            raise ValueError(
                f"split was made for a different item list ({len(items)} items given, "
                f"{self.recordings} in the split"
                + (
                    ": as many, so their ids, species or order differ (a folder opened "
                    "another way, e.g. without its benchmark.json, names them otherwise)"
                    if len(items) == self.recordings
                    else ""
                )
                + "); rebuild the split or open the data the training run used"
            )


def carried_over(
    split: ZeroShotSplit, items: Sequence[Item], seed: int, val_fraction: float
) -> ZeroShotSplit:
    """`split` applied to `items`, a list that changed since it was made (recordings
    added or removed): its unseen species stay unseen, a species it never listed is
    unseen too (no model trained with it saw it), recordings that hear an unseen species
    in the background are left out, and the other recordings are split again into
    train and val by group."""
    known = set(split.test_species) | set(split.seen_species) | set(split.left_out_species)
    unseen = set(split.test_species) | {it.species_id for it in items} - known
    test = [i for i, it in enumerate(items) if it.species_id in unseen]
    seen = [i for i, it in enumerate(items) if it.species_id not in unseen]
    heard = [i for i in seen if unseen.intersection(items[i].background)]
    rest = [i for i in seen if not unseen.intersection(items[i].background)]
    tr, va = group_split([items[i].group for i in rest], val_fraction, seed)
    kept = {items[i].species_id for i in rest}
    return ZeroShotSplit(
        train=[rest[i] for i in tr],
        val=[rest[i] for i in va],
        test=test,
        test_species=sorted({items[i].species_id for i in test}),
        seen_species=sorted(kept),
        target_test_species=split.target_test_species,
        stop_reason=split.stop_reason,
        params={**split.params, "carried_over": True, "seed": seed, "val_fraction": val_fraction},
        items_digest=items_digest(items),
        heard_unseen=heard,
        left_out_species=sorted({items[i].species_id for i in heard} - kept),
    )


def heard_unseen_note(split: ZeroShotSplit) -> str | None:
    """What a run logs of the recordings its split left out for an unseen species in
    their background; None where there are none."""
    if not split.heard_unseen:
        return None
    emptied = f" ({len(split.left_out_species)} seen species left with none)"
    return (
        f"zero-shot split: {len(split.heard_unseen)} recordings of seen species left out "
        "of train and val: an unseen test species calls in their background"
        + (emptied if split.left_out_species else "")
    )


def heard_unseen_excluded(split: ZeroShotSplit, items: Sequence[Item]) -> ZeroShotSplit:
    """`split` (made for `items`) with the train and val recordings that hear one of its
    test species in the background moved out of both sides: a split written before that
    rule (2026-11-27) followed it. The same split where nothing is to move. Its test
    species stay as they were picked, even where a genus thereby loses its last training
    species: a model trained with them has already not heard them."""
    unseen = set(split.test_species)
    heard = [i for i in split.train + split.val if unseen.intersection(items[i].background)]
    if not heard:
        return split
    gone = set(heard)
    train = [i for i in split.train if i not in gone]
    val = [i for i in split.val if i not in gone]
    kept = {items[i].species_id for i in train + val}
    return replace(
        split,
        train=train,
        val=val,
        seen_species=sorted(kept),
        heard_unseen=sorted(gone | set(split.heard_unseen)),
        left_out_species=sorted(
            set(split.left_out_species) | {items[i].species_id for i in heard} - kept
        ),
    )


def resumed_split(
    saved: ZeroShotSplit, items: Sequence[Item], fresh: ZeroShotSplit | None = None
) -> tuple[ZeroShotSplit, str | None]:
    """The split a resumed run goes on with: `saved`, the one it began with (made for
    `items`), never a new draw. A new draw may pick other test species (the
    background rule of 2026-11-27 changes which picks keep a genus in training), and
    the checkpoint has already trained on those. What the rule asks of a split saved
    before it is applied without touching its test species (`heard_unseen_excluded`).
    The note (None: nothing changed) says what was moved, and that `fresh`, the split
    this data would now be given, differs, so that a resume is not read as a new draw."""
    kept = heard_unseen_excluded(saved, items)
    changes = []
    moved = len(kept.heard_unseen) - len(saved.heard_unseen)
    if moved:
        emptied = len(kept.left_out_species) - len(saved.left_out_species)
        changes.append(
            f"{moved} train/val recordings that hear one of its test species moved out "
            "(heard_unseen)" + (f", leaving {emptied} seen species with none" if emptied else "")
        )
    if fresh is not None and fresh.test_species != saved.test_species:
        other = len(set(fresh.test_species) - set(saved.test_species))
        changes.append(f"a new draw would hold out {other} species it has trained on")
    if not changes:
        return kept, None
    return kept, (
        f"resumed on the split it began with (split.json, its {len(saved.test_species)} "
        f"test species kept): " + "; ".join(changes)
    )


def write_split(split: ZeroShotSplit, path: Path, trained: bool) -> None:
    """Write `split` to `path`, refusing to replace a split with other test species
    where a model has `trained` on the split there: the run's reports would call
    species unseen that it trained on."""
    if trained and path.is_file():
        old = ZeroShotSplit.from_json(path)
        if old.test_species != split.test_species:
            raise ValueError(
                f"{path} names other test species ({len(old.test_species)}) than this run's "
                f"split ({len(split.test_species)}), and {path.parent} holds a model trained "
                "with it: resume on that split, or give a new --out"
            )
    split.to_json(path)


def zero_shot_split(
    items: Sequence[Item],
    catalogue: Catalogue,
    seed: int = 0,
    test_fraction: float = 0.15,
    max_test_recordings: int = 15,
    val_fraction: float = 0.1,
) -> ZeroShotSplit:
    """Unseen rare test species plus a grouped train/val split of the rest (see module doc)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if max_test_recordings < 1:
        raise ValueError(f"max_test_recordings must be at least 1, got {max_test_recordings}")
    for i, it in enumerate(items):
        if catalogue.get(it.species_id) is None:
            raise ValueError(
                f"item {i} ({it.id}): species {it.species_id!r} is not in {catalogue.source}"
            )

    # Train/val membership is a property of each recording's group alone, so it can
    # be computed for every item up front and filtered to the seen species later.
    _, val_all = group_split([it.group for it in items], val_fraction, seed)
    in_val = np.zeros(len(items), bool)
    in_val[val_all] = True

    n_recs: Counter[str] = Counter(it.species_id for it in items)
    species = [sp for sp in catalogue if n_recs[sp.id] > 0]
    target = round(test_fraction * len(species))
    if target < 1:
        raise ValueError(
            f"test_fraction {test_fraction} of {len(species)} species rounds to no test species"
        )

    eligible = [sp for sp in species if n_recs[sp.id] < max_test_recordings]
    if not eligible:
        raise ValueError(
            f"no species has fewer than {max_test_recordings} recordings "
            f"(max_test_recordings={max_test_recordings}), so none can be a test species"
        )

    # Train-side recordings per species that hear no picked species (all of them before
    # the first pick): a species keeps its genus in training while it has one.
    live: Counter[str] = Counter(
        it.species_id for it, v in zip(items, in_val, strict=True) if not v
    )
    # species -> train-side recordings of other species that hear it in the background
    heard_in: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        if it.background and not in_val[i]:  # most have none: no set made for them
            for b in set(it.background) - {it.species_id}:
                heard_in[b].append(i)
    by_genus: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for sp in species:
        by_genus[_genus_key(sp)].append(sp.id)
    genus_of = {sp.id: _genus_key(sp) for sp in species}

    picked: set[str] = set()
    picked_genera: Counter[tuple[str, ...]] = Counter()
    silenced: set[int] = set()  # train-side recordings that hear a picked species

    def silences(sid: str) -> list[int]:
        """The train-side recordings that picking `sid` would newly leave out."""
        return [
            i
            for i in heard_in.get(sid, ())
            if i not in silenced and items[i].species_id not in picked
        ]

    def pickable(sp: Species) -> bool:
        if sp.id in picked:
            return False
        lost = Counter(items[i].species_id for i in silences(sp.id))
        gone = {sp.id} | {a for a, n in lost.items() if live[a] <= n}
        # sp's own genus, and the genus of every picked species that could lose its
        # last training species to the recordings sp's pick leaves out
        genera = {genus_of[sp.id]} | {genus_of[a] for a in gone if picked_genera[genus_of[a]]}
        return all(
            any(live[a] > 0 and a not in picked and a not in gone for a in by_genus[g])
            for g in genera
        )

    def pick(sp: Species) -> None:
        for i in silences(sp.id):
            silenced.add(i)
            live[items[i].species_id] -= 1
        picked.add(sp.id)
        picked_genera[genus_of[sp.id]] += 1

    if not any(pickable(sp) for sp in eligible):
        raise ValueError(
            f"every species with fewer than {max_test_recordings} recordings is alone in its "
            "genus (no other species of the genus has training recordings), so none can be "
            "an unseen test species with its genus and family still in training"
        )

    by_class_order: dict[str, dict[str, list[Species]]] = defaultdict(lambda: defaultdict(list))
    for sp in eligible:
        by_class_order[sp.class_][sp.order].append(sp)
    classes = sorted(by_class_order)
    order_picks: Counter[tuple[str, str]] = Counter()
    rng = np.random.default_rng([seed, 0x5EED])

    stop_reason = EXHAUSTED
    while len(picked) < target:
        progressed = False
        for cls in classes:
            if len(picked) >= target:
                break
            options = {
                order: cands
                for order, cands in sorted(by_class_order[cls].items())
                if any(pickable(sp) for sp in cands)
            }
            if not options:
                continue
            # Fewest picks first; the seeded shuffle breaks ties (min keeps the first).
            orders = [list(options)[i] for i in rng.permutation(len(options))]
            order = min(orders, key=lambda o: order_picks[(cls, o)])
            cands = [sp for sp in options[order] if pickable(sp)]
            pick(cands[int(rng.integers(len(cands)))])
            order_picks[(cls, order)] += 1
            progressed = True
        if not progressed:
            break
    if len(picked) >= target:
        stop_reason = TARGET_REACHED

    seen_idx = [i for i, it in enumerate(items) if it.species_id not in picked]
    heard = [i for i in seen_idx if picked.intersection(items[i].background)]
    kept = [i for i in seen_idx if not picked.intersection(items[i].background)]
    kept_species = {items[i].species_id for i in kept}
    return ZeroShotSplit(
        train=[i for i in kept if not in_val[i]],
        val=[i for i in kept if in_val[i]],
        test=[i for i, it in enumerate(items) if it.species_id in picked],
        test_species=sorted(picked),
        seen_species=sorted(kept_species),
        target_test_species=target,
        stop_reason=stop_reason,
        params={
            "seed": seed,
            "test_fraction": test_fraction,
            "max_test_recordings": max_test_recordings,
            "val_fraction": val_fraction,
        },
        items_digest=items_digest(items),
        heard_unseen=heard,
        left_out_species=sorted({items[i].species_id for i in heard} - kept_species),
    )


def _genus_key(sp: Species) -> tuple[str, ...]:
    # The full lineage down to genus: a genus name reused in another family (or a
    # catalogue that disagrees with itself) must not count as the same genus.
    return sp.lineage()[:4]


def _count(names: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(names).items()))
