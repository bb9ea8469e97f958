"""Manifest reading and the licence/catalogue filter."""

import csv

import numpy as np
import pytest

from animalclap_edge.contracts.catalogue import Catalogue
from training.prepare.manifest import (
    DUPLICATE,
    LOW_QUALITY,
    NO_LOCATION,
    NOT_CC,
    UNKNOWN_SPECIES,
    ManifestError,
    background_reader,
    is_creative_commons,
    plan,
    unmatched_note,
)


@pytest.mark.parametrize(
    "licence",
    [
        "CC0",
        "CC BY 4.0",
        "CC BY",
        "cc-by-nc-sa 3.0",
        "CC-BY-ND",
        "https://creativecommons.org/licenses/by-nc/4.0/",
        "http://creativecommons.org/publicdomain/zero/1.0/",
        "Creative Commons Attribution 4.0",
        # as written in the wild, all left out before: typographic dashes, the
        # licence's own name (the CC deed's title), the code inside a longer text
        "CC BY\u2013NC 4.0",
        "CC\u2011BY\u2011SA",
        "Attribution-NonCommercial-ShareAlike 4.0 International (CC BY-NC-SA 4.0)",
        "Attribution 4.0 International",
        "Attribution NonCommercial 4.0",
        "Public Domain (CC0)",
        "CC-0",
        "Licence: CC BY 4.0",
        # "no" and "non" inside a licence's own name are no denial
        "Creative Commons Attribution-No Derivatives 4.0",
        "Attribution-NonCommercial-NoDerivatives 4.0 International",
        "Attribution Non Commercial No Derivs 3.0",
        "CC BY-NC-ND 4.0",
    ],
)
def test_creative_commons_licences_are_kept(licence):
    assert is_creative_commons(licence)


@pytest.mark.parametrize(
    "licence",
    [
        # both from shared/realaudio's manifest
        "GPL (>= 2) (R package NatureSounds); recordings from xeno-canto / published studies",
        "Open Government Licence - Canada 2.0 (repo LICENSE.md)",
        "All rights reserved",
        "",
        "public domain",
        "https://creativecommons.org/publicdomain/mark/1.0/",
        # the same mark in words was kept (it starts with "Creative Commons")
        "Creative Commons Public Domain Mark 1.0",
        "Creative Commons PDM",
        "CCBYX",
        "Attribution",  # which licence's? not said
        "non-CC, all rights reserved",
        "Public Domain Mark (CC PDM 1.0)",
        # a code found anywhere in the text was kept even where the text denies it
        "not CC BY",
        "No CC-BY licence",
        "GPL; not CC0",
        "All rights reserved (was CC BY-NC)",
        "CC BY 4.0 withdrawn 2024: all rights reserved",
        "https://creativecommons.org/licenses/by/4.0/ no longer applies: all rights reserved",
    ],
)
def test_other_licences_are_left_out(licence):
    assert not is_creative_commons(licence)


@pytest.fixture
def catalogue(tiny_catalogue) -> Catalogue:
    return tiny_catalogue


def _write(path, rows, fields=None):
    fields = fields or list(rows[0])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def _row(i, species, licence="CC BY 4.0", **kw):
    return {
        "path": f"a/{i}.wav",
        "species_id": species,
        "licence": licence,
        "date": "2024-05-01",
        "site": "S1",
        "quality": "A",
        **kw,
    }


