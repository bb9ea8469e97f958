"""Species for the benchmark, drawn from real taxonomies.

Birds: the eBird 2024 taxonomy shipped by `birdnames` (species rows; id = eBird code).
Other classes: the curated `data/nonbird_taxonomy.csv` (id = lower-cased binomial).

`select_species` samples whole genera, clustered in families and orders, so that a
selection always contains close relatives (the point of a taxonomy-aware benchmark:
an unseen species should have congeners and confamilials that were seen).
"""

from __future__ import annotations

import csv
import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from importlib import resources

import numpy as np

from animalclap_edge.contracts.catalogue import Catalogue, Species
from training.benchmark.hashing import stable_rng

EBIRD_RESOURCE = "data/processed/ebird_2024_taxonomy.csv"
NONBIRD_RESOURCE = "data/nonbird_taxonomy.csv"

# Chance that the next genus comes from a family / order already in the selection
# (else from anywhere in the class). 0.35 + 0.25 gives several genera per family and
# several families per order even in the 6-species-per-class tiny set.
P_SAME_FAMILY = 0.35
P_SAME_ORDER = 0.25


def ebird_catalogue() -> Catalogue:
    """All eBird 2024 species (about 11,000) as a catalogue, class "Aves"."""
    return Catalogue(_ebird_species(), source="birdnames:ebird_2024_taxonomy.csv")


def nonbird_catalogue() -> Catalogue:
    """The curated amphibians, insects and mammals shipped with the benchmark."""
    return Catalogue(_nonbird_species(), source="nonbird_taxonomy.csv")


@functools.cache
def _ebird_species() -> tuple[Species, ...]:
    ref = resources.files("birdnames").joinpath(EBIRD_RESOURCE)
    # Traversable.open passes TextIOWrapper arguments on (documented); typeshed lists
    # only encoding and errors
    with ref.open("r", encoding="utf-8", newline="") as f:  # type: ignore[call-overload]
        return tuple(
            Species(
                id=r["ebird_ebird_code"].strip(),
                scientific_name=r["scientific_name"].strip(),
                common_name=r["ebird_common_name"].strip(),
                class_="Aves",
                order=r["ebird_order"].strip(),
                family=r["ebird_family"].strip(),
                genus=r["genus"].strip(),
            )
            for r in csv.DictReader(f)
        )


@functools.cache
def _nonbird_species() -> tuple[Species, ...]:
    ref = resources.files("training.benchmark").joinpath(NONBIRD_RESOURCE)
    # Traversable.open passes TextIOWrapper arguments on (documented); typeshed lists
    # only encoding and errors
    with ref.open("r", encoding="utf-8", newline="") as f:  # type: ignore[call-overload]
        return tuple(
            Species(
                id=r["id"],
                scientific_name=r["scientific_name"],
                common_name=r["common_name"],
                class_=r["class"],
                order=r["order"],
                family=r["family"],
                genus=r["genus"],
            )
            for r in csv.DictReader(f)
        )


def species_pool() -> dict[str, list[Species]]:
    """Every available species, by class name."""
    pool: dict[str, list[Species]] = defaultdict(list)
    for sp in (*_ebird_species(), *_nonbird_species()):
        pool[sp.class_].append(sp)
    return dict(pool)


def select_species(
    n_per_class: Mapping[str, int],
    seed: int,
    min_species_per_genus: int = 2,
    max_species_per_genus: int = 4,
) -> Catalogue:
    """A deterministic selection of `n_per_class[class]` species per class.

    Only genera with at least `min_species_per_genus` species are used, and each chosen
    genus contributes between `min_species_per_genus` and `max_species_per_genus` of
    its species, except that a remainder too small for a new genus tops up genera
    already chosen (so a genus may then exceed the maximum by a species or two).
    Classes appear in the order of `n_per_class`, species within a class in taxonomic
    (order, family, genus, binomial) order. Raises ValueError when a class is unknown
    or has too few eligible species.
    """
    if min_species_per_genus < 1 or max_species_per_genus < min_species_per_genus:
        raise ValueError(
            f"need 1 <= min_species_per_genus <= max_species_per_genus, "
            f"got {min_species_per_genus}, {max_species_per_genus}"
        )
    pool = species_pool()
    chosen: list[Species] = []
    for class_, n in n_per_class.items():
        if class_ not in pool:
            raise ValueError(f"class {class_!r} has no species; available: {sorted(pool)}")
        rng = stable_rng(seed, "select", class_)
        picked = _select_class(
            class_, pool[class_], n, rng, min_species_per_genus, max_species_per_genus
        )
        chosen.extend(sorted(picked, key=lambda s: (s.order, s.family, s.genus, s.scientific_name)))
    return Catalogue(chosen, source=f"benchmark selection seed {seed}")


