"""A crop decodes only its own frames, and gives the very samples a full decode would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from animalclap_edge.audio.decode import read_all
from animalclap_edge.contracts.catalogue import Catalogue
from animalclap_edge.contracts.traits import TraitSchema
from training.labelled_audio import Item, LabelledSet, _read_crop, crop

SR = 48_000


def _set(tmp_path, files: dict[str, tuple[float, int, str]]) -> LabelledSet:
    rng = np.random.default_rng(0)
    items = []
    for name, (seconds, sr, subtype) in files.items():
        x = rng.uniform(-0.5, 0.5, (round(seconds * sr), 2)).astype(np.float32)
        sf.write(tmp_path / name, x, sr, subtype=subtype)
        items.append(Item(name, "sp", "site|day", seconds))
    return LabelledSet(
        name="t",
        catalogue=Catalogue([]),
        items=items,
        load=lambda it: read_all(tmp_path / it.id, SR),
        traits=None,
        schema=TraitSchema.default(),
        file_of=lambda it: tmp_path / it.id,
        sample_rate=SR,
    )


def test_a_crop_equals_the_same_crop_of_the_whole_file(tmp_path):
    data = _set(
        tmp_path,
        {
            "long.flac": (25.0, SR, "PCM_16"),  # read in part
            "long.wav": (12.0, SR, "FLOAT"),  # read in part
            "short.flac": (4.0, SR, "PCM_16"),  # repeat-padded: whole file
            "other_rate.flac": (20.0, 44_100, "PCM_16"),  # resampled: whole file
        },
    )
    n = 10 * SR
    for it in data.items:
        for seed in range(5):
            fast = data.crop(it, n, np.random.default_rng(seed))
            full = crop(data.load(it), n, np.random.default_rng(seed))
            assert fast.dtype == np.float32 and len(fast) == n
            np.testing.assert_array_equal(fast, full, err_msg=f"{it.id} seed {seed}")
        centred = data.crop(it, n, None)
        np.testing.assert_array_equal(centred, crop(data.load(it), n, None))
    # the partial read is taken where it can be, and only there
    took = {it.id: _read_crop(tmp_path / it.id, n, None, SR) is not None for it in data.items}
    assert took == {
        "long.flac": True,
        "long.wav": True,
        "short.flac": False,
        "other_rate.flac": False,
    }


def test_a_window_at_an_offset_equals_slicing_the_whole_file(tmp_path):
    """Distillation's fixed windows: read alone where they can be, same samples."""
    data = _set(
        tmp_path,
        {
            "long.flac": (25.0, SR, "PCM_16"),
            "short.flac": (2.0, SR, "PCM_16"),
            "other_rate.flac": (20.0, 44_100, "PCM_16"),
        },
    )
    n = 3 * SR
    for it in data.items:
        whole = data.load(it)
        for offset in (0, 5 * SR + 17, len(whole) - n):
            got = data.window(it, max(offset, 0), n)
            want = crop(whole, n, None) if len(whole) <= n else whole[offset : offset + n]
            assert got.dtype == np.float32 and len(got) == n
            np.testing.assert_array_equal(got, want, err_msg=f"{it.id} at {offset}")
    # an offset past the end (a duration in the metadata too long) ends at the last frame
    long = data.items[0]
    np.testing.assert_array_equal(data.window(long, 30 * SR, n), data.load(long)[-n:])