def test_plan_counts_every_row_left_out_and_sorts_the_rest(tmp_path, catalogue):
    sp = catalogue.ids[0]
    rows = [
        _row(3, sp),
        _row(1, sp, id="rec.1"),  # dots are not tar-safe: becomes rec_1-<digest>
        _row(2, sp, licence="All rights reserved"),
        _row(4, "no_such_species"),
        {**_row(5, sp), "path": ""},
        {**_row(6, sp, id="rec.1"), "path": "a/1.wav"},  # row 3 again
        _row(7, sp, quality="E"),
        _row(8, sp, id="rec_1"),  # another id: its own recording, not a duplicate
    ]
    fields = [*rows[0], "id"]
    p = plan(_write(tmp_path / "m.csv", rows, fields), catalogue, qualities=["A", "B"])
    assert p.rows == 8
    keys = [r.key for r in p.keep]
    assert keys == sorted(keys) and len(keys) == 3
    assert "rec_1" in keys and any(k.startswith("rec_1-") and len(k) == 14 for k in keys)
    assert dict(p.left_out) == {
        NOT_CC: 1,
        UNKNOWN_SPECIES: 1,
        NO_LOCATION: 1,
        DUPLICATE: 1,
        LOW_QUALITY: 1,
    }
    assert p.examples[UNKNOWN_SPECIES] == ["no_such_species (1 row)"]  # the ids to add
    # the licence as written, with its first CSV line (the header is line 1)
    assert p.examples[NOT_CC] == ["All rights reserved (1 row, first row 4)"]
    assert all(r.uri.startswith(str(tmp_path)) for r in p.keep)  # relative to the manifest
    assert p.examples[DUPLICATE] == ["row 7: rec_1-74781a39: the same file and species as row 3"]


def test_an_id_naming_several_files_keeps_each_whatever_the_order(tmp_path, catalogue):
    """Two exports merged, each numbering its own recordings: xeno-canto's 123 and
    iNaturalist's 123 are two recordings. The second was dropped as a "duplicate id"."""
    a, b = catalogue.ids[:2]
    rows = [_row(1, a, id="123"), _row(2, b, id="123"), _row(3, a, id="9"), _row(4, a, id="123")]
    plans = [
        plan(_write(tmp_path / f"m{i}.csv", order, [*rows[0], "id"]), catalogue)
        for i, order in enumerate((rows, rows[::-1]))
    ]
    for p in plans:
        assert len(p.keep) == 4 and not p.left_out
        assert sorted(p.reused_ids) == ["123"]
    first, reverse = ({r.key: r.uri for r in p.keep} for p in plans)
    assert first == reverse  # each file's key does not hang on the rows' order
    assert "9" in first and sum(k.startswith("123-") for k in first) == 3
    assert plans[0].reused_ids["123"] == [2, 3, 5]


def test_species_named_by_scientific_or_common_name_are_read_as_ids(tmp_path, catalogue):
    """GBIF and xeno-canto exports name species; only our ids were read, and every
    other row was left out as "species not in catalogue" with exit 0."""
    sp = catalogue.get(catalogue.ids[0])
    written = [sp.scientific_name, sp.common_name.upper(), sp.scientific_name.replace(" ", "_")]
    rows = [_row(i, w) for i, w in enumerate(written)] + [_row(9, "Nonesuch bird"), _row(8, "")]
    p = plan(_write(tmp_path / "m.csv", rows), catalogue)
    assert [r.species_id for r in p.keep] == [sp.id] * 3
    assert p.named.total() == 3 and f"{written[0]!r} -> {sp.id}" in p.named
    assert p.examples[UNKNOWN_SPECIES] == ["Nonesuch bird (1 row)", "(empty species_id) (1 row)"]
    from training.prepare.run import plan_notes

    # said at the start of every job, not only when no row at all was left
    left, named = plan_notes(p)
    assert left.startswith("2 row(s) left out: their species_id is no catalogue id, scientific")
    assert named.startswith(
        f"3 row(s) name their species by name, read as catalogue ids ({written[0]!r}"
    )


