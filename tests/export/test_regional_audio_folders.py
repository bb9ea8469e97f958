"""`--parity-audio` / `--calibration-audio` folders are read with their sub-folders, as
`bundle --data` and the recorder read them: a region's recordings folder
(my_region/audio/<site>/<species>/...) was refused with "no recordings ... at its top
level (57 in subfolders, which are not read)"."""

from pathlib import Path

import soundfile as sf

import export.pipeline as P
from export.checks import audio_files, check_audio_folder
from export.pipeline import ExportConfig


def _write(folder: Path, names: list[str], realaudio: Path) -> None:
    sources = sorted(realaudio.glob("*.ogg"))
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        x, sr = sf.read(sources[i % len(sources)], dtype="float32")
        sf.write(folder / name, x, sr)


def test_a_folder_of_site_and_species_folders_is_read_sorted(tmp_path, realaudio):
    root = tmp_path / "audio"
    _write(root, ["north/Rana_temporaria/b.wav", "north/Rana_temporaria/a.wav",
                  "south/Hyla_arborea/20240501.flac", "top.wav", ".hidden/x.wav",
                  "north/._a.wav"], realaudio)  # fmt: skip
    rel = [p.relative_to(root).as_posix() for p in audio_files(root)]
    assert rel == [
        "north/Rana_temporaria/a.wav",
        "north/Rana_temporaria/b.wav",
        "south/Hyla_arborea/20240501.flac",
        "top.wav",
    ]
    assert check_audio_folder(str(root / "north"), "--parity-audio") == 2


def test_parity_windows_come_from_sub_folders_within_the_cap(tmp_path, realaudio):
    root = tmp_path / "audio"
    _write(root, [f"site{i % 2}/sp/{i:02d}.ogg" for i in range(6)], realaudio)
    cfg = ExportConfig(checkpoint="x", out=str(tmp_path / "b"), parity_audio=str(root),
                       parity_windows=4)  # fmt: skip
    windows, source = P._parity_windows(cfg, None, 48_000, 48_000)
    assert windows.shape == (4, 48_000) and source.startswith("4 real recordings from ")