def test_a_recordings_folder_with_a_missing_file_is_refused_at_open(real_folder, tmp_path):
    """It used to surface as an AudioError traceback in the middle of training."""
    import csv

    import pytest

    from training.labelled_audio import open_labelled

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "catalogue.csv").write_text((real_folder / "catalogue.csv").read_text())
    rows = list(csv.DictReader((real_folder / "recordings.csv").open()))
    rows.insert(3, {**rows[3], "path": "missing.wav"})
    with open(broken / "recordings.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(ValueError, match=r"recordings\.csv row 5: 'missing\.wav' is not a file"):
        open_labelled(str(broken))
    assert len(open_labelled(str(real_folder)).items) == len(rows) - 1


def _folder_of(real_folder: Path, root: Path, files: list[Path]) -> Path:
    """A recordings folder over `files`, each labelled with the catalogue's first species."""
    root.mkdir()
    (root / "catalogue.csv").write_text((real_folder / "catalogue.csv").read_text())
    species = Catalogue.from_csv(real_folder / "catalogue.csv").ids[0]
    rows = "".join(f"{f},{species},site{i},\n" for i, f in enumerate(files))
    (root / "recordings.csv").write_text("path,species_id,site,date\n" + rows)
    return root


def test_a_species_id_typo_suggests_the_near_id(real_folder, tmp_path):
    from training.labelled_audio import open_labelled

    good = tmp_path / "good.wav"
    sf.write(good, np.zeros(4800, np.float32), 48_000)
    folder = _folder_of(real_folder, tmp_path / "f", [good])
    species = Catalogue.from_csv(folder / "catalogue.csv").ids[0]
    text = (folder / "recordings.csv").read_text()
    (folder / "recordings.csv").write_text(text.replace(f",{species},", f",{species.upper()} ,"))
    with pytest.raises(ValueError, match=rf"not in catalogue.csv; did you mean '{species}'\?$"):
        open_labelled(str(folder))
    (folder / "recordings.csv").write_text(text.replace(f",{species},", ",zzzzzzzz,"))
    with pytest.raises(ValueError, match=r"'zzzzzzzz' not in catalogue.csv$"):
        open_labelled(str(folder))


def test_a_file_that_is_not_audio_is_refused_at_open(real_folder, tmp_path):
    from training.labelled_audio import open_labelled

    junk = tmp_path / "eurbla_03.wav"
    junk.write_text("not audio")
    good = tmp_path / "good.wav"
    sf.write(good, np.zeros(4800, np.float32), 48_000)
    folder = _folder_of(real_folder, tmp_path / "f", [good, junk])
    with pytest.raises(
        ValueError, match=r"row 3: '.*eurbla_03\.wav': cannot decode: .*remove its row"
    ):
        open_labelled(str(folder))


def test_a_recording_torn_past_its_header_is_named_in_one_line_from_a_loader_worker(
    real_folder, tmp_path
):
    """A FLAC cut short passes the header check and fails mid-epoch, in a worker: the
    error was a 73-line traceback whose last line named no file."""
    import torch

    from animalclap_edge.cli_help import one_line
    from training.labelled_audio import open_labelled

    torn = tmp_path / "torn.flac"
    sf.write(torn, 0.1 * np.random.default_rng(0).standard_normal(48_000 * 6), 48_000)
    with open(torn, "r+b") as f:
        f.truncate(torn.stat().st_size // 2)
    data = open_labelled(str(_folder_of(real_folder, tmp_path / "f", [torn])))

    class Crops(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int) -> np.ndarray:
            return data.crop(data.items[i], 48_000 * 5, np.random.default_rng(0))

    with pytest.raises(ValueError) as caught:
        next(iter(torch.utils.data.DataLoader(Crops(), num_workers=1)))
    assert "Original Traceback" in str(caught.value)  # as torch re-raises it
    msg = one_line(caught.value)
    assert msg.startswith(f"{torn}: cannot read it (truncated or corrupt after ")
    # replacing the file resumes; removing its row would meet the changed-data refusal
    assert msg.endswith(
        "replace the file under the same name and run the same command again (a pretrain "
        "or finetune run resumes from its last checkpoint; one run without the file trains "
        "on other data, so give it a new --out)"
    )


@pytest.mark.parametrize("length", [1, 7, 999, 1000, 1001, 4321])
def test_crop_repeat_pads_as_clap_does_and_fills_a_given_buffer(length):
    """`crop` pads short clips as transformers' ClapFeatureExtractor("repeatpad") does
    (`repeat_pad`: whole copies, then zeros), in float32, into `out` when given."""
    from animalclap_edge.contracts.frontend import repeat_pad

    wave = np.random.default_rng(length).standard_normal(length)  # float64 in
    out = np.full(1000, np.nan, np.float32)
    got = crop(wave, 1000, np.random.default_rng(0), out=out)
    assert got is out and got.dtype == np.float32
    if length <= 1000:
        np.testing.assert_array_equal(got, repeat_pad(wave, 1000).astype(np.float32))
    else:
        start = int(np.random.default_rng(0).integers(0, length - 1000 + 1))
        np.testing.assert_array_equal(got, wave[start : start + 1000].astype(np.float32))
    np.testing.assert_array_equal(crop(wave, 1000, np.random.default_rng(0)), got)
    with pytest.raises(ValueError, match="non-empty"):
        crop(np.zeros(0, np.float32), 1000, None)


def test_a_crop_by_table_row_equals_the_crop_by_item(tmp_path):
    """What a loader worker calls (no item touched) gives `crop`'s samples, int16 rows,
    float rows and plain crops alike, for files read in part and decoded whole."""
    from training.labelled_audio import ClipTable

    data = _set(
        tmp_path,
        {
            "long.flac": (25.0, SR, "PCM_16"),
            "long.wav": (12.0, SR, "FLOAT"),
            "short.flac": (4.0, SR, "PCM_16"),
            "other_rate.flac": (20.0, 44_100, "PCM_16"),
        },
    )
    data.loads_files = True
    table = ClipTable.of(data, data.items)
    assert table is not None and len(table) == 4 and len(table.files) == 4
    n = 10 * SR
    for row, it in enumerate(data.items):
        assert Path(table.source(row)) == tmp_path / it.id
        for seed in (0, 1):
            for dtype in (None, np.int16, np.float32):
                by = {}
                for how in ("item", "row"):
                    out = None if dtype is None else np.zeros(n, dtype)
                    rng = np.random.default_rng(seed)
                    by[how] = (
                        data.crop(it, n, rng, out=out)
                        if how == "item"
                        else data.crop_row(table, row, n, rng, out=out)
                    )
                np.testing.assert_array_equal(by["row"], by["item"], err_msg=f"{it.id} {dtype}")
                assert by["row"].dtype == by["item"].dtype


def test_no_table_where_an_item_has_no_file_or_the_set_does_not_promise_its_load(tmp_path):
    from training.labelled_audio import ClipTable

    data = _set(tmp_path, {"a.flac": (2.0, SR, "PCM_16")})
    assert ClipTable.of(data, data.items) is None  # load not promised to be the file's
    data.loads_files = True
    assert ClipTable.of(data, data.items) is not None
    data.file_of = lambda it: None  # rendered in memory
    assert ClipTable.of(data, data.items) is None


def test_data_that_is_no_kind_of_labelled_set_is_one_line_naming_what_to_give(
    real_folder, tmp_path
):
    """These used to be a traceback (KeyError 'species_id') or "[Errno 2] No such file
    or directory: '.../benchmark.json'" about a file the user never named."""
    from training.labelled_audio import open_labelled

    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "catalogue.csv").write_text((real_folder / "catalogue.csv").read_text())
    text = (real_folder / "recordings.csv").read_text()
    (renamed / "recordings.csv").write_text(text.replace("species_id", "species", 1))
    unfinalized = tmp_path / "unfinalized"
    (unfinalized / "shards").mkdir(parents=True)
    (unfinalized / "plan.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    cases = {
        str(renamed): r"recordings\.csv: missing column\(s\) species_id \(has path, species,",
        str(unfinalized): r"not yet finalized .* prepare --out .*unfinalized --finalize",
        str(tmp_path / "empty"): r"no prepared\.json, recordings\.csv or benchmark\.json; give",
        "": "data: empty; give a folder written by `animalclap-train prepare`",
        "huge": r"not a folder and not a benchmark size \(.*small.*\); give a folder written",
        "tiny:x": "not a folder and not a benchmark size",
    }
    for spec, message in cases.items():
        with pytest.raises(ValueError, match=message) as e:
            open_labelled(spec)
        assert "\n" not in str(e.value)
    # a spreadsheet's byte-order mark is not part of the column's name
    (renamed / "recordings.csv").write_text("\ufeff" + text, encoding="utf-8")
    assert len(open_labelled(str(renamed)).items) == len(open_labelled(str(real_folder)).items)


def test_items_carry_the_species_calling_in_their_background(real_folder, tmp_path):
    """What the zero-shot split needs to keep unseen species out of training audio: the
    benchmark's second caller, a recordings folder's optional background_species."""
    import csv

    from training.benchmark.corpus import Benchmark
    from training.labelled_audio import open_labelled

    bench = Benchmark.build("tiny")
    items = open_labelled("tiny").items
    assert [it.background for it in items] == [
        (r.background_species,) if r.background_species else () for r in bench.recordings
    ]
    assert any(it.background for it in items)

    folder = tmp_path / "heard"
    folder.mkdir()
    (folder / "catalogue.csv").write_text((real_folder / "catalogue.csv").read_text())
    cat = Catalogue.from_csv(folder / "catalogue.csv")
    rows = list(csv.DictReader((real_folder / "recordings.csv").open()))
    other = next(sp for sp in cat if sp.id != rows[0]["species_id"])
    rows[0]["background_species"] = f"{other.scientific_name}; Avis incognita"
    with open(folder / "recordings.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    heard = [it.background for it in open_labelled(str(folder)).items]
    assert heard[0] == (other.id, "Avis incognita") and not any(heard[1:])


def test_a_prepared_folder_reads_background_names_stored_unmatched_again(tmp_path):
    """Folders prepared earlier on 2026-11-27 stored a list literal's pieces ("['Genus
    beta'") and common names as written: read as stored, their recordings trained
    even where an unseen species called in them."""
    import json

    from animalclap_edge.contracts.catalogue import Species
    from training.labelled_audio import open_labelled

    cat = Catalogue(
        [
            Species("s1", "Genus alpha", "Alpha bird", "Aves", "O", "F", "Genus"),
            Species("s2", "Genus beta", "Beta bird", "Aves", "O", "F", "Genus"),
        ]
    )
    cat.to_csv(tmp_path / "catalogue.csv")
    (tmp_path / "prepared.json").write_text("{}")
    stored = [["['Genus beta'", " 'Avis incognita']"], ["s1"], ["beta BIRD"], []]
    with open(tmp_path / "records.jsonl", "w") as f:
        for j, heard in enumerate(stored):
            rec = {"key": f"r{j}", "species_id": "s1" if j != 1 else "s2", "site": "x",
                   "date": "d", "duration_s": 1.0, "shard": "shard-000000.tar",
                   "offset": 0, "size": 0, "background_species": heard}  # fmt: skip
            f.write(json.dumps(rec) + "\n")
    heard = [it.background for it in open_labelled(str(tmp_path)).items]
    assert heard == [("s2", "Avis incognita"), ("s1",), ("s2",), ()]


def test_recordings_csv_header_names_are_read_without_spaces_around_them(real_folder, tmp_path):
    """ "path, species_id, site, date" (a spreadsheet's space after each comma) was
    refused as missing species_id, the column it visibly has; the catalogue's header
    reads so too."""
    from training.labelled_audio import open_labelled

    good = tmp_path / "good.wav"
    sf.write(good, np.zeros(4800, np.float32), 48_000)
    folder = _folder_of(real_folder, tmp_path / "f", [good])
    lines = (folder / "recordings.csv").read_text().splitlines()
    lines[0] = ", ".join(lines[0].split(","))
    (folder / "recordings.csv").write_text("\n".join(lines) + "\n")
    data = open_labelled(str(folder))
    assert [it.group for it in data.items] == ["site0|"]  # the site read, not dropped
