"""Which traits change a species' sound, and how: the one hard-coded trait mapping.

Each effect is a multiplicative factor on a call parameter (applied as a log offset
in the parameter's transformed space, before the soft bounds). Factors are fixed
generator conventions loosely grounded in bioacoustics, not fitted to anything:

- activity_pattern: nocturnal callers (owls, nightjars, frogs, katydids) use lower,
  slower, longer signals; crepuscular/cathemeral species sit in between.
- habitat: acoustic adaptation hypothesis (Morton 1975): forest favours low, long,
  tonal notes with slow modulation (reverberation smears rapid AM/FM); open habitats
  favour higher, faster trills and buzzes.
- climate: ectotherm song tempo follows temperature (Dolbear's law for crickets,
  pulse rates of frogs), so warm climates pulse faster; weak for endotherms.
- migration: migrants sing with higher output in a short breeding season.
- locomotion: burrowers call low and tonal (burrow resonance, e.g. mole crickets),
  swimmers low and long, climbers (arboreal) higher, fliers with wider sweeps.
- body_mass: acoustic allometry (larger animals, lower frequencies).
- song_complexity: more notes per call and wider, faster frequency modulation.

Traits or values absent from a schema simply have no effect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

# All log-factors are scaled by this, so that a species' trait shifts stay comparable
# to a genus-level lineage offset: congeners still sound alike, yet traits are audible.
EFFECT_STRENGTH = 0.8

# Classes whose tempo follows ambient temperature; others get ENDOTHERM_CLIMATE_WEIGHT.
ECTOTHERM_CLASSES = frozenset({"Amphibia", "Insecta"})
ENDOTHERM_CLIMATE_WEIGHT = 0.3

_OPEN = {
    "note_dur_s": 0.8,
    "note_gap_s": 0.75,
    "pulse_rate_hz": 1.25,
    "freq_hz": 1.06,
    "notes_per_call": 1.25,
    "fm_rate_hz": 1.2,
}
_WARM = {"pulse_rate_hz": 1.3, "note_gap_s": 0.85, "call_rate_hz": 1.1, "fm_rate_hz": 1.15}
_COLD = {"pulse_rate_hz": 0.78, "note_gap_s": 1.15, "call_rate_hz": 0.9, "fm_rate_hz": 0.87}

# trait -> value -> parameter -> factor. Multi-label traits average over the values
# present (a forest + grassland species gets half of each).
SOUND_EFFECTS: dict[str, dict[str, dict[str, float]]] = {
    "activity_pattern": {
        "diurnal": {},
        "nocturnal": {
            "freq_hz": 0.72,
            "call_rate_hz": 0.75,
            "note_dur_s": 1.35,
            "note_gap_s": 1.2,
            "pulse_rate_hz": 0.85,
        },
        "crepuscular": {"freq_hz": 0.85, "call_rate_hz": 0.9, "note_dur_s": 1.15},
        "cathemeral": {"freq_hz": 0.93},
    },
    "habitat": {
        "forest": {
            "freq_hz": 0.82,
            "note_dur_s": 1.3,
            "note_gap_s": 1.2,
            "fm_depth_oct": 0.75,
            "noise_mix": 0.6,
            "pulse_rate_hz": 0.8,
            "fm_rate_hz": 0.8,
        },
        "woodland": {"freq_hz": 0.92, "note_dur_s": 1.12, "noise_mix": 0.8},
        "grassland": _OPEN,
        "shrubland": _OPEN,
        "desert": _OPEN,
        "agricultural": _OPEN,
    },
    "climate": {
        "tropical_subtropical": _WARM,
        "arid": _WARM,
        "boreal": _COLD,
        "polar": _COLD,
        "montane": _COLD,
    },
    "migration": {
        "full_migrant": {"call_rate_hz": 1.25, "notes_per_call": 1.15},
        "partial_migrant": {"call_rate_hz": 1.1},
        "nomadic": {"call_rate_hz": 1.1, "fm_depth_oct": 1.1},
    },
    "locomotion": {
        "burrowing": {"freq_hz": 0.8, "noise_mix": 0.6, "note_dur_s": 1.2},
        "swimming": {"freq_hz": 0.85, "note_dur_s": 1.15},
        "climbing": {"freq_hz": 1.1},
        "flying": {"fm_depth_oct": 1.2},
    },
    "body_mass": {
        "under_10g": {"freq_hz": 1.35},
        "10_to_100g": {"freq_hz": 1.12},
        "100g_to_1kg": {},
        "1_to_10kg": {"freq_hz": 0.85},
        "over_10kg": {"freq_hz": 0.7},
    },
    "song_complexity": {
        "simple": {"notes_per_call": 0.7, "fm_depth_oct": 0.8},
        "moderate": {},
        "complex": {"notes_per_call": 1.4, "fm_depth_oct": 1.25, "fm_rate_hz": 1.2},
    },
}

SOUND_LINKED_TRAITS: tuple[str, ...] = tuple(SOUND_EFFECTS)


def sound_offsets(traits: Mapping[str, Sequence[str]], class_: str) -> dict[str, float]:
    """Natural-log offsets per call parameter implied by a species' trait values."""
    out: dict[str, float] = {}
    for trait, by_value in SOUND_EFFECTS.items():
        values = [v for v in traits.get(trait, ()) if v in by_value]
        if not values:
            continue
        weight = EFFECT_STRENGTH / len(values)
        if trait == "climate" and class_ not in ECTOTHERM_CLASSES:
            weight *= ENDOTHERM_CLIMATE_WEIGHT
        for v in values:
            for param, factor in by_value[v].items():
                out[param] = out.get(param, 0.0) + weight * math.log(factor)
    return out
