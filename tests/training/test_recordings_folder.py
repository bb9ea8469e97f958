"""`animalclap-train recordings`: a folder's recordings.csv from its layout."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import soundfile as sf

from animalclap_edge.contracts.catalogue import Catalogue, Species
from training.cli import build_parser, main
from training.labelled_audio import open_labelled
from training.prepare.decode import DecodeSettings
from training.recordings_folder import day_in_name, next_command, scan, summary


@pytest.mark.parametrize(
    "name, day",
    [
        ("20240514_053000.WAV", "2024-05-14"),  # AudioMoth
        ("SMM01234_20240514_233000+0200.wav", "2024-05-14"),  # Song Meter, offset to UTC
        ("2024-05-14 dawn.ogg", "2024-05-14"),
        ("forest 20240514.flac", "2024-05-14"),
        ("take 12345678.wav", ""),  # eight digits that are no date
        ("XC123456 - Tawny Owl - Strix aluco.mp3", ""),
    ],
)
def test_the_day_is_read_from_a_file_name(name, day):
    assert day_in_name(name) == day


@pytest.fixture
def catalogue():
    rows = [
        ("eurbla", "Turdus merula", "Eurasian Blackbird", "Turdidae", "Turdus"),
        ("eurrob1", "Erithacus rubecula", "European Robin", "Muscicapidae", "Erithacus"),
        ("tawowl1", "Strix aluco", "Tawny Owl", "Strigidae", "Strix"),
        ("rana_temporaria", "Rana temporaria", "Common Frog", "Ranidae", "Rana"),
    ]
    return Catalogue([Species(i, s, c, "Aves", "O", f, g) for i, s, c, f, g in rows], "test")


def _layout(root, realaudio, paths):
    sources = sorted(realaudio.glob("*.ogg"))
    for i, rel in enumerate(paths):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[i], root / rel)


def test_species_site_and_day_come_from_folders_and_names(tmp_path, realaudio, catalogue):
    """Site folders above species folders, a species folder alone (the given site),
    a folder named by an id with underscores, xeno-canto's file names, and a file
    nothing places."""
    _layout(tmp_path, realaudio, [
        "north/Turdus_merula/20240514_053000.WAV",
        "north/european-robin/2024-05-15 dawn.ogg",
        "Tawny Owl/owl 20240601.flac",
        "rana_temporaria/frog.wav",
        "XC123 - Eurasian Blackbird - Turdus merula.ogg",
        "mystery.ogg",
    ])  # fmt: skip
    got = scan(tmp_path, catalogue, site="valley")
    assert [(r.path, r.species_id, r.site, r.date) for r in got.rows] == [
        ("Tawny Owl/owl 20240601.flac", "tawowl1", "valley", "2024-06-01"),
        ("XC123 - Eurasian Blackbird - Turdus merula.ogg", "eurbla", "valley", ""),
        ("north/Turdus_merula/20240514_053000.WAV", "eurbla", "north", "2024-05-14"),
        ("north/european-robin/2024-05-15 dawn.ogg", "eurrob1", "north", "2024-05-15"),
        ("rana_temporaria/frog.wav", "rana_temporaria", "valley", ""),
    ]
    assert got.unplaced == ["mystery.ogg"]


def test_the_command_writes_a_folder_finetune_opens(tmp_path, realaudio, catalogue, capsys):
    root = tmp_path / "region"
    _layout(root, realaudio, ["a/Turdus_merula/20240514_053000.ogg",
                              "a/Turdus_merula/20240515_053000.ogg", "b/Strix aluco/x.ogg",
                              "unknown.ogg"])  # fmt: skip
    cat = tmp_path / "species.csv"
    catalogue.to_csv(cat)
    argv = ["recordings", "--audio", str(root), "--catalogue", str(cat)]
    assert main(argv) == 2  # a file nothing places: refused, nothing written
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown.ogg" in err and "--skip-unplaced" in err
    assert not (root / "recordings.csv").exists() and not (root / "catalogue.csv").exists()
    assert main([*argv, "--skip-unplaced"]) == 0
    said = capsys.readouterr().out
    assert "3 recordings of 2 of the catalogue's 4 species, 2 site(s)" in said
    assert "1 species recorded on one site-day only" in said and "tawowl1" in said
    data = open_labelled(str(root))
    assert sorted(it.species_id for it in data.items) == ["eurbla", "eurbla", "tawowl1"]
    assert len({it.group for it in data.items}) == 3  # a|2024-05-14, a|2024-05-15, b|
    assert main([*argv, "--skip-unplaced"]) == 2  # a second run: refused unless --overwrite
    assert "--overwrite" in capsys.readouterr().err
    (root / "a" / "Turdus_merula" / "torn.ogg").write_bytes(b"OggS" + b"\0" * 10)
    assert main([*argv, "--skip-unplaced", "--overwrite"]) == 2
    assert "torn.ogg" in capsys.readouterr().err
    with open(root / "recordings.csv", newline="") as f:  # the earlier rows kept
        assert len(list(csv.DictReader(f))) == 3


def _touch(root, paths):
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")  # scan places by name; it reads no audio


def test_a_name_matches_whatever_mix_of_spaces_underscores_and_hyphens_splits_it(tmp_path):
    """`_`, `-` and spaces are one separator on both sides, in any case: a hyphenated
    common name as a folder in the docs' `Turdus_merula` style, and a scientific name
    with a hyphen (Polygonia c-album) written with underscores."""
    rows = [
        ("pitsan1", "Pterocles alchata", "Pin-tailed Sandgrouse", "Pteroclidae", "Pterocles"),
        ("comma1", "Polygonia c-album", "Comma", "Nymphalidae", "Polygonia"),
        ("eurbla", "Turdus merula", "Eurasian Blackbird", "Turdidae", "Turdus"),
    ]
    cat = Catalogue([Species(i, s, c, "Aves", "O", f, g) for i, s, c, f, g in rows], "test")
    _touch(tmp_path, [
        "forest/Pin-tailed_Sandgrouse/1.wav",
        "forest/pin_tailed_sandgrouse/2.wav",
        "forest/PIN TAILED SANDGROUSE/3.wav",
        "forest/Pterocles_alchata/4.wav",
        "forest/Polygonia_c_album/5.wav",
        "forest/eurasian-blackbird/6.wav",
        "XC7 - Pin-tailed_Sandgrouse - Pterocles alchata.wav",
    ])  # fmt: skip
    got = scan(tmp_path, cat, site="valley")
    assert got.unplaced == []
    assert {r.path: r.species_id for r in got.rows} == {
        "XC7 - Pin-tailed_Sandgrouse - Pterocles alchata.wav": "pitsan1",
        "forest/PIN TAILED SANDGROUSE/3.wav": "pitsan1",
        "forest/Pin-tailed_Sandgrouse/1.wav": "pitsan1",
        "forest/Polygonia_c_album/5.wav": "comma1",
        "forest/Pterocles_alchata/4.wav": "pitsan1",
        "forest/eurasian-blackbird/6.wav": "eurbla",
        "forest/pin_tailed_sandgrouse/2.wav": "pitsan1",
    }


def test_names_only_separators_tell_apart_name_neither_species_written_loosely(tmp_path):
    """Two species whose names differ only in `_`, `-` or spaces: a folder written as
    either exactly is that one; written otherwise it could be both, so it names neither
    and its files are left unplaced (as a common name two species share)."""
    rows = [
        ("pitwhy", "Vidua macroura", "Pin-tailed Whydah", "Viduidae", "Vidua"),
        ("pitwhy2", "Vidua hypothetica", "Pin tailed Whydah", "Viduidae", "Vidua"),
    ]
    cat = Catalogue([Species(i, s, c, "Aves", "O", f, g) for i, s, c, f, g in rows], "test")
    _touch(tmp_path, ["Pin-tailed Whydah/1.wav", "pin tailed whydah/2.wav",
                      "Pin_Tailed_Whydah/3.wav", "pin-tailed-whydah/4.wav"])  # fmt: skip
    got = scan(tmp_path, cat)
    assert [(r.path, r.species_id) for r in got.rows] == [
        ("Pin-tailed Whydah/1.wav", "pitwhy"),
        ("pin tailed whydah/2.wav", "pitwhy2"),
    ]
    assert got.unplaced == [
        "Pin_Tailed_Whydah/3.wav (folder 'Pin_Tailed_Whydah' is ambiguous: it could be "
        "pitwhy or pitwhy2; name it by one's id or scientific name)",
        "pin-tailed-whydah/4.wav (folder 'pin-tailed-whydah' is ambiguous: it could be "
        "pitwhy or pitwhy2; name it by one's id or scientific name)",
    ]


@pytest.fixture
def frogs_and_bats():
    rows = [
        ("rana_temporaria", "Rana temporaria", "Common Frog", "Amphibia", "Ranidae", "Rana"),
        ("rana_dalmatina", "Rana dalmatina", "Common Frog", "Amphibia", "Ranidae", "Rana"),
        ("hyla_arborea", "Hyla arborea", "European Tree Frog", "Amphibia", "Hylidae", "Hyla"),
        ("thytri", "Thyroptera tricolor", "Spix's Disk-winged Bat", "Mammalia",
         "Thyropteridae", "Thyroptera"),
    ]  # fmt: skip
    return Catalogue([Species(i, s, c, k, "O", f, g) for i, s, c, k, f, g in rows], "test")


def test_clips_shorter_than_prepare_keeps_are_left_out_and_said(
    tmp_path, realaudio, frogs_and_bats, capsys
):
    """19 bat clips of 0.03-0.07 s (200 kHz) were written as recordings and trained on,
    though `prepare` refuses under 1 s and the recorder skips under 0.5 s."""
    root = tmp_path / "region"
    bats = sorted(realaudio.glob("naturesounds__thyroptera*.wav"))[:7]
    (root / "cave" / "Thyroptera_tricolor").mkdir(parents=True)
    for b in bats:
        shutil.copyfile(b, root / "cave" / "Thyroptera_tricolor" / b.name)
    _layout(root, realaudio, ["pond/Hyla_arborea/20240501_210000.ogg",
                              "pond/Hyla_arborea/20240502_210000.ogg"])  # fmt: skip
    got = scan(root, frogs_and_bats)
    assert [r.species_id for r in got.rows] == ["hyla_arborea", "hyla_arborea"]
    assert len(got.short) == 7 and got.short[0].startswith(
        f"cave/Thyroptera_tricolor/{bats[0].name} (0.0"
    )
    assert got.min_seconds == DecodeSettings().min_seconds  # prepare's own minimum
    cat = tmp_path / "species.csv"
    frogs_and_bats.to_csv(cat)
    assert main(["recordings", "--audio", str(root), "--catalogue", str(cat)]) == 0
    said = capsys.readouterr().out
    line = next(s for s in said.splitlines() if "left out (shorter than 1 s" in s)
    assert "7 recording(s)" in line and "the recorder would never analyse them" in line
    assert bats[0].name in line and "and 2 more" in line
    assert "Thyroptera" not in (root / "recordings.csv").read_text()
    (root / "pond" / "Hyla_arborea").rename(tmp_path / "away")
    assert main(["recordings", "--audio", str(root), "--catalogue", str(cat), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "all 7 recording(s) placed with a species are shorter than 1 s" in err


def test_files_sampled_above_48_khz_are_said_to_lose_their_ultrasound(
    tmp_path, realaudio, frogs_and_bats
):
    root = tmp_path / "region"
    _layout(root, realaudio, ["pond/Hyla_arborea/20240501_210000.ogg"])
    x, _ = sf.read(sorted(realaudio.glob("*.ogg"))[1], dtype="float32")
    (root / "cave" / "thytri").mkdir(parents=True)
    for i in range(2):  # the same sound at a bat detector's 96 kHz
        sf.write(
            root / "cave" / "thytri" / f"2024050{i + 1}_230000.wav", np.repeat(x, 2, 0), 96_000
        )
    got = scan(root, frogs_and_bats)
    assert got.ultrasonic == ["cave/thytri/20240501_230000.wav", "cave/thytri/20240502_230000.wav"]
    said = summary(got, root / "recordings.csv", frogs_and_bats)
    assert (
        "  2 recording(s) sampled above 48000 Hz, analysed at 48000 Hz: sound above 24000 Hz "
        "(ultrasound: bats, bush-crickets) is not heard"
    ) in said


def test_a_shared_common_name_or_a_misspelt_folder_says_why_it_places_nothing(
    tmp_path, frogs_and_bats, capsys
):
    """`Common_Frog/` (two species' common name) and `Hyla_arborrea/` were "in no folder
    and have no name part that names a catalogue species", with no word of why."""
    _touch(tmp_path, ["north/Common_Frog/1.wav", "north/Common_Frog/2.wav",
                      "north/Common_Frog/3.wav", "north/Hyla_arborrea/1.wav",
                      "north/mystery/1.wav"])  # fmt: skip
    got = scan(tmp_path, frogs_and_bats)
    assert got.unplaced == [
        "north/Common_Frog/1.wav (folder 'Common_Frog' is ambiguous: it could be "
        "rana_dalmatina or rana_temporaria; name it by one's id or scientific name)",
        "north/Hyla_arborrea/1.wav (folder 'Hyla_arborrea' names no catalogue species; "
        "nearest: Hyla arborea (European Tree Frog, hyla_arborea))",
        "north/Common_Frog/2.wav",
        "north/Common_Frog/3.wav",
        "north/mystery/1.wav",
    ]
    cat = tmp_path / "species.csv"
    frogs_and_bats.to_csv(cat)
    assert main(["recordings", "--audio", str(tmp_path), "--catalogue", str(cat)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'Common_Frog' is ambiguous: it could be rana_dalmatina" in err
    assert "nearest: Hyla arborea (European Tree Frog, hyla_arborea)" in err


def test_the_next_command_replays_the_global_data(tmp_path):
    """`next:` suggested finetune without --replay, whose help says the global species may
    then be forgotten."""
    said = next_command(tmp_path / "region")
    assert "--replay GLOBAL_DATA" in said
    args = build_parser().parse_args(said.removeprefix("next: animalclap-train ").split())
    assert (args.checkpoint, args.data, args.replay, args.out) == (
        "GLOBAL", str(tmp_path / "region"), "GLOBAL_DATA", "RUN"
    )  # fmt: skip