def _select_class(
    class_: str,
    species: Iterable[Species],
    n: int,
    rng: np.random.Generator,
    min_per_genus: int,
    max_per_genus: int,
) -> list[Species]:
    # Genus key is the full lineage so homonymous genera in different families stay apart.
    genera: dict[tuple[str, str, str], list[Species]] = defaultdict(list)
    for sp in species:
        genera[(sp.order, sp.family, sp.genus)].append(sp)
    eligible = {
        k: sorted(v, key=lambda s: s.id) for k, v in genera.items() if len(v) >= min_per_genus
    }
    available = sum(len(v) for v in eligible.values())
    if n > available:
        raise ValueError(
            f"{class_}: asked for {n} species but only {available} are in genera with "
            f">= {min_per_genus} species"
        )
    free = sorted(eligible)  # genera not yet used, in a fixed order for determinism
    used_orders: set[str] = set()
    used_families: set[tuple[str, str]] = set()
    taken: dict[tuple[str, str, str], list[Species]] = {}
    remaining = n
    while remaining > 0:
        spare = [k for k in sorted(taken) if len(taken[k]) < len(eligible[k])]
        key = None
        if remaining >= min_per_genus or not spare:
            key = _next_genus(free, used_orders, used_families, rng)
        if key is None:
            # A remainder smaller than a genus (or no genus left): top up chosen genera,
            # so no genus ends up with fewer than min_per_genus species.
            key = spare[int(rng.integers(len(spare)))]
            rest = [s for s in eligible[key] if s not in taken[key]]
            taken[key].append(rest[int(rng.integers(len(rest)))])
            remaining -= 1
            continue
        members = eligible[key]
        cap = int(rng.integers(min_per_genus, max_per_genus + 1))
        k = min(cap, len(members), remaining)
        left = remaining - k
        if 0 < left < min_per_genus and len(members) >= remaining:
            k = remaining  # absorb a remainder too small for another genus
        idx = rng.choice(len(members), size=k, replace=False)
        taken[key] = [members[i] for i in sorted(idx)]
        free.remove(key)
        used_orders.add(key[0])
        used_families.add(key[:2])
        remaining -= k
    return [sp for members in taken.values() for sp in members]


def _next_genus(free, used_orders, used_families, rng):
    if not free:
        return None
    r = rng.random()
    same_family = [g for g in free if g[:2] in used_families]
    same_order = [g for g in free if g[0] in used_orders and g[:2] not in used_families]
    if same_family and r < P_SAME_FAMILY:
        return same_family[int(rng.integers(len(same_family)))]
    if same_order and r < P_SAME_FAMILY + P_SAME_ORDER:
        return same_order[int(rng.integers(len(same_order)))]
    # A new lineage: order first (weighted by its genus count ** 0.7, so large orders
    # like Passeriformes are common but do not swamp the rest), then family, then genus.
    orders = sorted({g[0] for g in free})
    counts = [sum(1 for g in free if g[0] == o) for o in orders]
    w = [c**0.7 for c in counts]
    total = sum(w)
    order = orders[int(rng.choice(len(orders), p=[x / total for x in w]))]
    families = sorted({g[:2] for g in free if g[0] == order})
    family = families[int(rng.integers(len(families)))]
    in_family = [g for g in free if g[:2] == family]
    return in_family[int(rng.integers(len(in_family)))]
