"""Windower: window starts, end-of-stream rules, repeat-padding, reset, bounded memory;
WindowBatcher: the same windows, batched in one reused buffer."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from animalclap_edge.audio import Windower, read_all, read_blocks, repeat_pad
from animalclap_edge.audio.windows import WindowBatcher

REALAUDIO = Path(__file__).resolve().parents[3] / ".." / "shared" / "realaudio"
SR = 8000


def run(w: Windower, x: np.ndarray, sizes: list[int]) -> list:
    """Push `x` cut at the given block sizes (cycled), then flush."""
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out += w.push(x[i : i + n])
        i += n
        k += 1
    return out + w.flush()


def ramp(seconds: float) -> np.ndarray:
    return np.arange(round(seconds * SR), dtype=np.float32)  # exact in float32 below 2**24


@pytest.mark.parametrize("sizes", [[SR * 10], [1], [0, 7, 1000, 4801], [SR * 4, 3]])
def test_starts_3s_window_1p5s_hop(sizes):
    x = ramp(10.0)
    wins = run(Windower(3 * SR, SR * 3 // 2, SR // 2), x, sizes)
    # 0..6 s on the hop grid; 1 s remains after 9 s (> half a hop): one window ending at 10 s.
    assert [w.start_sample / SR for w in wins] == [0.0, 1.5, 3.0, 4.5, 6.0, 7.0]
    for w in wins:
        assert w.samples.dtype == np.float32 and w.samples.shape == (3 * SR,)
        assert np.array_equal(w.samples, x[w.start_sample : w.start_sample + 3 * SR])
        assert not w.padded


@pytest.mark.parametrize(
    ("seconds", "last"),
    [(9.5, 6.0), (9.75, 6.0), (9.8, 6.8), (3.0, 0.0), (4.0, 1.0)],
)
def test_tail_window_only_beyond_half_a_hop(seconds, last):
    x = ramp(seconds)
    wins = run(Windower(3 * SR, SR * 3 // 2, SR // 2), x, [1234])
    assert wins[-1].start_sample == round(last * SR)
    assert np.array_equal(
        wins[-1].samples, x[wins[-1].start_sample : wins[-1].start_sample + 3 * SR]
    )


def test_hop_longer_than_window_skips_audio():
    x = ramp(10.0)
    wins = run(Windower(SR, 5 * SR // 2, 0), x, [3000])
    assert [w.start_sample / SR for w in wins] == [0.0, 2.5, 5.0, 7.5, 9.0]
    assert all(np.array_equal(w.samples, x[w.start_sample : w.start_sample + SR]) for w in wins)


def test_short_clip_is_repeat_padded():
    clip = np.linspace(-1, 1, SR, dtype=np.float32)  # 1 s
    w = Windower(3 * SR, SR * 3 // 2, SR // 2)
    assert w.push(clip[:300]) == [] and w.push(clip[300:]) == []
    (win,) = w.flush()
    assert win.padded and win.start_sample == 0 and win.length == SR  # 1 s of real audio
    assert np.array_equal(win.samples, np.tile(clip, 3))
    assert w.flush() == []  # idempotent

    # 1.3 s: two whole copies (2.6 s), then 0.4 s of zeros.
    longer = np.linspace(0.1, 1, 13 * SR // 10, dtype=np.float32)
    w = Windower(3 * SR, SR * 3 // 2, SR // 2)
    w.push(longer)
    (win,) = w.flush()
    assert np.array_equal(win.samples[: 2 * len(longer)], np.tile(longer, 2))
    assert not win.samples[2 * len(longer) :].any()


def test_clip_below_min_samples_gives_nothing():
    w = Windower(3 * SR, SR, SR // 2)
    w.push(np.ones(SR // 2 - 1, np.float32))
    assert w.flush() == []
    assert w.samples_seen == SR // 2 - 1
    assert Windower(3 * SR, SR, 0).flush() == []  # nothing seen at all


def test_repeat_pad_matches_clap_definition():
    x = np.array([1, 2, 3], np.float32)
    assert repeat_pad(x, 10).tolist() == [1, 2, 3, 1, 2, 3, 1, 2, 3, 0]
    assert repeat_pad(x, 5).tolist() == [1, 2, 3, 0, 0]  # floor(5/3) = 1 copy
    assert repeat_pad(x, 2).tolist() == [1, 2]
    assert repeat_pad(x, 10).dtype == np.float32
    with pytest.raises(ValueError):
        repeat_pad(np.zeros(0), 4)


def test_reset_starts_a_new_stream():
    rng = np.random.default_rng(0)
    a, b = (
        rng.standard_normal(7 * SR).astype(np.float32),
        rng.standard_normal(5 * SR).astype(np.float32),
    )
    w = Windower(2 * SR, SR, SR // 2)
    run(w, a, [999])
    with pytest.raises(RuntimeError, match="reset"):
        w.push(b)
    w.reset()
    assert w.samples_seen == 0
    again = run(w, b, [777])
    fresh = run(Windower(2 * SR, SR, SR // 2), b, [777])
    assert [x.start_sample for x in again] == [x.start_sample for x in fresh]
    assert all(np.array_equal(x.samples, y.samples) for x, y in zip(again, fresh, strict=True))


def test_memory_stays_bounded_over_an_hour_at_48k():
    sr, window, hop = 48_000, 480_000, 240_000  # the CLAP 10 s window, 5 s hop
    w = Windower(window, hop, sr)
    block = np.zeros(10 * sr, np.float32)
    n_windows = 0
    tracemalloc.start()
    try:
        for i in range(360):
            n_windows += len(w.push(block))  # windows are dropped at once, as a consumer would
            assert w.buffer_size == window
            if i == 10:
                base, _ = tracemalloc.get_traced_memory()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert w.samples_seen == 3600 * sr
    assert n_windows == (3600 - 10) // 5 + 1
    assert w.flush() == []  # the last window ends exactly at the end
    assert end - base < 1_000_000  # bytes: no growth with stream length


@pytest.mark.skipif(not REALAUDIO.is_dir(), reason=f"real audio folder {REALAUDIO} not present")
def test_windows_of_real_audio_equal_slices_of_the_whole_file():
    path = max(REALAUDIO.glob("*.ogg"), key=lambda p: p.stat().st_size)  # ~10 s, 44.1 kHz stereo
    sr = 48_000
    whole = read_all(path, sr)
    w = Windower(3 * sr, 3 * sr // 2, sr)
    wins = [x for b in read_blocks(path, sr, block_seconds=0.7) for x in w.push(b)] + w.flush()
    assert len(wins) >= 5
    assert (
        wins[-1].start_sample == len(whole) - 3 * sr
        or len(whole) - (wins[-1].start_sample + 3 * sr) <= 3 * sr // 4
    )
    for x in wins:
        assert np.array_equal(x.samples, whole[x.start_sample : x.start_sample + 3 * sr])


def _batched(b: WindowBatcher, x: np.ndarray, sizes: list[int]) -> list[tuple[np.ndarray, list]]:
    """Push `x` cut at the given block sizes (cycled), then flush; copies of each batch."""
    out, i, k = [], 0, 0

    def keep(batches):
        for xb, ws in batches:
            assert [len(w.samples) for w in ws] == [xb.shape[1]] * len(ws)
            assert all(np.shares_memory(w.samples, xb) for w in ws)  # rows, not copies
            out.append((xb.copy(), [(w.start_sample, w.padded) for w in ws]))

    while i < len(x):
        n = sizes[k % len(sizes)] or 1
        keep(b.push(x[i : i + n]))
        i, k = i + n, k + 1
    keep(b.flush())
    return out


@pytest.mark.parametrize("batch", [1, 3, 4])
@pytest.mark.parametrize("sizes", [[SR * 10], [1000, 4801], [SR * 4, 3]])
@pytest.mark.parametrize("seconds", [0.7, 10.0, 10.6])
def test_batcher_gives_the_windowers_windows_in_order(batch, sizes, seconds):
    x = np.random.default_rng(1).standard_normal(round(seconds * SR)).astype(np.float32)
    expected = run(Windower(3 * SR, SR * 3 // 2, SR // 2), x, sizes)
    got = _batched(WindowBatcher(Windower(3 * SR, SR * 3 // 2, SR // 2), batch), x, sizes)
    assert [len(ws) for _, ws in got[:-1]] == [batch] * (len(got) - 1)  # only the last is short
    flat = [(s, p, row) for xb, ws in got for (s, p), row in zip(ws, xb, strict=True)]
    assert [(s, p) for s, p, _ in flat] == [(w.start_sample, w.padded) for w in expected]
    assert all(np.array_equal(r, w.samples) for (_, _, r), w in zip(flat, expected, strict=True))


def test_batcher_reuses_one_buffer_over_a_stream():
    b = WindowBatcher(Windower(3 * SR, SR * 3 // 2, SR // 2), 4)
    block = np.ones(10 * SR, np.float32)
    buffers = {xb.__array_interface__["data"][0] for _ in range(30) for xb, _ in b.push(block)}
    assert len(buffers) == 1  # every batch is a view of the same memory


def test_batcher_reset_and_bad_input():
    b = WindowBatcher(Windower(2 * SR, SR, SR // 2), 4)
    assert list(b.push(np.ones(3 * SR, np.float32))) == []  # two windows held, not yet a batch
    b.reset()
    assert [len(ws) for _, ws in b.flush()] == []
    with pytest.raises(ValueError, match="1-D"):
        list(b.push(np.ones((2, 10), np.float32)))
    with pytest.raises(ValueError, match="batch_size"):
        WindowBatcher(Windower(2 * SR, SR, 0), 0)