def test_parquet_and_csv_plan_the_same(tmp_path, catalogue):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [_row(i, catalogue.ids[i % 3], license="CC0") for i in range(6)]
    for r in rows:
        del r["licence"]  # the US spelling is accepted too
    _write(tmp_path / "m.csv", rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    a, b = plan(tmp_path / "m.csv", catalogue), plan(tmp_path / "m.parquet", catalogue)
    assert a.digest() == b.digest() and len(a.keep) == 6
    # as pandas writes them: dates as timestamps, an integer column with a gap as floats
    import datetime as dt

    typed = [{**r, "date": dt.datetime(2024, 5, 1), "n": float(i) if i else None}
             for i, r in enumerate(rows)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(typed), tmp_path / "typed.parquet")
    c = plan(tmp_path / "typed.parquet", catalogue)
    assert c.digest() == a.digest() and len(c.keep) == 6

    from training.prepare.manifest import _cell

    assert [_cell(x) for x in (1.0, 2.5, None, dt.date(2024, 5, 4), "x")] == [
        "1", "2.5", "", "2024-05-04", "x"
    ]  # fmt: skip


def test_parquet_cells_and_names_are_trimmed_as_csv_ones_are(tmp_path, catalogue):
    """A CSV's " eurbla " reads as eurbla; the same cell in Parquet (a frame read from a
    hand-edited sheet and saved) was an unknown species, its path a missing file."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [_row(i, catalogue.ids[i % 3]) for i in range(4)]
    _write(tmp_path / "m.csv", rows)
    padded = [{f" {k} ": f" {v}  " for k, v in r.items()} for r in rows]
    _write(tmp_path / "padded.csv", padded)
    pq.write_table(pa.Table.from_pylist(padded), tmp_path / "padded.parquet")
    a = plan(tmp_path / "m.csv", catalogue)
    assert plan(tmp_path / "padded.csv", catalogue).digest() == a.digest()
    b = plan(tmp_path / "padded.parquet", catalogue)
    assert dict(b.left_out) == {} and b.digest() == a.digest()


def test_a_manifest_without_required_columns_says_which(tmp_path, catalogue):
    _write(tmp_path / "m.csv", [{"file": "x.wav", "species_id": "a"}])
    with pytest.raises(
        ManifestError, match=r"missing column\(s\) path or url, licence, date, site"
    ):
        plan(tmp_path / "m.csv", catalogue)
    with pytest.raises(ManifestError, match="no such file"):
        plan(tmp_path / "nope.csv", catalogue)


def test_a_manifest_separated_by_semicolons_or_tabs_says_so(tmp_path, catalogue):
    """A European spreadsheet's CSV (';') was refused as missing every column, the
    header shown as one name 'id;path;url;...', with no word of the separator."""
    for sep, said in ((";", "';'"), ("\t", "tabs")):
        m = tmp_path / "m.csv"
        m.write_text(sep.join(["path", "species_id", "licence", "date", "site"]) + "\n")
        m.write_text(m.read_text() + sep.join(["a.wav", "x", "CC0", "2024-05-01", "S"]) + "\n")
        with pytest.raises(ManifestError, match=f"its columns are separated by {said}, not"):
            plan(m, catalogue)


def test_a_manifest_that_is_not_utf8_text_names_the_file_and_the_fix(tmp_path, catalogue):
    """A Parquet file saved as .txt, or a Latin-1 CSV, used to end in "'utf-8' codec
    can't decode byte 0xa2 in position 7", naming neither the file nor a way out."""
    latin1 = tmp_path / "latin1.csv"
    rows = "path,species_id,licence,date,site\n" + "merle.wav,a,CC0,,\n" * 3000
    latin1.write_bytes((rows + "chouette_é.wav,a,CC0,,\n").encode("latin-1"))
    # past the reader's first chunk: the line is the file's, not the chunk's
    with pytest.raises(ManifestError, match=r"not UTF-8 text \(byte 0xe9 on line 3002\)") as e:
        plan(latin1, catalogue)
    assert "save it as UTF-8 CSV, or as Parquet named .parquet" in str(e.value)


def test_unknown_species_are_listed_by_id_and_parquet_rows_by_record_index(tmp_path, catalogue):
    """The examples were the first five rows ("row 2: bat"), however many species
    the catalogue lacked; in a Parquet file "row 2" was its record 0."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    sp = catalogue.ids[0]
    rows = [_row(i, f"bat{i % 7}") for i in range(20)] + [_row(20, sp, licence="")]
    p = plan(_write(tmp_path / "m.csv", rows), catalogue)
    assert p.left_out[UNKNOWN_SPECIES] == 20
    assert p.examples[UNKNOWN_SPECIES][:2] == ["bat0 (3 rows)", "bat1 (3 rows)"]
    assert p.examples[UNKNOWN_SPECIES][-1] == "and 2 more species ids"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    assert plan(tmp_path / "m.parquet", catalogue).examples[NOT_CC] == [
        "(empty) (1 row, first record 20)"
    ]


def test_background_species_are_read_as_catalogue_ids_from_either_column(tmp_path, catalogue):
    """Names or ids, ";" or "," between them; the focal species and repeats dropped, and
    a name the catalogue lacks kept as written and counted."""
    a, b, c = catalogue.ids[:3]
    name_b = catalogue[1].scientific_name
    rows = [
        _row(1, a, background_species=f"{b}; {name_b.upper()} ,{c},{a}"),
        _row(2, b, background_species=" Avis  incognita ;"),
        _row(3, c, background_species=""),
    ]
    p = plan(_write(tmp_path / "m.csv", rows), catalogue)
    heard = {r.species_id: r.background_species for r in p.keep}  # keep is in key order
    assert heard == {a: (b, c), b: ("Avis incognita",), c: ()}
    assert dict(p.background_unknown) == {"Avis incognita": 1}
    assert all(r.meta()["background_species"] == heard[r.species_id] for r in p.keep)
    also = [{**r, "also": r.pop("background_species")} for r in rows]
    assert plan(_write(tmp_path / "also.csv", also), catalogue).keep == p.keep


def test_a_manifest_without_background_species_keeps_its_plan_digest(tmp_path, catalogue):
    """Jobs of a prepare begun before the column was read resume on the same plan."""
    import hashlib

    rows = [_row(i, catalogue.ids[i % 3]) for i in range(4)]
    p = plan(_write(tmp_path / "m.csv", rows), catalogue)
    h = hashlib.sha256()
    for r in p.keep:  # the digest as it was computed before background species
        h.update(f"{r.key}\t{r.uri}\t{r.species_id}\n".encode())
    assert p.digest() == h.hexdigest()[:16]
    rows[0]["background_species"] = catalogue.ids[2]
    assert plan(_write(tmp_path / "m2.csv", rows), catalogue).digest() != p.digest()


def test_a_parquet_list_of_background_species_reads_as_the_csv_cell(tmp_path, catalogue):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    a, b, c = catalogue.ids[:3]
    rows = [_row(1, a), _row(2, b)]
    pq.write_table(
        pa.Table.from_pylist(
            [{**rows[0], "also": [b, c]}, {**rows[1], "also": []}],
        ),
        tmp_path / "m.parquet",
    )
    p = plan(tmp_path / "m.parquet", catalogue)
    assert {r.species_id: r.background_species for r in p.keep} == {a: (b, c), b: ()}


def test_a_list_literal_quoted_names_and_common_names_are_matched(tmp_path, catalogue):
    """xeno-canto's "also" saved as a Python list literal, names quoted, spaced or cased
    otherwise, and common names, stayed unmatched: their recordings trained even where
    an unseen species called in them, counted only as not in the catalogue."""
    a, b, c = catalogue[0], catalogue[1], catalogue[2]
    read = background_reader(catalogue)
    assert read(f"['{b.scientific_name}', '{c.scientific_name}']", a.id) == (b.id, c.id)
    assert read(f'["{b.scientific_name}"]', a.id) == (b.id,)
    assert read(f"  {b.id.upper()} ;  '{c.common_name.lower()}'  ", a.id) == (b.id, c.id)
    assert read(f"{'  '.join(b.scientific_name.swapcase().split(' '))}", a.id) == (b.id,)
    assert read("[]", a.id) == () and read("['']", a.id) == ()
    # entries an older reader stored as it split them, read again
    assert read((f"['{b.scientific_name}'", f" '{a.common_name}']"), a.id) == (b.id,)
    rows = [_row(1, a.id, also=f"['{b.scientific_name}', 'Avis incognita']")]
    p = plan(_write(tmp_path / "m.csv", rows), catalogue)
    assert p.keep[0].background_species == (b.id, "Avis incognita")
    assert dict(p.background_unknown) == {"Avis incognita": 1}


def test_a_common_name_two_species_share_matches_neither(catalogue):
    from animalclap_edge.contracts.catalogue import Species

    twins = [
        Species("s1", "Genus alpha", "Robin", "Aves", "O", "F", "Genus"),
        Species("s2", "Genus beta", "robin", "Aves", "O", "F", "Genus"),
        Species("s3", "Genus gamma", "Wren", "Aves", "O", "F", "Genus"),
    ]
    read = background_reader(Catalogue(twins))
    assert read("ROBIN; wren", "") == ("ROBIN", "s3")


def test_unmatched_background_names_are_one_warning_line():
    from collections import Counter

    assert unmatched_note(Counter()) is None
    note = unmatched_note(Counter({"Avis incognita": 5, "['x": 2, "y": 1, "z": 1}))
    assert note.startswith(
        "warning: 4 background species name(s) in 9 recording(s) match no catalogue id, "
        "scientific or common name ('Avis incognita', \"['x\", 'y' and 1 more): "
    )
    assert "\n" not in note and note.endswith("or add the species to the catalogue")


def test_a_long_id_gives_a_key_a_shard_can_hold(tmp_path):
    # a tar (USTAR) member name holds 100 characters: "<key>.flac" with a longer key
    # stopped the whole run ("name is too long") after hours of decoding
    from training.prepare.manifest import recording_key
    from training.prepare.shards import ShardWriter

    long_a = "XC" + "1234567890" * 12 + "a"
    long_b = "XC" + "1234567890" * 12 + "b"
    keys = {recording_key({"id": i}, "/x.wav") for i in (long_a, long_b)}
    assert len(keys) == 2  # still one key per id
    w = ShardWriter(tmp_path, 0)
    for key in keys:
        w.add(key, np.zeros(4800, np.float32), {"species_id": "eurbla"})
    w.close()
    # ids that fitted keep their keys: folders prepared before still resume
    assert recording_key({"id": "a" * 95}, "/x.wav") == "a" * 95
    assert recording_key({"id": "ok.1"}, "/x.wav").startswith("ok_1-")


def test_urls_fetch_cannot_download_are_left_out_when_planned(tmp_path, catalogue):
    """An s3:// or gs:// location failed only when its shard was written, three tries
    and 3.5 s of back-off per row: a manifest of bucket URLs spent hours to reject all."""
    from training.prepare.manifest import UNSUPPORTED_URL

    sp = catalogue.ids[0]
    rows = [
        {**_row(1, sp), "path": "s3://bucket/xc/1.mp3"},
        {**_row(2, sp), "path": "gs://bucket/xc/2.mp3"},
        {**_row(3, sp), "path": "https://xeno-canto.org/3/download"},
        {**_row(4, sp), "path": "file:///data/4.wav"},
        _row(5, sp),
    ]
    p = plan(_write(tmp_path / "m.csv", rows), catalogue)
    assert len(p.keep) == 3
    assert dict(p.left_out) == {UNSUPPORTED_URL: 2}
    assert p.examples[UNSUPPORTED_URL][0].startswith("row 2: s3://")


# Each row: path, licence, site and date (species added); which row's shift is said.
SHIFTED = {
    # an unquoted comma in a cell ("Kruger, SA") shifts every later cell of its row: the
    # date became " SA", so recordings of different days were one site-day group
    "extra cell": (
        "path,species_id,licence,site,date",
        ["a/1.wav,CC0,Kruger,2024-01-01", "a/2.wav,CC0,Kruger, SA,2024-01-02",
         'a/3.wav,CC0,"Kruger, SA",2024-01-03'],
        ["2024-01-01", "2024-01-03"], "row 3: ",
    ),
    # the shift's overflow was only the empty optional last column: the row was read
    # shifted (its site cut, its date the site's second half) without a word
    "empty last cell": (
        "path,species_id,licence,site,date,background_species",
        ["a/1.wav,CC0,Kruger,2024-01-01,", "a/2.wav,CC0,Kruger, SA,2024-01-02,",
         "a/3.wav,CC0,Kruger,2024-01-03,"],
        ["2024-01-01", "2024-01-03"], "row 3: ",
    ),
    # a spreadsheet's export, a comma ending every line, is still read
    "every line ends with a comma": (
        "path,species_id,licence,site,date",
        ["a/1.wav,CC0,Kruger,2024-01-01,", "a/2.wav,CC0,Kruger,2024-01-02,",
         "a/3.wav,CC0,Kruger, SA,2024-01-03,"],
        ["2024-01-01", "2024-01-02"], "row 4: ",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", SHIFTED)
def test_a_csv_row_shifted_by_an_unquoted_comma_is_left_out_and_said(case, tmp_path, catalogue):
    from training.prepare.manifest import MALFORMED

    header, rows, kept, said = SHIFTED[case]
    sp = catalogue.ids[0]
    path = tmp_path / "m.csv"
    lines = [header] + [r.replace(",", f",{sp},", 1) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    p = plan(path, catalogue)
    assert sorted(r.date for r in p.keep) == kept
    assert dict(p.left_out) == {MALFORMED: 1}
    assert p.examples[MALFORMED][0].startswith(said)


def test_one_file_listed_under_two_species_hears_each_and_a_copy_is_a_duplicate(
    tmp_path, catalogue
):
    """A recording of two species listed once per species (as several archives do): each
    row was kept as its own recording with nothing in the background, so with one of
    the two an unseen test species, its call was trained on under the other's label.
    The same file again under another id, same species, was prepared twice."""
    a, b = catalogue.ids[:2]
    rows = [
        _row(1, a, id="r1"),
        _row(1, b, id="r2"),  # the same file, the other species calling
        _row(2, a, id="r3"),
        _row(2, a, id="r4"),  # the same file and species under another id
        _row(3, a),
        _row(3, b),  # no ids: one key, so one recording hearing both
    ]
    p = plan(_write(tmp_path / "m.csv", rows, [*rows[0], "id"]), catalogue)
    heard = {(r.uri.rsplit("/", 1)[-1], r.species_id): r.background_species for r in p.keep}
    assert heard == {
        ("1.wav", a): (b,),
        ("1.wav", b): (a,),
        ("2.wav", a): (),
        ("3.wav", a): (b,),
    }
    assert p.left_out[DUPLICATE] == 2
    assert any("r4" in e and "r3" in e for e in p.examples[DUPLICATE])


def test_licences_left_out_are_listed_by_how_many_rows_have_each(tmp_path, catalogue):
    """The examples were the first five rows left out: a manifest whose first rows
    were "All rights reserved" hid that 10 rows more had another licence string (one
    the filter might have misread), which was the one worth seeing."""
    sp = catalogue.ids[0]
    rows = [_row(i, sp, licence="All rights reserved") for i in range(6)]
    rows += [_row(10 + i, sp, licence="Copyright Macaulay Library") for i in range(10)]
    rows += [_row(30 + i, sp, licence=f"custom {i}") for i in range(5)]
    p = plan(_write(tmp_path / "m.csv", rows), catalogue)
    assert p.examples[NOT_CC][:2] == [
        "Copyright Macaulay Library (10 rows, first row 8)",
        "All rights reserved (6 rows, first row 2)",
    ]
    assert p.examples[NOT_CC][-1] == "and 2 more licence strings"


def test_an_id_reused_for_another_file_is_not_a_species_heard(tmp_path, catalogue):
    """Rows of one key hear each other's species where the key is the file's (rows
    without ids). An id given to two files names two recordings (merged exports), each
    kept under its own key; neither file hears the other's species: a seen species
    wrongly kept out of training as heard beside an unseen one, or a clip labelled
    with a species it lacks, came of it when the second row was a duplicate."""
    a, b = catalogue.ids[:2]
    rows = [_row(1, a, id="x"), _row(2, b, id="x")]
    p = plan(_write(tmp_path / "m.csv", rows, [*rows[0], "id"]), catalogue)
    got = sorted((r.uri.rsplit("/", 1)[-1], r.species_id, r.background_species) for r in p.keep)
    assert got == [("1.wav", a, ()), ("2.wav", b, ())]
    assert not p.left_out
