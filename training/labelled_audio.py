"""Labelled recordings from either source the pipeline knows.

- a procedural benchmark (`training.benchmark`), named "SIZE[:SEED]" (e.g. "tiny:0")
  or a folder written by `Benchmark.write`;
- a folder of real recordings with `recordings.csv` (path, species_id, site, date;
  optionally duration_s and background_species, the other species heard: ids or
  scientific names, separated by ";" or ",") plus `catalogue.csv` and optionally
  `traits.csv`;
- a folder written by `animalclap-train prepare` (shards + `records.jsonl`).

Both give the same `LabelledSet`, so training, evaluation and trait probing run
unchanged on generated and on real data.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from animalclap_edge.audio.decode import AudioError, probe
from animalclap_edge.contracts.catalogue import Catalogue
from animalclap_edge.contracts.traits import TraitSchema, TraitTable, read_trait_table
from training.dates import day_of
from training.prepare.manifest import background_reader
from training.prepare.shards import RecordRegion

# What decoding a damaged recording raises: our decoder's AudioError, libsndfile's
# errors, a read cut short. Not OSError at large: "too many open files" or a network
# file system's failure is no fault of the recording, and keeps its own message.
UNREADABLE: tuple[type[BaseException], ...] = (AudioError, sf.SoundFileError, EOFError)


def site_day(site: str, date: str) -> str:
    """The group of a recording: its site and the day its date names (`dates.day_of`:
    a time of day cut off, one day written two ways made one)."""
    return f"{site}|{day_of(date)}"


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    species_id: str
    group: str  # "site|date": recordings that must stay on one side of a split
    duration_s: float
    # Other species calling in the recording (catalogue ids where known): the zero-shot
    # split keeps a recording that lets an unseen species be heard out of train and val.
    background: tuple[str, ...] = ()


@dataclass
class LabelledSet:
    name: str
    catalogue: Catalogue
    items: list[Item]
    load: Callable[[Item], np.ndarray]  # -> mono float32 at 48 kHz
    traits: TraitTable | None
    schema: TraitSchema
    # Where the audio is a file at the target rate: the path (or, in a prepared shard,
    # the record's region of the tar), so that a crop decodes only its own frames
    # (a 10 s crop of a 60 s file reads a sixth of it).
    file_of: Callable[[Item], Path | RecordRegion | None] | None = None
    sample_rate: int = 48_000
    # The opener's promise that `load(item)` is `read_source(file_of(item))` wherever
    # `file_of` gives a file: what lets a `ClipTable` crop by row without the item.
    loads_files: bool = False

    def crop(
        self,
        item: Item,
        n: int,
        rng: np.random.Generator | None,
        pcm16: bool = False,
        out: np.ndarray | None = None,
        scratch: np.ndarray | None = None,
    ) -> np.ndarray:
        """`crop(self.load(item), n, rng)`, sample for sample, decoding only the crop
        when the item is a file at the target rate.

        With `pcm16`, a crop read from a 16-bit mono file comes back as its int16
        samples (float32 crops are those over 32768, exactly): no conversion to float
        and back for a loader that ships int16 anyway. Other crops stay float32.

        With `out` (n samples, int16 or float32: a row of the loader's batch), the crop
        is written into it where it needs no conversion (read straight in from a mono
        file of that sample type; for a float32 `out`, any crop) and `out` is returned;
        otherwise the float32 crop comes back, in `scratch` (float32, n) when given, for
        the caller to convert. `out` implies `pcm16` for an int16 row."""
        src = self.file_of(item) if self.file_of else None
        return self._crop(
            src, item.duration_s, lambda: self.load(item), n, rng, out, scratch, pcm16
        )

    def crop_row(
        self,
        table: ClipTable,
        row: int,
        n: int,
        rng: np.random.Generator | None,
        pcm16: bool = False,
        out: np.ndarray | None = None,
        scratch: np.ndarray | None = None,
    ) -> np.ndarray:
        """`crop` of the item at `row` of `table`, sample for sample, found through the
        table's arrays alone: what a loader worker calls, so that it never touches (and
        so never copies) the index's per-record Python objects."""
        src = table.source(row)
        duration = float(table.duration_s[row])
        return self._crop(
            src, duration, lambda: read_source(src, self.sample_rate), n, rng, out, scratch, pcm16
        )

    def _crop(
        self,
        src: str | Path | RecordRegion | None,
        duration_s: float,
        load: Callable[[], np.ndarray],
        n: int,
        rng: np.random.Generator | None,
        out: np.ndarray | None,
        scratch: np.ndarray | None,
        pcm16: bool,
    ) -> np.ndarray:
        if out is not None:
            pcm16 = out.dtype == np.int16
        try:
            x = self._read_part(src, duration_s, n, _crop_start(n, rng), pcm16, out)
            if x is not None:
                return x
            into = out if out is not None and out.dtype == np.float32 else scratch
            return crop(load(), n, rng, out=into)
        except UNREADABLE as e:
            raise UnreadableRecording.of(src, e) from e

    def window(self, item: Item, offset: int, n: int) -> np.ndarray:
        """n float32 samples from `offset`, sample for sample as slicing `self.load(item)`
        (a recording no longer than n: repeat-padded whole, as `crop` pads), decoding
        only those frames when the item is a file at the target rate."""
        src = self.file_of(item) if self.file_of else None
        x = self._read_part(src, item.duration_s, n, lambda frames: offset)
        if x is not None:
            return x
        wave = self.load(item)
        if len(wave) <= n:
            return crop(wave, n, None)
        offset = min(offset, len(wave) - n)  # a duration in the metadata a little long
        return wave[offset : offset + n].astype(np.float32)

    def _read_part(
        self,
        src: str | Path | RecordRegion | None,
        duration_s: float,
        n: int,
        start_of: Callable[[int], int],
        pcm16: bool = False,
        out: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """n frames of an item's file read alone, or None for the full decode's path."""
        # A clip known to be shorter than n is repeat-padded from a full decode: opening
        # it here first would only read its header twice.
        if src is None or 0 < duration_s * self.sample_rate <= n:
            return None
        return _read_frames(src, n, self.sample_rate, start_of, pcm16, out)


@dataclass(frozen=True)
class ClipTable:
    """Where the audio of a list of items lies, and how long each is, as arrays (row i:
    items[i]). A loader worker crops through it (`LabelledSet.crop_row`) instead of
    through the items: reading an array writes nothing, where looking an item up bumps
    the reference counts of its objects, and every page so written is copied into the
    worker (fork's copy-on-write). At paper scale (700k records) that copying grew to
    hundreds of MB per worker as it touched more of the index. The file names are
    bytes in an array too: a recordings folder has a file per item, and a Path each
    would be such objects again."""

    files: np.ndarray  # (files,) bytes (os.fsencode): the shards, or the recordings themselves
    file: np.ndarray  # (items,) int32: index into files
    offset: np.ndarray  # (items,) int64: the record's byte offset in its shard; -1: whole file
    size: np.ndarray  # (items,) int64: the record's bytes in its shard
    duration_s: np.ndarray  # (items,) float64, as in the index (0: unknown)

    def __len__(self) -> int:
        return len(self.file)

    def source(self, row: int) -> str | RecordRegion:
        """Row's file as a str, not a Path: pathlib interns each part of a path, and
        looking those up bumps the main process's interned strings, copying their pages
        (100k files: 18.5 MB per worker; scripts/benchmarks/clip_table_files.py)."""
        path = os.fsdecode(self.files[self.file[row]])
        offset = int(self.offset[row])
        return path if offset < 0 else RecordRegion(path, offset, int(self.size[row]))

    @classmethod
    def of(cls, data: LabelledSet, items: Sequence[Item]) -> ClipTable | None:
        """The table of `items` of `data`, or None where an item has no file to crop
        from (a benchmark rendered in memory) or `data` does not load its files."""
        if data.file_of is None or not data.loads_files:
            return None
        files: dict[Path | str, int] = {}
        n = len(items)
        file = np.empty(n, np.int32)
        offset = np.full(n, -1, np.int64)
        size = np.zeros(n, np.int64)
        duration = np.empty(n, np.float64)
        for i, it in enumerate(items):
            src = data.file_of(it)
            if src is None:
                return None
            path = src.tar if isinstance(src, RecordRegion) else src
            file[i] = files.setdefault(path, len(files))
            if isinstance(src, RecordRegion):
                offset[i], size[i] = src.offset, src.size
            duration[i] = it.duration_s
        names = np.array([os.fsencode(f) for f in files] or [b""], dtype=bytes)[: len(files)]
        return cls(names, file, offset, size, duration)


class UnreadableRecording(ValueError):
    """A recording that fails to decode while training reads it (a file corrupt past
    its header, a damaged shard): named, with what to do, in one line. Built from one
    message, as a DataLoader worker's error is rebuilt in the main process."""

    @classmethod
    def of(cls, src, error: BaseException) -> UnreadableRecording:
        where = (
            f"{src.tar} (the record at byte {src.offset})"
            if isinstance(src, RecordRegion)
            else str(src or "a recording")
        )
        reason = " ".join(str(error).split()) or type(error).__name__
        return cls(
            f"{where}: cannot read it ({reason}): replace the file under the same name and "
            "run the same command again (a pretrain or finetune run resumes from its last "
            "checkpoint; one run without the file trains on other data, so give it a new "
            "--out)"
        )


def read_source(src: str | Path | RecordRegion, sample_rate: int) -> np.ndarray:
    """The whole recording a `file_of` names, mono float32 at `sample_rate`: a shard's
    record (prepared shards are at their rate already) or a file."""
    if isinstance(src, RecordRegion):
        from training.prepare.shards import read_record

        return read_record(src.tar, src.offset, src.size)
    from animalclap_edge.audio.decode import read_all

    return read_all(src, sample_rate)


def open_labelled(
    spec: str, sample_rate: int = 48_000, schema: TraitSchema | None = None
) -> LabelledSet:
    """Open "tiny", "small:3", a benchmark folder, or a real-recordings folder."""
    schema = schema or TraitSchema.default()
    if not spec.strip():
        raise ValueError(f"data: empty; {_DATA_KINDS}")
    path = Path(spec)
    if path.is_dir() and (path / "prepared.json").exists():
        return _open_prepared(path, sample_rate, schema)
    if (
        path.is_dir()
        and (path / "recordings.csv").exists()
        and not (path / "benchmark.json").exists()
    ):
        return _open_folder(path, sample_rate, schema)
    from training.benchmark.corpus import SIZES, Benchmark

    if path.is_dir():
        if not (path / "benchmark.json").exists():
            raise ValueError(f"data {spec!r}: {_unknown_folder(path)}")
        bench = Benchmark.load(path)
    else:
        size, _, seed = spec.partition(":")
        if size not in SIZES or not (seed or "0").isdigit():
            raise ValueError(
                f"data {spec!r}: not a folder and not a benchmark size "
                f"({'|'.join(sorted(SIZES))}, optionally SIZE:SEED); {_DATA_KINDS}"
            )
        bench = Benchmark.build(size, seed=int(seed or 0))
    by_id = {r.id: r for r in bench.recordings}
    items = [
        Item(
            r.id,
            r.species_id,
            f"{r.site}|{r.date}",
            r.duration_s,
            (r.background_species,) if r.background_species else (),
        )
        for r in bench.recordings
    ]

    from animalclap_edge.audio.decode import read_all

    written = path.is_dir()  # a folder from Benchmark.write holds the rendered FLAC

    def load(it: Item) -> np.ndarray:
        rec = by_id[it.id]
        if written and (path / rec.path).exists():
            # Decoding the written FLAC is ~10x cheaper than rendering the call again.
            return read_all(path / rec.path, sample_rate)
        return bench.render(rec, sample_rate=sample_rate)

    def file_of(it: Item) -> Path | None:
        f = path / by_id[it.id].path
        return f if written and f.exists() else None

    return LabelledSet(
        name=f"benchmark:{spec}",
        catalogue=bench.catalogue,
        items=items,
        load=load,
        traits=bench.traits,
        schema=bench.schema,
        file_of=file_of,
        sample_rate=sample_rate,
        loads_files=True,
    )


_DATA_KINDS = (
    "give a folder written by `animalclap-train prepare` (prepared.json), a recordings "
    "folder (recordings.csv + catalogue.csv) or a benchmark (a size such as small, or "
    "a folder written by `animalclap-train benchmark`)"
)


def _unknown_folder(path: Path) -> str:
    """Why a folder is none of the kinds `open_labelled` reads, and what to do."""
    if (path / "plan.json").exists():  # a prepare output not yet finalized
        return (
            "a `prepare` output not yet finalized (plan.json, no prepared.json): run "
            f"`animalclap-train prepare --out {path} --finalize` once every shard is done"
        )
    if path.name == "shards" and (path.parent / "prepared.json").exists():
        return f"the shards of a prepared folder: give its parent, {path.parent}"
    return f"a folder with no prepared.json, recordings.csv or benchmark.json; {_DATA_KINDS}"


def _did_you_mean(given: str, ids: list[str]) -> str:
    """ "; did you mean 'eurbla'?" for a near id (case, a dropped character), else ""."""
    import difflib

    by_fold = {i.casefold(): i for i in ids}
    near = difflib.get_close_matches(given.strip().casefold(), list(by_fold), n=1, cutoff=0.8)
    return f"; did you mean {by_fold[near[0]]!r}?" if near else ""


def _open_folder(root: Path, sample_rate: int, schema: TraitSchema) -> LabelledSet:
    from animalclap_edge.audio.decode import read_all

    catalogue = Catalogue.from_csv(root / "catalogue.csv")
    traits = (
        read_trait_table(root / "traits.csv", schema) if (root / "traits.csv").exists() else None
    )
    items = []
    read_background = background_reader(catalogue)
    # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name
    with open(root / "recordings.csv", newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        # "path, species_id, ..." (a space after each comma) names the columns
        reader.fieldnames = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in ("path", "species_id") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{root / 'recordings.csv'}: missing column(s) {', '.join(missing)} (has "
                f"{', '.join(reader.fieldnames or []) or 'none'}); the columns are "
                "path,species_id and optionally site,date,duration_s"
            )
        for i, r in enumerate(reader):
            if catalogue.get(r["species_id"]) is None:
                raise ValueError(
                    f"recordings.csv row {i + 2}: species {r['species_id']!r} not in "
                    f"catalogue.csv{_did_you_mean(r['species_id'], catalogue.ids)}"
                )
            if not (root / r["path"]).is_file():  # found now, not as a traceback mid-epoch
                raise ValueError(
                    f"recordings.csv row {i + 2}: {r['path']!r} is not a file (paths are "
                    f"relative to {root}); fix the row or remove it"
                )
            try:  # its header, likewise: a file that is not audio at all
                probe(root / r["path"])
            except AudioError as e:
                raise ValueError(
                    f"recordings.csv row {i + 2}: {r['path']!r}: {e}; replace the file or "
                    "remove its row"
                ) from None
            group = site_day(r.get("site", ""), r.get("date", ""))
            heard = read_background(r.get("background_species", ""), r["species_id"])
            duration = float(r.get("duration_s") or 0)
            items.append(Item(r["path"], r["species_id"], group, duration, heard))
    return LabelledSet(
        name=str(root),
        catalogue=catalogue,
        items=items,
        load=lambda it: read_all(root / it.id, sample_rate),
        traits=traits,
        schema=schema,
        file_of=lambda it: root / it.id,
        sample_rate=sample_rate,
        loads_files=True,
    )


def _stored_background(r: dict, catalogue: Catalogue, read) -> tuple[str, ...]:
    """A prepared record's background species. Absent from folders prepared before
    2026-11-27 and from manifests without the column: nothing is known to call in the
    background. Entries that are no catalogue id are read again (`read`: a
    `background_reader`): folders prepared earlier on 2026-11-27 kept a list literal's
    "['Turdus merula'" or a common name as written, and those recordings would train."""
    heard = r.get("background_species", ())
    if all(catalogue.get(b) is not None for b in heard):  # nearly every record: as stored
        return tuple(map(sys.intern, heard))
    return tuple(map(sys.intern, read(heard, r["species_id"])))


def _open_prepared(root: Path, sample_rate: int, schema: TraitSchema) -> LabelledSet:
    import json

    from training.prepare.shards import SAMPLE_RATE, read_record

    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"{root}: prepared shards are {SAMPLE_RATE} Hz, asked for {sample_rate}")
    catalogue = Catalogue.from_csv(root / "catalogue.csv")
    traits = (
        read_trait_table(root / "traits.csv", schema) if (root / "traits.csv").exists() else None
    )
    where: dict[str, tuple[Path, int, int]] = {}
    items = []
    shards: dict[str, Path] = {}  # one Path per shard, not one per record
    read_background = background_reader(catalogue)
    with open(root / "records.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            shard = shards.get(r["shard"])
            if shard is None:
                shard = shards[r["shard"]] = root / "shards" / r["shard"]
            where[r["key"]] = (shard, r["offset"], r["size"])
            items.append(
                Item(
                    r["key"],
                    sys.intern(r["species_id"]),
                    sys.intern(site_day(r["site"], r["date"])),
                    r["duration_s"],
                    _stored_background(r, catalogue, read_background),
                )
            )
    if not items:
        raise ValueError(
            f"{root}: the prepared folder holds no recordings (prepare rejected every "
            f"one: see {root / 'report.md'})"
        )
    return LabelledSet(
        name=str(root),
        catalogue=catalogue,
        items=items,
        load=lambda it: read_record(*where[it.id]),
        traits=traits,
        schema=schema,
        file_of=lambda it: RecordRegion(*where[it.id]),
        loads_files=True,
    )


def _read_crop(
    path: Path | RecordRegion,
    n: int,
    rng: np.random.Generator | None,
    sr: int,
    pcm16: bool = False,
) -> np.ndarray | None:
    """The frames `crop` would keep, read alone; None when only a full decode will do
    (another rate, which needs resampling; a file that is not plainly readable).
    With `pcm16`, a 16-bit mono file's frames as int16 (a 10 s WAV crop: 1.9 -> 0.3 ms
    against float32, before the conversion back; scripts/benchmarks/shard_crops.py)."""
    return _read_frames(path, n, sr, _crop_start(n, rng), pcm16)


def _crop_start(n: int, rng: np.random.Generator | None) -> Callable[[int], int]:
    """Where `crop` starts in a file of `frames`: drawn only once the file is known to
    qualify, so a file read whole instead draws from `rng` as `crop` would."""

    def start_of(frames: int) -> int:
        return int(rng.integers(0, frames - n + 1)) if rng is not None else (frames - n) // 2

    return start_of


def _read_frames(
    path: str | Path | RecordRegion,
    n: int,
    sr: int,
    start_of: Callable[[int], int],
    pcm16: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray | None:
    """n frames from `start_of(frames in the file)`, read alone; None when only a full
    decode will do (see `_read_crop`), or when they run past the end of the file. A
    mono file's frames go straight into `out` where its dtype is theirs (int16 for a
    16-bit file with `pcm16`, float32), and `out` is returned."""
    import contextlib

    import soundfile as sf

    try:
        with contextlib.ExitStack() as stack:
            src = stack.enter_context(path.open()) if isinstance(path, RecordRegion) else str(path)
            f = stack.enter_context(sf.SoundFile(src))
            if f.format not in ("FLAC", "WAV", "WAVEX") or f.samplerate != sr or f.frames <= n:
                # compressed formats whose header length is an estimate (MP3, OGG),
                # resampling, or repeat-padding a short clip: the full path
                return None
            start = start_of(f.frames)
            if not 0 <= start <= f.frames - n:
                return None
            f.seek(start)
            if pcm16 and f.subtype == "PCM_16" and f.channels == 1:
                into = out if out is not None and out.dtype == np.int16 else None
                x = f.read(n, dtype="int16", out=into)
                return (into if into is not None else x) if len(x) == n else None
            if out is not None and out.dtype == np.float32 and f.channels == 1:
                x = f.read(n, dtype="float32", out=out)
                return out if len(x) == n and np.isfinite(out).all() else None
            x = f.read(n, dtype="float32", always_2d=True)
    except (sf.SoundFileError, OSError):
        return None  # the full decode reports it with its one-line reason
    if len(x) != n or not np.isfinite(x).all():
        return None  # cut short, or NaN/Inf: the full decode says which, in one line
    return x[:, 0].copy() if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)


def crop(
    wave: np.ndarray, n: int, rng: np.random.Generator | None, out: np.ndarray | None = None
) -> np.ndarray:
    """A random (or, without rng, centred) crop of n float32 samples; shorter clips
    repeat-padded (`repeat_pad`: whole copies, then zeros). Written into `out` (float32,
    n) when given: a loader worker reuses one buffer instead of allocating per clip."""
    out = np.empty(n, np.float32) if out is None else out
    if len(wave) <= n:
        if len(wave) == 0:
            raise ValueError("crop: need a non-empty 1-D array, got an empty one")
        copies = n // len(wave)
        out[: copies * len(wave)].reshape(copies, len(wave))[:] = wave
        out[copies * len(wave) :] = 0
        return out
    start = int(rng.integers(0, len(wave) - n + 1)) if rng is not None else (len(wave) - n) // 2
    out[:] = wave[start : start + n]
    return out
