"""Call parameters inherited down the taxonomy.

The class fixes the call type and a centre value for every parameter. Order, family,
genus and species each add a Gaussian offset in the parameter's transformed space
(log for positive quantities, logit for fractions), drawn from a hash of
(seed, level, taxon name), with standard deviations shrinking towards the leaves
(LEVEL_SCALE). So two congeners differ only by two small species offsets, two
confamilial genera also by their genus offsets, and so on: expected parameter
distance grows with taxonomic distance. Sound-linked traits then shift the species'
parameters (`trait_sound`), and every parameter is squashed smoothly into its
physical bounds (tanh in transformed space: monotone, so ordering is kept).

All frequencies are in Hz, durations in seconds. Sweep tops stay below 12 kHz and
harmonics / noise bands below 16 kHz (sample rate 48 kHz; the model front-end stops
at 14 kHz), so most energy lies in 0.1-12 kHz.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from animalclap_edge.contracts.catalogue import Species
from training.benchmark.hashing import stable_rng
from training.benchmark.trait_sound import sound_offsets

CALL_TYPES: dict[str, str] = {
    "Aves": "tonal",  # whistles, FM song elements, trills (few harmonics)
    "Amphibia": "pulsed",  # croaks: low f0, many harmonics, deep pulse trains
    "Insecta": "stridulation",  # band-passed noise bursts in rapid pulse trains
    "Mammalia": "harmonic",  # f0 with many harmonics and a formant
}
FM_SHAPES: tuple[str, ...] = ("flat", "up", "down", "u", "n", "sine")

# sd multiplier of each level's offset; species << genus so congeners sound alike.
LEVEL_SCALE: dict[str, float] = {"order": 1.0, "family": 0.7, "genus": 0.45, "species": 0.2}
# chance a taxon keeps its parent's FM shape (species always keep their genus').
SHAPE_KEEP: dict[str, float] = {"family": 0.5, "genus": 0.7}

MAX_CARRIER_HZ = 12_000.0  # top of any FM sweep / noise centre
MAX_PARTIAL_HZ = 16_000.0  # harmonics and noise band edges above this are dropped
MAX_CALL_S = 4.0  # notes per call are cut so one call lasts at most this


@dataclass(frozen=True)
class ParamSpec:
    name: str
    space: str  # "log", "logit" (fractions in (0, 1)) or "lin"
    spread: float  # sd of an order-level offset in transformed units
    lo: float  # physical bounds (class-specific for freq_hz, see FREQ_BOUNDS)
    hi: float


# Order = index in the latent vector. Spreads: 0.35 in log freq is about x1.4 per
# order step; durations vary more (0.45) than pitch, as in real vocal repertoires.
SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("freq_hz", "log", 0.35, 40.0, 12_000.0),  # carrier (tonal/noise) or f0
    ParamSpec("fm_depth_oct", "log", 0.5, 0.02, 2.0),  # sweep extent within a note
    ParamSpec("fm_rate_hz", "log", 0.35, 2.0, 60.0),  # vibrato/trill rate for "sine" shape
    ParamSpec("note_step_oct", "lin", 0.04, -0.15, 0.15),  # pitch change note to note
    ParamSpec("n_harmonics", "log", 0.3, 1.0, 30.0),
    ParamSpec("harmonic_decay", "logit", 0.5, 0.05, 0.95),  # amplitude ratio k+1 : k
    ParamSpec("formant_ratio", "log", 0.3, 0.5, 12.0),  # formant / f0
    ParamSpec("formant_bw_oct", "log", 0.25, 0.3, 3.0),
    ParamSpec("formant_strength", "logit", 0.5, 0.01, 0.99),
    ParamSpec("noise_mix", "logit", 0.6, 0.005, 0.98),  # share of band-passed noise
    ParamSpec("noise_bw_oct", "log", 0.35, 0.1, 2.5),
    ParamSpec("pulse_rate_hz", "log", 0.4, 3.0, 400.0),  # AM pulses within a note
    ParamSpec("pulse_depth", "logit", 0.5, 0.01, 0.99),
    ParamSpec("pulse_sharpness", "log", 0.3, 0.5, 12.0),  # exponent of the pulse shape
    ParamSpec("note_dur_s", "log", 0.45, 0.008, 2.5),
    ParamSpec("note_gap_s", "log", 0.45, 0.004, 1.0),
    ParamSpec("notes_per_call", "log", 0.4, 1.0, 40.0),
    ParamSpec("call_rate_hz", "log", 0.35, 0.05, 2.0),  # calls per second in a song
)
_INDEX = {s.name: i for i, s in enumerate(SPECS)}

FREQ_BOUNDS: dict[str, tuple[float, float]] = {
    "Aves": (600.0, 9_500.0),  # passerine song ~1-8 kHz; owls, doves lower
    "Amphibia": (60.0, 1_800.0),  # f0 of croaks; dominant band set by the formant
    "Insecta": (1_800.0, 11_000.0),  # audible part of stridulation
    "Mammalia": (40.0, 2_500.0),  # f0: elephant rumble to marmoset whistle
}

# Class centres in physical units. Aves: 3.2 kHz whistles, 0.1 s notes in short
# phrases. Amphibia: f0 220 Hz x formant ratio 5 -> dominant band ~1.1 kHz, 45 Hz
# pulses. Insecta: noise band at 5 kHz pulsed at 60 Hz. Mammalia: f0 350 Hz, formant
# at ~1.4 kHz, 0.5 s calls.
_CLASS_ORDER = ("Aves", "Amphibia", "Insecta", "Mammalia")
# fmt: off
_CENTRE_TABLE: dict[str, tuple[float, float, float, float]] = {
    #                    Aves   Amphibia Insecta Mammalia
    "freq_hz":          (3200,  220,     5000,   350),
    "fm_depth_oct":     (0.5,   0.12,    0.04,   0.45),
    "fm_rate_hz":       (12,    6,       8,      5),
    "note_step_oct":    (-0.02, 0.0,     0.0,    -0.02),
    "n_harmonics":      (1.5,   14,      2,      12),
    "harmonic_decay":   (0.2,   0.8,     0.3,    0.75),
    "formant_ratio":    (1.0,   5.0,     1.0,    4.0),
    "formant_bw_oct":   (1.5,   0.8,     1.5,    1.0),
    "formant_strength": (0.05,  0.85,    0.05,   0.6),
    "noise_mix":        (0.02,  0.08,    0.7,    0.08),
    "noise_bw_oct":     (0.4,   0.8,     0.8,    1.0),
    "pulse_rate_hz":    (25,    45,      60,     20),
    "pulse_depth":      (0.08,  0.9,     0.95,   0.1),
    "pulse_sharpness":  (1.5,   3.0,     4.0,    1.5),
    "note_dur_s":       (0.10,  0.25,    0.15,   0.5),
    "note_gap_s":       (0.06,  0.25,    0.12,   0.2),
    "notes_per_call":   (5,     3,       4,      2),
    "call_rate_hz":     (0.3,   0.35,    0.7,    0.22),
}
# fmt: on
CLASS_CENTRES: dict[str, dict[str, float]] = {
    c: {name: float(row[i]) for name, row in _CENTRE_TABLE.items()}
    for i, c in enumerate(_CLASS_ORDER)
}


@dataclass(frozen=True)
class CallParams:
    """Everything `synth.render_call` needs for one species (Hz, seconds, fractions)."""

    class_: str
    call_type: str
    fm_shape: str
    freq_hz: float
    fm_depth_oct: float
    fm_rate_hz: float
    note_step_oct: float
    n_harmonics: int
    harmonic_decay: float
    formant_hz: float
    formant_bw_oct: float
    formant_strength: float
    noise_mix: float
    noise_bw_oct: float
    pulse_rate_hz: float
    pulse_depth: float
    pulse_sharpness: float
    note_dur_s: float
    note_gap_s: float
    notes_per_call: int
    call_rate_hz: float

    @property
    def call_duration_s(self) -> float:
        return self.notes_per_call * self.note_dur_s + (self.notes_per_call - 1) * self.note_gap_s

    @property
    def dominant_hz(self) -> float:
        """Nominal spectral peak: the strongest harmonic (the noise band shares its centre)."""
        w = harmonic_weights(self, self.freq_hz)
        return float(self.freq_hz * (1 + int(np.argmax(w))))

    def as_vector(self) -> np.ndarray:
        """Continuous parameters in transformed units / spread, shape (len(SPECS),).

        Euclidean distance between two vectors measures acoustic difference in units of
        an order-level offset; the FM shape (categorical) is left out.
        """
        vals = {f: getattr(self, f) for f in _INDEX if f != "formant_ratio"}
        vals["formant_ratio"] = self.formant_hz / self.freq_hz
        return np.array(
            [_forward(s.space, float(vals[s.name])) / s.spread for s in SPECS], np.float64
        )


def harmonic_weights(params: CallParams, f0_hz: float) -> np.ndarray:
    """Amplitudes of harmonics 1..n_harmonics of f0_hz, shape (n_harmonics,).

    A mix of a source spectrum decaying by `harmonic_decay` per harmonic and a
    Gaussian (in octaves) formant at `formant_hz`, weighted by `formant_strength`.
    Partials whose sweep top would pass MAX_PARTIAL_HZ get 0 (no aliasing).
    """
    k = np.arange(1, params.n_harmonics + 1)
    partial = f0_hz * k
    octaves = np.log2(partial / params.formant_hz) / params.formant_bw_oct
    s = params.formant_strength
    w = (1.0 - s) * params.harmonic_decay ** (k - 1.0) + s * np.exp(-0.5 * octaves**2)
    w[partial * 2.0 ** (params.fm_depth_oct / 2) > MAX_PARTIAL_HZ] = 0.0
    return w


def species_params(
    species: Species, seed: int, traits: Mapping[str, Sequence[str]] | None = None
) -> CallParams:
    """Call parameters of a species: lineage offsets, then trait effects, then bounds."""
    if species.class_ not in CLASS_CENTRES:
        raise ValueError(
            f"{species.id}: no acoustic model for class {species.class_!r}; "
            f"known classes: {sorted(CLASS_CENTRES)}"
        )
    u = _lineage_latent(species, seed).copy()
    for name, offset in sound_offsets(traits or {}, species.class_).items():
        u[_INDEX[name]] += offset
    phys = _bounded(u, species.class_)
    return _assemble(species, seed, phys)


@functools.cache
def _taxon_normals(seed: int, level: str, name: str) -> np.ndarray:
    z = stable_rng(seed, "acoustic", level, name).standard_normal(len(SPECS))
    z.setflags(write=False)
    return z


def _lineage_latent(species: Species, seed: int) -> np.ndarray:
    centre = CLASS_CENTRES[species.class_]
    u = np.array([_forward(s.space, centre[s.name]) for s in SPECS])
    spread = np.array([s.spread for s in SPECS])
    for level, scale in LEVEL_SCALE.items():
        u = u + scale * spread * _taxon_normals(seed, level, species.taxon(level))
    return u


def _bounded(u: np.ndarray, class_: str) -> dict[str, float]:
    out = {}
    for spec, x in zip(SPECS, u, strict=True):
        lo, hi = FREQ_BOUNDS[class_] if spec.name == "freq_hz" else (spec.lo, spec.hi)
        a, b = _forward(spec.space, lo), _forward(spec.space, hi)
        mid, half = 0.5 * (a + b), 0.5 * (b - a)
        out[spec.name] = _inverse(spec.space, mid + half * math.tanh((x - mid) / half))
    return out


def _assemble(species: Species, seed: int, p: dict[str, float]) -> CallParams:
    f = p["freq_hz"]
    # Keep the top of the sweep below MAX_CARRIER_HZ (sweep spans +-depth/2 octaves).
    depth = min(p["fm_depth_oct"], 2.0 * max(math.log2(MAX_CARRIER_HZ / f), 0.0))
    n_harm = max(1, min(round(p["n_harmonics"]), int(MAX_PARTIAL_HZ // f)))
    noise_bw = min(p["noise_bw_oct"], 2.0 * math.log2(MAX_PARTIAL_HZ / f))
    notes = max(1, round(p["notes_per_call"]))
    per_note = p["note_dur_s"] + p["note_gap_s"]
    notes = max(1, min(notes, int((MAX_CALL_S + p["note_gap_s"]) // per_note)))
    call_s = notes * p["note_dur_s"] + (notes - 1) * p["note_gap_s"]
    # Onset-to-onset period must leave at least 0.15 s of silence between calls.
    call_rate = min(p["call_rate_hz"], 1.0 / (call_s + 0.15))
    return CallParams(
        class_=species.class_,
        call_type=CALL_TYPES[species.class_],
        fm_shape=_fm_shape(species, seed),
        freq_hz=f,
        fm_depth_oct=depth,
        fm_rate_hz=p["fm_rate_hz"],
        note_step_oct=p["note_step_oct"],
        n_harmonics=n_harm,
        harmonic_decay=p["harmonic_decay"],
        formant_hz=min(f * p["formant_ratio"], MAX_CARRIER_HZ),
        formant_bw_oct=p["formant_bw_oct"],
        formant_strength=p["formant_strength"],
        noise_mix=p["noise_mix"],
        noise_bw_oct=noise_bw,
        pulse_rate_hz=p["pulse_rate_hz"],
        pulse_depth=p["pulse_depth"],
        pulse_sharpness=p["pulse_sharpness"],
        note_dur_s=p["note_dur_s"],
        note_gap_s=p["note_gap_s"],
        notes_per_call=notes,
        call_rate_hz=call_rate,
    )


def _fm_shape(species: Species, seed: int) -> str:
    shape = FM_SHAPES[int(stable_rng(seed, "fm_shape", "order", species.order).integers(6))]
    for level in ("family", "genus"):
        rng = stable_rng(seed, "fm_shape", level, species.taxon(level))
        if rng.random() >= SHAPE_KEEP[level]:
            shape = FM_SHAPES[int(rng.integers(len(FM_SHAPES)))]
    return shape


def _forward(space: str, x: float) -> float:
    if space == "log":
        return math.log(x)
    if space == "logit":
        x = min(max(x, 1e-6), 1 - 1e-6)
        return math.log(x / (1.0 - x))
    return x


def _inverse(space: str, y: float) -> float:
    if space == "log":
        return math.exp(y)
    if space == "logit":
        return 1.0 / (1.0 + math.exp(-y))
    return y
