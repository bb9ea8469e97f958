"""The benchmark corpus: sizes, determinism, long tail, audio and the disk format."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from animalclap_edge.contracts.catalogue import Catalogue
from animalclap_edge.contracts.traits import read_trait_table
from training.benchmark.corpus import SIZES, Benchmark, recording_counts

SR = 48_000


@pytest.fixture(scope="module")
def tiny() -> Benchmark:
    return Benchmark.build("tiny", seed=0)


def test_sizes_have_four_classes_and_the_promised_scale():
    for size in SIZES.values():
        assert {"Aves", "Amphibia", "Insecta", "Mammalia"} <= set(size.species_per_class)
    assert SIZES["tiny"].n_species == 24 and SIZES["tiny"].n_recordings == 200
    assert SIZES["small"].n_species == 160 and SIZES["small"].n_recordings == 4000
    assert SIZES["full"].n_species == 2000 and SIZES["full"].n_recordings == 120_000


def test_build_is_deterministic(tiny):
    again = Benchmark.build("tiny", seed=0)
    assert [s.to_row() for s in again.catalogue] == [s.to_row() for s in tiny.catalogue]
    assert again.traits == tiny.traits and again.recordings == tiny.recordings
    rec = tiny.recordings[7]
    assert np.array_equal(again.render(rec), tiny.render(rec))
    other = Benchmark.build("tiny", seed=1)
    assert other.catalogue.ids != tiny.catalogue.ids
    assert other.recordings != tiny.recordings


def test_tiny_structure(tiny):
    counts = tiny.counts()
    assert counts["species"] == 24 and counts["recordings"] == 200
    genera = [sum(1 for s in tiny.catalogue if s.genus == g) for g in tiny.catalogue.taxa("genus")]
    assert np.mean([n >= 2 for n in genera]) >= 0.8
    assert len({r.id for r in tiny.recordings}) == 200
    assert all(3.0 <= r.duration_s <= 6.0 for r in tiny.recordings)
    assert any(r.background_species for r in tiny.recordings)
    assert all(r.background_species != r.species_id for r in tiny.recordings)


@pytest.mark.parametrize("size", ["tiny", "small", "full"])
def test_recordings_per_species_are_long_tailed(size):
    spec = SIZES[size]
    n = recording_counts(spec.n_species, spec, seed=0)
    assert n.sum() == spec.n_recordings and n.min() >= spec.min_recordings
    assert n.max() / n.min() >= 5
    assert (n < 15).sum() >= max(3, spec.n_species // 10)


def test_wide_has_fulls_species_and_three_recordings_each():
    """wide is for GPU throughput: full's catalogue (its prompt lengths), little audio."""
    wide, full = SIZES["wide"], SIZES["full"]
    assert wide.species_per_class == full.species_per_class
    n = recording_counts(wide.n_species, wide, seed=0)
    assert n.sum() == wide.n_recordings == 3 * wide.n_species and (n == 3).all()


def test_audio_is_valid(tiny):
    for rec in tiny.recordings[::25]:
        x = tiny.render(rec)
        assert x.dtype == np.float32 and x.shape == (round(rec.duration_s * SR),)
        assert np.isfinite(x).all() and np.abs(x).max() <= 1.0 and np.abs(x).max() > 0
    rec = tiny.recordings[0]
    assert tiny.render(rec, sample_rate=16_000).shape == (round(rec.duration_s * 16_000),)


def test_site_and_day_share_noise_character(tiny):
    a = tiny.recordings[0]
    assert tiny.site_character(a.site, a.date) == tiny.site_character(a.site, a.date)
    others = {tiny.site_character(r.site, r.date) for r in tiny.recordings}
    assert len(others) > 1


def test_write_and_load_round_trip(tiny, tmp_path, capsys):
    out = tiny.write(tmp_path / "bench", workers=2, progress=False)
    meta = json.loads((out / "benchmark.json").read_text())
    assert meta["seed"] == 0 and meta["size"]["name"] == "tiny"
    assert meta["counts"]["recordings"] == 200
    assert Catalogue.from_csv(out / "catalogue.csv").ids == tiny.catalogue.ids
    assert read_trait_table(out / "traits.csv", tiny.schema) == tiny.traits
    with open(out / "recordings.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 200
    assert {"path", "species_id", "site", "date", "duration_s", "snr_db"} <= set(rows[0])
    from training.prepare.manifest import plan

    # prepare keeps Creative Commons rows only: it refused all 200 ("generated")
    assert len(plan(out / "recordings.csv", tiny.catalogue).keep) == 200
    assert rows[0]["source"] == "animalclap benchmark tiny seed 0"
    for row in rows:
        assert (out / row["path"]).is_file()

    loaded = Benchmark.load(out)
    assert loaded.recordings == tiny.recordings and loaded.traits == tiny.traits
    assert loaded.catalogue.ids == tiny.catalogue.ids and loaded.size == tiny.size
    rec = loaded.recordings[3]
    audio, sr = sf.read(out / rec.path, dtype="float32")
    assert sr == SR and audio.shape == (round(rec.duration_s * SR),)
    assert np.abs(audio - loaded.render(rec)).max() <= 1.5 / 32768  # PCM_16 quantisation

    with pytest.raises(FileExistsError):
        tiny.write(out, progress=False)
    # the CLI names the flag its message points to (it named overwrite=True before)
    from training.cli import main

    argv = ["benchmark", "--size", "tiny", "--out", str(out)]
    assert main(argv) == 2
    assert "give another --out, or --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert Benchmark.load(out).recordings == tiny.recordings
