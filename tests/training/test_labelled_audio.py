"""A crop decodes only its own frames, and gives the very samples a full decode would."""

from __future__ import annotations

import numpy as np
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
