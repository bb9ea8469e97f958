"""The procedural benchmark corpus: species, traits, recordings, audio.

Acoustic rationale. Real species are taken from real taxonomies (eBird 2024 for
birds; curated amphibians, insects, mammals), and their calls are generated so that
acoustic similarity follows the tree: the class sets the call type (bird whistles,
FM elements and trills; frog pulsed croaks; insect broadband stridulation; mammal
harmonic calls), and order, family, genus and species add ever smaller perturbations
(`acoustics`). Ecological traits are drawn by descent with within-genus departures
(`traits`); the sound-linked ones (activity pattern, habitat, climate, migration,
locomotion, body mass, song complexity; `trait_sound`) then shift the species' call,
so traits are partly audible and partly taxonomic, as in nature. Recordings put one
focal species in field conditions (`field`): distance, reverberation, noise at
-5..25 dB SNR, a quieter background species, gain and occasional clipping; the
recordings of one site and day share their noise character. Recordings per species
are long-tailed (lognormal, minimum 3), so rare species exist for zero-shot splits.

Every number is fixed in code and the whole generator is versioned by
GENERATOR_VERSION: change any of it and bump the version. Parameters must never be
tuned to evaluation results (that would fit the benchmark to a model, not the other
way round). Everything is deterministic in (size, seed): the same call gives the same
catalogue, traits, recording list and, sample for sample, the same audio.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import warnings
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.stats import norm
from tqdm import tqdm

from animalclap_edge.contracts.catalogue import Catalogue
from animalclap_edge.contracts.traits import (
    TraitSchema,
    TraitTable,
    read_trait_table,
    write_trait_table,
)
from training.benchmark.acoustics import CallParams, species_params
from training.benchmark.field import SiteCharacter, apply_field, draw_conditions, draw_site
from training.benchmark.hashing import stable_int, stable_rng
from training.benchmark.synth import render_song
from training.benchmark.taxonomy import select_species
from training.benchmark.traits import draw_traits

GENERATOR_VERSION = "1.0"
SAMPLE_RATE = 48_000
LICENSE = "generated"
RECORDING_COLUMNS = (
    "path",
    "species_id",
    "site",
    "date",
    "duration_s",
    "snr_db",
    "license",
    "source",
    "id",
    "seed",
    "background_species",
)


@dataclass(frozen=True)
class BenchmarkSize:
    name: str
    species_per_class: dict[str, int] = field(hash=False)  # class -> species, in order
    n_recordings: int
    min_recordings: int = 3  # per species
    count_sigma: float = 1.2  # lognormal sd of recordings per species (long tail)
    duration_range_s: tuple[float, float] = (3.0, 12.0)  # uniform clip length
    n_sites: int = 8
    n_days: int = 30
    start_date: str = "2024-04-01"
    sites_per_species: tuple[int, int] = (1, 4)  # a species' range, in sites
    background_prob: float = 0.35  # chance a second species calls in the background
    max_species_per_genus: int = 4

    @property
    def n_species(self) -> int:
        return sum(self.species_per_class.values())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> BenchmarkSize:
        d = dict(d)
        for key in ("duration_range_s", "sites_per_species"):
            d[key] = tuple(d[key])
        return cls(**d)


_FOUR = ("Aves", "Amphibia", "Insecta", "Mammalia")
SIZES: dict[str, BenchmarkSize] = {
    # Tests and the CPU demo: generates in seconds. Short clips keep it fast.
    "tiny": BenchmarkSize(
        "tiny",
        dict.fromkeys(_FOUR, 6),
        n_recordings=200,
        duration_range_s=(3.0, 6.0),
        n_sites=4,
        n_days=6,
        sites_per_species=(1, 3),
        max_species_per_genus=3,
    ),
    # CPU experiments: minutes to write.
    "small": BenchmarkSize(
        "small",
        {"Aves": 100, "Amphibia": 20, "Insecta": 20, "Mammalia": 20},
        n_recordings=4000,
        n_sites=16,
        n_days=30,
        sites_per_species=(1, 5),
    ),
    # GPU throughput benchmarks: full's 2,000 species, so its prompts are as long as a
    # paper-size catalogue's (15.1 tokens on average, the longest 38, against eBird's
    # 6,823 species' 14.5 and 43; small's: 8.8 and 19; each under a tokenizer fitted on
    # all its species: scripts/benchmarks/prompt_packing.py --size S --lengths-only),
    # with 3 short recordings each, so that it writes in about a minute on a GPU host.
    "wide": BenchmarkSize(
        "wide",
        {"Aves": 1850, "Amphibia": 50, "Insecta": 50, "Mammalia": 50},
        n_recordings=6000,
        count_sigma=0.0,
        duration_range_s=(3.0, 6.0),
        n_sites=16,
        n_days=30,
        sites_per_species=(1, 3),
    ),
    # GPU pretraining scale. Non-bird classes are capped by the curated list.
    "full": BenchmarkSize(
        "full",
        {"Aves": 1850, "Amphibia": 50, "Insecta": 50, "Mammalia": 50},
        n_recordings=120_000,
        count_sigma=1.3,
        n_sites=60,
        n_days=90,
        sites_per_species=(1, 8),
    ),
}


def is_procedural(spec: str) -> bool:
    """Whether a --data spec names the procedural benchmark: a size ("tiny", "small:3")
    or a folder it was written to (benchmark.json)."""
    return spec.partition(":")[0] in SIZES or (Path(spec) / "benchmark.json").is_file()


@dataclass(frozen=True)
class RecordingMeta:
    id: str
    species_id: str
    site: str
    date: str  # ISO day
    duration_s: float
    seed: int  # everything random in the rendering derives from this
    snr_db: float  # focal signal (active frames) to ambient noise
    background_species: str = ""  # "" when no second species calls

    @property
    def path(self) -> str:
        """Audio path relative to the benchmark folder."""
        return f"audio/{self.species_id}/{self.id}.flac"


class Benchmark:
    """A generated corpus: catalogue, traits and recordings; audio rendered on demand."""

    def __init__(
        self,
        size: BenchmarkSize,
        seed: int,
        catalogue: Catalogue,
        schema: TraitSchema,
        traits: TraitTable,
        recordings: list[RecordingMeta],
    ) -> None:
        self.size = size
        self.seed = seed
        self.catalogue = catalogue
        self.schema = schema
        self.traits = traits
        self.recordings = recordings
        self._params: dict[str, CallParams] = {}
        self._sites: dict[tuple[str, str], SiteCharacter] = {}

    @classmethod
    def build(
        cls, size: str | BenchmarkSize, seed: int = 0, schema: TraitSchema | None = None
    ) -> Benchmark:
        """Generate the tables (no audio) for a size name or a custom BenchmarkSize."""
        if isinstance(size, str):
            if size not in SIZES:
                raise ValueError(f"unknown benchmark size {size!r}; use one of {sorted(SIZES)}")
            size = SIZES[size]
        schema = schema or TraitSchema.default()
        catalogue = select_species(
            size.species_per_class, seed, max_species_per_genus=size.max_species_per_genus
        )
        traits = draw_traits(catalogue, schema, seed)
        bench = cls(size, seed, catalogue, schema, traits, [])
        bench.recordings = _draw_recordings(bench)
        return bench

    # -- per-species and per-recording ----------------------------------------

    def params(self, species_id: str) -> CallParams:
        """The species' call parameters (lineage + its sound-linked traits)."""
        if species_id not in self._params:
            sp = self.catalogue[self.catalogue.index(species_id)]
            self._params[species_id] = species_params(sp, self.seed, self.traits.get(species_id))
        return self._params[species_id]

    def site_character(self, site: str, date: str) -> SiteCharacter:
        """Noise colour, wind, rain and reverberation shared by a site on a day."""
        key = (site, date)
        if key not in self._sites:
            self._sites[key] = draw_site(stable_rng(self.seed, "site", site, date))
        return self._sites[key]

    def render(self, rec: RecordingMeta, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """The recording's audio, float32 in [-1, 1]; identical on every call."""
        rng = np.random.default_rng(rec.seed)
        # Draw order is part of the format: conditions, focal song, background song.
        cond = draw_conditions(rng, self.site_character(rec.site, rec.date))
        song = render_song(self.params(rec.species_id), rng, rec.duration_s, sample_rate)
        background = None
        if rec.background_species:
            bparams = self.params(rec.background_species)
            background = render_song(bparams, rng, rec.duration_s, sample_rate)
        return apply_field(song, cond, rng, background_call=background, sample_rate=sample_rate)

    # -- disk -----------------------------------------------------------------

    @property
    def source(self) -> str:
        return f"animalclap benchmark {self.size.name} seed {self.seed}"

    def counts(self) -> dict:
        per_species: dict[str, int] = defaultdict(int)
        for r in self.recordings:
            per_species[r.species_id] += 1
        per_class: dict[str, int] = defaultdict(int)
        for sp in self.catalogue:
            per_class[sp.class_] += 1
        n = [per_species[s] for s in self.catalogue.ids]
        return {
            "species": len(self.catalogue),
            "species_per_class": dict(per_class),
            "genera": len(self.catalogue.taxa("genus")),
            "families": len(self.catalogue.taxa("family")),
            "orders": len(self.catalogue.taxa("order")),
            "recordings": len(self.recordings),
            "recordings_per_species": {"min": min(n), "median": float(np.median(n)), "max": max(n)},
            "species_under_15_recordings": sum(1 for x in n if x < 15),
            "hours": round(sum(r.duration_s for r in self.recordings) / 3600, 3),
        }

    def write(
        self,
        out_dir: str | Path,
        workers: int = 1,
        progress: bool = True,
        overwrite: bool = False,
    ) -> Path:
        """Write tables and 48 kHz FLAC (PCM_16) audio; benchmark.json is written last.

        Refuses (FileExistsError) a folder that already holds a complete benchmark
        unless `overwrite`. Returns the folder.
        """
        out = Path(out_dir)
        if (out / "benchmark.json").exists() and not overwrite:
            raise FileExistsError(
                f"{out} already holds a benchmark; give another --out, or --overwrite "
                "(overwrite=True) to write it again"
            )
        out.mkdir(parents=True, exist_ok=True)
        self.catalogue.to_csv(out / "catalogue.csv")
        write_trait_table(out / "traits.csv", self.traits, self.schema)
        self._write_recordings_csv(out / "recordings.csv")
        for sid in {r.species_id for r in self.recordings}:
            (out / "audio" / sid).mkdir(parents=True, exist_ok=True)

        bar = tqdm(
            total=len(self.recordings),
            desc=f"benchmark {self.size.name}",
            unit="rec",
            disable=not progress,
        )
        if workers <= 1:
            for rec in self.recordings:
                _write_audio(self, out, rec)
                bar.update()
        else:
            with ProcessPoolExecutor(
                workers, initializer=_init_worker, initargs=(self, out)
            ) as pool:
                for _ in pool.map(_worker_write, self.recordings, chunksize=8):
                    bar.update()
        bar.close()
        meta = {
            "generator_version": GENERATOR_VERSION,
            "size": self.size.to_dict(),
            "seed": self.seed,
            "sample_rate": SAMPLE_RATE,
            "audio": "FLAC PCM_16 mono",
            "counts": self.counts(),
            "schema": self.schema.to_dict(),
        }
        (out / "benchmark.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return out

    def _write_recordings_csv(self, path: Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=RECORDING_COLUMNS)
            w.writeheader()
            for r in self.recordings:
                w.writerow(
                    {
                        "path": r.path,
                        "species_id": r.species_id,
                        "site": r.site,
                        "date": r.date,
                        "duration_s": r.duration_s,
                        "snr_db": r.snr_db,
                        "license": LICENSE,
                        "source": self.source,
                        "id": r.id,
                        "seed": r.seed,
                        "background_species": r.background_species,
                    }
                )

    @classmethod
    def load(cls, out_dir: str | Path) -> Benchmark:
        """Read back the tables written by `write` (the audio stays on disk)."""
        out = Path(out_dir)
        meta = json.loads((out / "benchmark.json").read_text(encoding="utf-8"))
        if meta.get("generator_version") != GENERATOR_VERSION:
            warnings.warn(
                f"{out}: written by generator {meta.get('generator_version')}, this is "
                f"{GENERATOR_VERSION}; render() will not reproduce its audio",
                stacklevel=2,
            )
        schema = TraitSchema.from_dict(meta["schema"], source=str(out / "benchmark.json"))
        with open(out / "recordings.csv", newline="", encoding="utf-8") as f:
            recordings = [
                RecordingMeta(
                    id=r["id"],
                    species_id=r["species_id"],
                    site=r["site"],
                    date=r["date"],
                    duration_s=float(r["duration_s"]),
                    seed=int(r["seed"]),
                    snr_db=float(r["snr_db"]),
                    background_species=r["background_species"],
                )
                for r in csv.DictReader(f)
            ]
        return cls(
            size=BenchmarkSize.from_dict(meta["size"]),
            seed=int(meta["seed"]),
            catalogue=Catalogue.from_csv(out / "catalogue.csv"),
            schema=schema,
            traits=read_trait_table(out / "traits.csv", schema),
            recordings=recordings,
        )


def recording_counts(n_species: int, size: BenchmarkSize, seed: int) -> np.ndarray:
    """Recordings per species (catalogue order): min + lognormal shares, summing exactly.

    Shares are the normal quantiles exp(sigma * z_i) assigned by a seeded permutation,
    so the tail's shape is the same for every seed; only who is rare changes.
    """
    extra = size.n_recordings - size.min_recordings * n_species
    if extra < 0:
        raise ValueError(
            f"size {size.name}: {size.n_recordings} recordings cannot give {n_species} "
            f"species {size.min_recordings} each"
        )
    z = norm.ppf((np.arange(n_species) + 0.5) / n_species)
    w = np.exp(size.count_sigma * z[stable_rng(seed, "counts").permutation(n_species)])
    quota = extra * w / w.sum()
    counts = np.floor(quota).astype(int)
    # Largest remainders get the leftover recordings (ties broken by index: stable).
    left = extra - int(counts.sum())
    counts[np.argsort(-(quota - counts), kind="stable")[:left]] += 1
    return counts + size.min_recordings


def _draw_recordings(bench: Benchmark) -> list[RecordingMeta]:
    size, seed, ids = bench.size, bench.seed, bench.catalogue.ids
    counts = recording_counts(len(ids), size, seed)
    sites = [f"site{i:03d}" for i in range(size.n_sites)]
    start = dt.date.fromisoformat(size.start_date)
    lo, hi = size.sites_per_species
    home: dict[str, list[str]] = {}
    for sid in ids:
        rng = stable_rng(seed, "range", sid)
        k = int(rng.integers(lo, min(hi, size.n_sites) + 1))
        home[sid] = sorted(sites[i] for i in rng.choice(size.n_sites, size=k, replace=False))
    community: dict[str, list[str]] = defaultdict(list)
    for sid in ids:
        for s in home[sid]:
            community[s].append(sid)

    recordings = []
    for sid, count in zip(ids, counts, strict=True):
        rng = stable_rng(seed, "recordings", sid)
        for j in range(int(count)):
            rec_id = f"{sid}-{j:05d}"
            site = home[sid][int(rng.integers(len(home[sid])))]
            date = (start + dt.timedelta(days=int(rng.integers(size.n_days)))).isoformat()
            duration = round(float(rng.uniform(*size.duration_range_s)), 2)
            background = ""
            if len(ids) > 1 and rng.random() < size.background_prob:
                # Prefer a neighbour from the same site; else anyone else.
                pool = [s for s in community[site] if s != sid] or [s for s in ids if s != sid]
                background = pool[int(rng.integers(len(pool)))]
            rec_seed = stable_int(seed, "render", rec_id)
            # Same draw as render() makes first, so the summary matches the audio.
            cond = draw_conditions(
                np.random.default_rng(rec_seed), bench.site_character(site, date)
            )
            recordings.append(
                RecordingMeta(
                    rec_id, sid, site, date, duration, rec_seed, round(cond.snr_db, 2), background
                )
            )
    return recordings


def _write_audio(bench: Benchmark, out: Path, rec: RecordingMeta) -> None:
    audio = bench.render(rec, SAMPLE_RATE)
    sf.write(out / rec.path, audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")


_WORKER: tuple[Benchmark, Path] | None = None


def _init_worker(bench: Benchmark, out: Path) -> None:
    global _WORKER
    _WORKER = (bench, out)


def _worker_write(rec: RecordingMeta) -> None:
    assert _WORKER is not None, "worker not initialised"
    _write_audio(_WORKER[0], _WORKER[1], rec)
