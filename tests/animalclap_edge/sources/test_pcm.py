"""Raw PCM streams: formats, resampling, short reads and errors."""

from __future__ import annotations

import io

import numpy as np
import pytest

from animalclap_edge.audio import AudioError
from animalclap_edge.sources import (
    SourceError,
    StdinSource,
)

from .helpers import TARGET, peak_hz, sine


def test_stdin_s16le_stereo_resampled():
    sr = 16000
    x = np.stack([sine(sr, 2.0), sine(sr, 2.0)], axis=1)
    pcm = (x * 32767).astype("<i2").tobytes()
    src = StdinSource(io.BytesIO(pcm), sr, 2, "s16le", TARGET, block_seconds=0.3)
    (rec,) = src.recordings()
    assert rec.id.startswith("stdin@undated#") and rec.start_time is None and not rec.clock_trusted
    blocks = list(rec.blocks)
    y = np.concatenate(blocks)
    assert len(blocks) > 3 and abs(len(y) - 2 * TARGET) <= 2
    assert abs(peak_hz(y, TARGET) - 1000) <= 1
    assert abs(np.abs(y).max() - 0.5) < 0.01


class Trickle(io.RawIOBase):
    """A pipe that returns at most 7 bytes per read, splitting frames."""

    def __init__(self, data: bytes):
        self.buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self.buf.read(min(n, 7) if n >= 0 else 7)


def test_stdin_f32le_short_reads_and_errors():
    x = sine(TARGET, 0.1)
    (rec,) = StdinSource(
        Trickle(x.astype("<f4").tobytes()), TARGET, 1, "f32le", TARGET
    ).recordings()
    assert np.array_equal(np.concatenate(list(rec.blocks)), x)  # same rate: bit-exact

    bad = x.copy()
    bad[TARGET // 20] = np.nan
    (rec,) = StdinSource(io.BytesIO(bad.tobytes()), TARGET, 1, "f32le", TARGET).recordings()
    with pytest.raises(AudioError, match=r"^non-finite samples \(NaN/Inf\) at 0\.05 s$"):
        list(rec.blocks)

    (rec,) = StdinSource(io.BytesIO(b"\0" * 9), TARGET, 1, "s16le", TARGET).recordings()
    with pytest.raises(AudioError, match=r"stdin ended mid-frame \(1 stray bytes\)"):
        list(rec.blocks)
    with pytest.raises(SourceError):
        StdinSource(io.BytesIO(), 48000, 1, "s24le", TARGET)  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", ["wav", "ogg", "flac"])
def test_an_audio_file_piped_in_whole_is_refused_not_read_as_samples(realaudio, tmp_path, suffix):
    """`cat rec.wav | run --source -` read the header and the 6 interleaved channels as
    mono samples: an 18 s "ok" recording with detections from a 3 s file. A pipe that
    returns 7 bytes a read must be told apart too."""
    import soundfile as sf

    wav = sorted(realaudio.glob("*.wav"))[0]
    if suffix == "ogg":
        data = sorted(realaudio.glob("*.ogg"))[0].read_bytes()
    else:
        x, sr = sf.read(wav, dtype="float32")
        sf.write(tmp_path / f"a.{suffix}", x, sr)
        data = (tmp_path / f"a.{suffix}").read_bytes()
    name = {"wav": "WAV", "ogg": "Ogg", "flac": "FLAC"}[suffix]
    for stream in (io.BytesIO(data), Trickle(data)):
        (rec,) = StdinSource(stream, 48000, 1, "s16le", TARGET).recordings()
        with pytest.raises(AudioError, match=f"stdin begins with a {name} file's header"):
            list(rec.blocks)
    # raw PCM that happens to start with a format's first bytes but not its whole mark
    pcm = b"RIFF" + b"\0" * 400
    (rec,) = StdinSource(Trickle(pcm), 48000, 1, "s16le", TARGET).recordings()
    assert sum(len(b) for b in rec.blocks) == 202


class _Clock:
    """A wall and a monotonic clock that a block read moves on by its audio's length."""

    def __init__(self, wall: float):
        self.w, self.m = wall, 100.0

    def watch(self):
        from animalclap_edge.clock_step import ClockWatch

        return ClockWatch(lambda: self.w, lambda: self.m)


class _Live(io.RawIOBase):
    """A capture pipe: each read of `block` bytes takes `seconds` on both clocks; before
    read number `step_at`, NTP sets the wall clock `step_s` forward."""

    def __init__(self, data: bytes, clock: _Clock, seconds: float, step_at: int, step_s: float):
        self.buf, self.clock, self.seconds = io.BytesIO(data), clock, seconds
        self.reads, self.step_at, self.step_s = 0, step_at, step_s

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        if self.reads == self.step_at:
            self.clock.w += self.step_s
        self.clock.w += self.seconds
        self.clock.m += self.seconds
        return self.buf.read(n)


def test_a_live_stream_cut_where_the_clock_is_set_starts_again_at_the_clock_as_set():
    """A pipe opened at 2000-01-01 (a board before NTP) kept that date for every
    detection of the run, weeks of them, after the clock was set (a field test)."""
    from datetime import datetime, timezone

    sr, seconds = 16000, 1.0
    x = sine(sr, 10.0)
    pcm = (x * 32767).astype("<i2").tobytes() + b"\x01"  # and a stray byte at the end
    clock = _Clock(946_684_800.0)  # 2000-01-01T00:00Z
    step = 836_000_000.0  # to 2026-06-29
    live = _Live(pcm, clock, seconds, step_at=4, step_s=step)
    src = StdinSource(live, sr, 1, "s16le", sr, block_seconds=seconds, live_clock=True,
                      watch=clock.watch)  # fmt: skip
    recs = src.recordings()
    first = next(recs)
    a = np.concatenate(list(first.blocks))
    assert first.start_time == datetime(2000, 1, 1, tzinfo=timezone.utc)
    second = next(recs)
    assert second.start_time.year == 2026 and second.id != first.id
    assert "set +836000" in second.clock_note and "mid-stream" in second.clock_note
    with pytest.raises(AudioError, match="1 stray bytes"):  # the stream's own end, as before
        list(second.blocks)
    # no sample lost at the cut: the first recording ended at the block the step was seen
    assert len(a) == 4 * sr
    with pytest.raises(StopIteration):
        next(recs)


def test_a_stream_with_a_steady_clock_is_one_recording():
    sr = 16000
    pcm = (sine(sr, 5.0) * 32767).astype("<i2").tobytes()
    clock = _Clock(1_780_000_000.0)
    live = _Live(pcm, clock, 1.0, step_at=-1, step_s=0)
    src = StdinSource(live, sr, 1, "s16le", sr, live_clock=True, watch=clock.watch)
    (rec,) = src.recordings()
    assert len(np.concatenate(list(rec.blocks))) == 5 * sr
