"""The recordings manifest: one row per source recording, CSV or Parquet.

Columns (header names, order free; `license` is accepted for `licence`):
    path or url   where the audio is: a local path (relative to the manifest) or an
                  http(s)/file URL
    species_id    the species: a catalogue id, or a scientific or common name (one only
                  one species has) in any case, with spaces, "_" or "-" alike
    licence       e.g. "CC BY-NC 4.0", "CC0", a creativecommons.org URL
    date          observation date: it only groups recordings by site and day. A time
                  of day is cut off; one day written two ways (2024-05-14, 5/14/2024,
                  14 May 2024) is one day; 5/6/2024 (June or May?) is kept as written
    site          recording site or locality
optional:
    id            a stable recording id (default: derived from path/url); an id that
                  names several files (merged exports) keeps each, under the id and a
                  digest of its location
    quality       quality grade (xeno-canto A-E, iNaturalist "research", ...)
    source        where the row came from (xeno-canto, iNaturalist, ...)
    background_species (or `also`, xeno-canto's name for it)
                  other species heard in the recording: catalogue ids, scientific or
                  common names (any case), separated by ";" or ","; brackets and
                  quotes around them are dropped, so a Python list literal such as
                  "['Turdus merula', 'Erithacus rubecula']" reads; a Parquet list
                  column is read too. Names no catalogue species has are kept, counted
                  and warned of.
                  The zero-shot split keeps a recording in which an unseen species
                  is heard out of training and validation.

`plan` turns rows into what will be decoded, and records why each other row was
left out, with the same reason names the decode step uses.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from animalclap_edge.contracts.catalogue import Catalogue

REQUIRED = ("species_id", "licence", "date", "site")
# Keys name tar members "<key>.flac": WebDataset splits member names at the first dot.
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# "<key>.flac" must fit a tar (USTAR) member name, 100 characters
MAX_KEY = 95

# Reasons a manifest row is left out before any audio is read.
NOT_CC = "licence not Creative Commons"
UNKNOWN_SPECIES = "species not in catalogue"
NO_LOCATION = "no path or url"
DUPLICATE = "duplicate id"
LOW_QUALITY = "quality grade not accepted"
UNSUPPORTED_URL = "URL scheme not supported"
MALFORMED = "more cells than the header"
# read_rows' key for the cells a CSV row has beyond its header (DictReader's restkey)
_EXTRA = "\0extra"
# what `decode.fetch` downloads (urllib): s3://, gs:// and the like are not
URL_SCHEMES = ("http", "https", "ftp", "file")


class ManifestError(ValueError):
    """A manifest that cannot be read at all; the message names the file and the fix."""


@dataclass(frozen=True)
class SourceRecording:
    key: str
    uri: str  # absolute local path or URL
    species_id: str
    licence: str
    date: str
    site: str
    quality: str = ""
    source: str = ""
    background_species: tuple[str, ...] = ()  # catalogue ids where known (background_reader)

    def meta(self) -> dict[str, str]:
        return asdict(self)


def is_creative_commons(licence: str) -> bool:
    """CC0 and every CC BY variant (NC, SA, ND), as words (a code such as "CC BY-NC" or
    "CC0" anywhere, a name such as "Attribution-NonCommercial 4.0 International", any
    dash) or as a creativecommons.org URL.

    Public-domain marks other than CC0, government licences, GPL and "all rights
    reserved" are not Creative Commons and are left out, as the paper does.
    """
    text = licence.strip().lower()
    # a code is now found anywhere in the text: not where the text denies it
    if _DENIED.search(re.sub(r"[\s_]+", "-", _DASHES.sub("-", text))):
        return False
    if "creativecommons.org/" in text:
        return "/licenses/" in text or "/publicdomain/zero/" in text
    text = re.sub(r"[\s_]+", "-", _DASHES.sub("-", text))
    if re.search(r"public-domain-mark|(^|-)pdm(-|$)", text):  # a mark, as the URL is
        return False
    return bool(
        _CC_CODE.search(text) or _CC_DEED.match(text) or text.startswith("creative-commons")
    )


# Hyphens and dashes a word processor types for "-" ("CC BY\u2013NC").
_DASHES = re.compile("[\u2010-\u2015\u2212]")
# A licence code anywhere ("Public Domain (CC0)", "Licence: CC BY 4.0"), as a word.
_CC_CODE = re.compile(r"(?:^|[^a-z0-9])(?:cc-?0|cc-zero|cc-by(?:-(?:nc|sa|nd))*)(?=[^a-z0-9]|$)")
# A text that denies a licence ("not CC BY", "no CC-BY licence") or reserves every right
# ("All rights reserved (was CC BY-NC)"). "No"/"non" inside a licence's own name
# ("No Derivatives", "Non Commercial") are followed by no "cc"/"creative".
_DENIED = re.compile(
    r"(?:^|[^a-z0-9])(?:not|non|no|without)-(?:an?-|the-)?(?:cc|creative)|all-rights-reserved"
)
# A licence's own name, as on its deed: "Attribution-NonCommercial 4.0 International"
# (a version after it: "Attribution" alone does not say whose licence).
_CC_DEED = re.compile(
    r"^attribution(?:-(?:non-?commercial|share-?alike|no-?derivs|no-?derivatives))*-\d"
)


# Around an entry: xeno-canto's "also" saved as a Python list literal
# ("['Turdus merula', 'Erithacus rubecula']"), or a name quoted by hand.
_ENTRY_WRAPPING = " \t[](){}'\"`\u2018\u2019\u201c\u201d"


def species_resolver(catalogue: Catalogue) -> Callable[[str], str | None]:
    """`resolve(entry)`: the catalogue id `entry` names, or None. An entry is an id as
    written, or, in any case and with spaces, "_" and "-" alike, an id, a scientific
    name or a common name only one species has (GBIF and xeno-canto exports name
    species, not our ids)."""
    from training.catalogue_builder import loose_index, name_index, spaced

    names = name_index(catalogue)  # once, not per row
    loose = loose_index(names)

    def resolve(entry: str) -> str | None:
        if catalogue.get(entry) is not None:
            return entry
        return names.get(entry.casefold()) or loose.get(spaced(entry))

    return resolve


def background_reader(
    catalogue: Catalogue,
) -> Callable[[str | Sequence[str], str], tuple[str, ...]]:
    """`read(cell, focal)`: the species a background cell names, as catalogue ids. The
    cell is split on ";" and ","; brackets and quotes around an entry are dropped and
    its whitespace collapsed; an entry `species_resolver` resolves becomes the id. The
    focal species and repeats are dropped. An entry the catalogue does not know is kept as written: it
    cannot be an unseen test species (those are catalogue species), and `plan` and
    `background_unmatched` count it, so that a mistyped name is seen rather than
    silently ignored. A sequence (a Parquet list, entries stored by an older reader)
    is read as its entries."""
    resolve = species_resolver(catalogue)

    def read(cell: str | Sequence[str], focal: str = "") -> tuple[str, ...]:
        text = cell if isinstance(cell, str) else ";".join(cell)
        out: list[str] = []
        for raw in re.split(r"[;,]", text or ""):
            entry = " ".join(raw.strip(_ENTRY_WRAPPING).split())
            if not entry:
                continue
            sid = resolve(entry) or entry
            if sid != focal and sid not in out:
                out.append(sid)
        return tuple(out)

    return read


def background_unmatched(items: Iterable, catalogue: Catalogue) -> Counter:
    """Background entries of `items` (anything with .background) that are no species
    of `catalogue`, with how many recordings name each."""
    return Counter(b for it in items for b in it.background if catalogue.get(b) is None)


def unmatched_note(unknown: Counter) -> str | None:
    """The warning a run and `prepare` print for background names no catalogue species
    has (None: there are none). Such a name may be an unseen species written in a way
    `background_reader` does not read, whose recordings would then be trained on."""
    if not unknown:
        return None
    first = ", ".join(repr(b) for b, _ in unknown.most_common(3))
    more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
    return (
        f"warning: {len(unknown)} background species name(s) in {sum(unknown.values())} "
        f"recording(s) match no catalogue id, scientific or common name ({first}{more}): "
        "an unseen species written so is not kept out of training; correct the names or "
        "add the species to the catalogue"
    )


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV or Parquet manifest as string dicts (Parquet needs pyarrow)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path}: no such file")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ManifestError(
                f"manifest {path}: reading Parquet needs pyarrow: pip install 'animalclap-edge[training]'"
            ) from None
        table = pq.read_table(path)
        # names and cells trimmed as a CSV's are: the same sheet plans alike either way
        cols = {name.strip(): table.column(name).to_pylist() for name in table.column_names}
        return [{k: _cell(v[i]).strip() for k, v in cols.items()} for i in range(table.num_rows)]
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            raw = list(csv.DictReader(f, restkey=_EXTRA))
        # empty cells past the header on most rows: the sheet ends each line with a comma
        usual = Counter(len(r.get(_EXTRA, ())) for r in raw).most_common(1)[0][0] if raw else 0
        return [_csv_row(r, usual) for r in raw]
    except UnicodeDecodeError:
        # the reader's error counts from its current chunk: find the line in the file
        data = path.read_bytes()
        try:
            data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line, byte = data[: e.start].count(b"\n") + 1, data[e.start]
        raise ManifestError(
            f"manifest {path}: not UTF-8 text (byte {byte:#04x} on line {line}); save it "
            "as UTF-8 CSV, or as Parquet named .parquet"
        ) from None
    except csv.Error as e:  # e.g. NUL bytes: a binary file
        raise ManifestError(
            f"manifest {path}: not a CSV file ({e}); give a CSV or .parquet"
        ) from None


def _csv_row(r: dict, usual_extra: int = 0) -> dict[str, str]:
    """A CSV row, trimmed; cells beyond the header (an unquoted comma shifted the rest of
    the row) are kept under _EXTRA, so that `plan` leaves the row out rather than read
    its shifted cells. Only as many empty ones as most rows have (`usual_extra`: a
    sheet that ends every line with a comma) do no harm: a shift whose last cell was
    empty, as an optional last column's often is, left nothing but an empty cell over,
    and the row was read shifted (its key the site's second half, its background
    species the seed)."""
    row = {k.strip(): (v or "").strip() for k, v in r.items() if k and k != _EXTRA}
    extra = r.get(_EXTRA, ())
    if len(extra) > usual_extra or any(v.strip() for v in extra):
        row[_EXTRA] = str(len(extra))
    return row


def _column_check(rows: Sequence[dict[str, str]], path: Path) -> None:
    if not rows:
        raise ManifestError(f"manifest {path}: no rows")
    header = set(rows[0]) - {_EXTRA}
    if "license" in header:
        header.add("licence")
    missing = [c for c in REQUIRED if c not in header]
    if "path" not in header and "url" not in header:
        missing.insert(0, "path or url")
    if missing:
        (first, *more) = sorted(set(rows[0]) - {_EXTRA})
        if not more and (";" in first or "\t" in first):  # one column: another separator
            sep = "';'" if ";" in first else "tabs"
            raise ManifestError(
                f"manifest {path}: its columns are separated by {sep}, not commas (a "
                "spreadsheet set to another locale's CSV): save it as comma-separated "
                "CSV, or as Parquet"
            )
        raise ManifestError(
            f"manifest {path}: missing column(s) {', '.join(missing)} "
            f"(has {', '.join(sorted(set(rows[0]) - {_EXTRA}))}); see `animalclap-train prepare --help`"
        )


def recording_key(row: dict[str, str], uri: str) -> str:
    """The row's id made tar-safe, or a digest of where the audio is. An id that had to
    change keeps a digest of itself, so two ids never meet in one key ("ok.1" and
    "ok_1" were one key, and the second row was dropped as a duplicate). An id longer
    than MAX_KEY is cut to fit a tar member's name, with its digest: a longer one
    stopped the whole run when its shard was written."""
    raw = row.get("id", "")
    given = _KEY_UNSAFE.sub("_", raw).strip("_")
    if not given:
        return hashlib.sha1(uri.encode("utf-8")).hexdigest()[:20]
    if given != raw or len(given) > MAX_KEY:  # a key cut short keeps a digest too
        given = given[: MAX_KEY - 9] + "-" + hashlib.sha1(raw.encode("utf-8")).hexdigest()[:8]
    return given


@dataclass
class Plan:
    """What will be decoded (sorted by key, so shard membership is stable) and what
    was left out before decoding, per reason."""

    keep: list[SourceRecording]
    left_out: Counter
    examples: dict[str, list[str]]  # reason -> first few row descriptions
    rows: int
    # background entries the catalogue does not know (kept as written) -> rows naming them
    background_unknown: Counter = field(default_factory=Counter)
    # species_id cells that were names, not ids ("'Panthera pardus' -> panthera_pardus")
    # -> rows
    named: Counter = field(default_factory=Counter)
    # ids that name more than one file -> the rows (lines) giving them
    reused_ids: dict[str, list[int]] = field(default_factory=dict)

    def digest(self) -> str:
        """Identifies the planned recordings: machines sharing an output must agree."""
        h = hashlib.sha256()
        for r in self.keep:
            # background species only where there are some: plans made before the
            # column was read keep their digest, so their jobs still resume
            heard = "\t" + ";".join(r.background_species) if r.background_species else ""
            h.update(f"{r.key}\t{r.uri}\t{r.species_id}{heard}\n".encode())
        return h.hexdigest()[:16]


def plan(
    manifest: str | Path,
    catalogue: Catalogue,
    qualities: Iterable[str] | None = None,
) -> Plan:
    """Filter a manifest to Creative Commons rows of catalogued species."""
    manifest = Path(manifest)
    rows = read_rows(manifest)
    _column_check(rows, manifest)
    accepted_q = {q.strip().lower() for q in qualities} if qualities else None
    keep: dict[str, SourceRecording] = {}
    by_uri: dict[str, list[str]] = {}  # keys of the kept rows of each file
    left_out: Counter = Counter()
    examples: dict[str, list[str]] = {}

    unknown: Counter = Counter()  # species ids the catalogue lacks, with their rows
    named: Counter = Counter()
    resolve = species_resolver(catalogue)
    line_of: dict[str, int] = {}  # kept key -> its row
    reused: dict[str, list[int]] = {}  # an id naming several files -> their rows
    not_cc: dict[str, tuple[int, int]] = {}  # licence as written -> (rows, first line)
    background_unknown: Counter = Counter()
    read_background = background_reader(catalogue)
    # what a user finds the row by: its CSV line (the header is line 1), or its index
    # in a Parquet file
    parquet = manifest.suffix.lower() in (".parquet", ".pq")
    where = "record" if parquet else "row"

    def drop(reason: str, line: int, what: str) -> None:
        left_out[reason] += 1
        ex = examples.setdefault(reason, [])
        if len(ex) < 5:
            ex.append(f"{where} {line}: {what}")

    for line, row in enumerate(rows, start=0 if parquet else 2):
        if row.get(_EXTRA):
            drop(MALFORMED, line, f"{row[_EXTRA]} cell(s) more (a comma in an unquoted cell?)")
            continue
        loc = row.get("url") or row.get("path") or ""
        if not loc:
            drop(NO_LOCATION, line, "empty path and url")
            continue
        licence = row.get("licence") or row.get("license") or ""
        if not is_creative_commons(licence):
            left_out[NOT_CC] += 1
            n, first = not_cc.get(licence or "(empty)", (0, line))
            not_cc[licence or "(empty)"] = (n + 1, first)
            continue
        sid = resolve(row["species_id"])
        if sid is None:
            written = row["species_id"] or "(empty species_id)"
            drop(UNKNOWN_SPECIES, line, written)
            unknown[written] += 1
            continue
        if sid != row["species_id"]:
            named[f"{row['species_id']!r} -> {sid}"] += 1
        quality = row.get("quality", "")
        if accepted_q is not None and quality.lower() not in accepted_q:
            drop(LOW_QUALITY, line, quality or "(empty)")
            continue
        scheme = loc.split("://", 1)[0].lower() if "://" in loc else ""
        if scheme and scheme not in URL_SCHEMES:  # found now, not after hours of retries
            drop(UNSUPPORTED_URL, line, loc)
            continue
        uri = loc if scheme else str((manifest.parent / loc).resolve())
        key = recording_key(row, uri)
        if key in reused or (key in keep and keep[key].uri != uri):
            # one id, another file (exports merged, each numbering its own): every file
            # under it is kept under the id and a digest of where it is, whatever the
            # order of the rows; dropping the second lost a real recording
            if key in keep:
                earlier = keep.pop(key)
                moved = _file_key(key, earlier.uri)
                keep[moved], line_of[moved] = replace(earlier, key=moved), line_of.pop(key)
                by_uri[earlier.uri] = [moved if k == key else k for k in by_uri[earlier.uri]]
                reused[key] = [line_of[moved]]
            reused[key].append(line)
            key = _file_key(key, uri)
        # one file under several rows: a copy of a kept one, or another species in it
        same_file = [keep[k] for k in by_uri.get(uri, ())]
        copy = next((r for r in same_file if r.species_id == sid), None)
        if key in keep or copy is not None:
            what = "the same file" if copy is None else "the same file and species"
            other = key if copy is None else copy.key
            aka = "" if other == key else f" ({other})"
            drop(DUPLICATE, line, f"{key}: {what} as {where} {line_of[other]}{aka}")
            # another species on a row of the same key and file (no id): heard, not
            # lost; an id given to another file says nothing of what this one holds
            if key in keep and keep[key].species_id != sid and keep[key].uri == uri:
                _hear(keep, key, sid)
            continue
        cell = row.get("background_species") or row.get("also") or ""
        heard = read_background(cell, sid)
        background_unknown.update(b for b in heard if catalogue.get(b) is None)
        for kept in same_file:  # each species of a file is heard in the other's rows
            _hear(keep, kept.key, sid)
            heard += (kept.species_id,) if kept.species_id not in heard else ()
        by_uri.setdefault(uri, []).append(key)
        line_of[key] = line
        keep[key] = SourceRecording(
            key=key,
            uri=uri,
            species_id=sid,
            licence=licence,
            date=row.get("date", ""),
            site=row.get("site", ""),
            quality=quality,
            source=row.get("source", ""),
            background_species=heard,
        )
    if not_cc:  # each licence string, most rows first: not the first rows, all alike
        common = sorted(not_cc.items(), key=lambda kv: -kv[1][0])
        examples[NOT_CC] = [
            f"{lic} ({n} row{'s' * (n != 1)}, first {where} {first})"
            for lic, (n, first) in common[:5]
        ]
        if len(common) > 5:
            examples[NOT_CC].append(f"and {len(common) - 5} more licence strings")
    if unknown:  # the ids to add to the catalogue (or fix), not the first rows
        examples[UNKNOWN_SPECIES] = [
            f"{sid} ({n} row{'s' * (n != 1)})" for sid, n in unknown.most_common(5)
        ]
        if len(unknown) > 5:
            examples[UNKNOWN_SPECIES].append(f"and {len(unknown) - 5} more species ids")
    return Plan(
        keep=[keep[k] for k in sorted(keep)],
        left_out=left_out,
        examples=examples,
        rows=len(rows),
        background_unknown=background_unknown,
        named=named,
        reused_ids=reused,
    )


def _file_key(key: str, uri: str) -> str:
    """`key` of one of several files given one id: with a digest of where it is."""
    return f"{key[: MAX_KEY - 9]}-{hashlib.sha1(uri.encode('utf-8')).hexdigest()[:8]}"


def _hear(keep: dict[str, SourceRecording], key: str, species_id: str) -> None:
    """Add `species_id` to the background of kept recording `key`."""
    rec = keep[key]
    if species_id != rec.species_id and species_id not in rec.background_species:
        keep[key] = replace(rec, background_species=(*rec.background_species, species_id))


def _cell(value: object) -> str:
    """A Parquet value as the CSV would have written it: pandas stores an integer
    column with gaps as float (species 1 -> 1.0), and dates as timestamps."""
    import datetime as dt

    if value is None:
        return ""
    if isinstance(value, list | tuple):  # a list column (background species): as CSV's cell
        return ";".join(_cell(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time(0) and value.tzinfo is None:
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)
