"""The microphone source: its ring buffer, its errors, and real (ALSA) input devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from animalclap_edge.sources import (
    MIC_INSTALL_HINT,
    MicSource,
    SourceError,
    open_source,
)
from animalclap_edge.sources.mic import _FloatRing

from .helpers import TARGET


def test_ring_buffer_wraps_and_refuses_when_full():
    ring = _FloatRing(10, 2)
    data = np.arange(28, dtype=np.float32).reshape(14, 2)
    assert ring.write(data[:6])
    out = np.empty((4, 2), np.float32)
    assert ring.read_into(out) == 4 and np.array_equal(out, data[:4])
    assert ring.write(data[6:14])  # wraps around the end
    assert not ring.write(data[:1])  # full: refused whole, nothing overwritten
    got = np.empty((10, 2), np.float32)
    assert ring.read_into(got) == 10 and np.array_equal(got, data[4:14])
    assert ring.available() == 0 and ring.read_into(got) == 0


def _sounddevice_or_skip():
    try:
        import sounddevice
    except (ImportError, OSError) as e:
        pytest.skip(f"sounddevice/PortAudio not importable: {e}")
    return sounddevice


def test_mic_without_portaudio_says_how_to_install():
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        with pytest.raises(SourceError) as e:
            open_source("mic", TARGET)
        assert str(e.value) == MIC_INSTALL_HINT
    else:
        pytest.skip("sounddevice and PortAudio are installed")


def test_mic_unknown_device_lists_inputs():
    _sounddevice_or_skip()
    with pytest.raises(SourceError, match="available input devices: ") as e:
        MicSource("no such device 7f3a", target_sr=TARGET)
    assert "input device 'no such device 7f3a' not found" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.hardware
def test_mic_records_from_a_real_device():
    sd = _sounddevice_or_skip()
    if not any(d["max_input_channels"] > 0 for d in sd.query_devices()):
        pytest.skip("PortAudio finds no input device")
    src = MicSource(None, block_seconds=0.1, target_sr=TARGET, ring_seconds=5)
    with src:
        (rec,) = list(src.recordings())
        assert rec.id.startswith("mic:") and rec.start_time is not None
        n = 0
        for b in rec.blocks:
            assert b.dtype == np.float32 and b.ndim == 1 and np.isfinite(b).all()
            n += len(b)
            if n >= TARGET // 2:
                src.stop()
    assert n >= TARGET // 2
    assert isinstance(src.overflows, int)
    assert src._stream is None  # released


_ALSA_CAPTURE = """
pcm.acl_file {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
pcm.acl_capture {{
    type plug
    slave {{ pcm "acl_file" format S16_LE rate 48000 channels 1 }}
    hint.description "AnimalCLAP test capture"
}}
"""

_CAPTURE_SCRIPT = """
import json, sys
import numpy as np
from animalclap_edge.sources import MicSource
src = MicSource("acl_capture", block_seconds=0.25, target_sr=48000, ring_seconds=10)
got, n = [], 0
with src:
    (rec,) = list(src.recordings())
    for b in rec.blocks:
        got.append(b)
        n += len(b)
        if n >= 48000:
            src.stop()
np.save(sys.argv[1], np.concatenate(got))
print(json.dumps({"name": src.device_name, "rate": src.capture_rate, "released": src._stream is None}))
"""


def _in_home(home: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """`script` in a fresh interpreter whose HOME is `home` (ALSA reads ~/.asoundrc when
    PortAudio starts), from the repository; it must exit 0."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    return proc


def test_mic_source_captures_a_wav_played_into_a_real_alsa_device(tmp_path):
    """PortAudio opens a real ALSA capture PCM (the `file` plugin reading a raw file
    into the `null` device) by name; the captured audio must be the file's audio.

    The null device is not paced, so ALSA overruns and PortAudio drops stretches
    without saying so: the check is that every captured chunk is an exact excerpt
    of the file, in order, not that the file arrives whole.
    """
    _sounddevice_or_skip()
    rng = np.random.default_rng(0)
    noise = (0.2 * rng.standard_normal(48_000 * 8)).astype(np.float32)
    sf.write(tmp_path / "in.raw", noise, 48_000, format="RAW", subtype="PCM_16")
    (tmp_path / ".asoundrc").write_text(_ALSA_CAPTURE.format(infile=tmp_path / "in.raw"))
    proc = _in_home(tmp_path, _CAPTURE_SCRIPT, str(tmp_path / "got.npy"))
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"name": "acl_capture", "rate": 48_000, "released": True}
    got = np.load(tmp_path / "got.npy")
    ref = np.round(noise * 32768).clip(-32768, 32767) / 32768  # what 16-bit PCM reads back
    assert len(got) >= 48_000
    positions = []
    for i in range(0, 48_000 - 256, 4000):
        # 256 samples: long enough that noise cannot match by chance, short enough
        # that a probe straddling one drop still matches exactly on one side of it
        seg = got[i : i + 256]
        if not seg.any():
            break  # past the end of the file: the null device gives silence
        j = int(np.correlate(ref, seg, mode="valid").argmax())
        exact = np.abs(ref[j : j + 256] - seg) < 1e-4
        assert exact.sum() >= 64, (i, j, int(exact.sum()))
        positions.append(j)
    assert len(positions) >= 5 and positions == sorted(positions), positions


_REFUSED_RATE_SCRIPT = """
from animalclap_edge.sources import MicSource, SourceError
try:
    MicSource("acl_file", sample_rate=768000, target_sr=48000)
except SourceError as e:
    print("SourceError:", e)
with MicSource("acl_capture", sample_rate=96000, block_seconds=0.1, target_sr=48000) as src:
    (rec,) = list(src.recordings())
    print("note:", rec.audio_note)
"""


def test_mic_names_the_rate_a_real_alsa_device_refuses(tmp_path):
    """ALSA's `file` plugin without `plug` in front takes only the rates its slave
    does: 768 kHz, which our config allows, is refused by the device itself. With
    `plug`, 96 kHz is taken, and the recording says what 48 kHz analysis drops."""
    _sounddevice_or_skip()
    (tmp_path / "in.raw").write_bytes(bytes(9600))
    (tmp_path / ".asoundrc").write_text(_ALSA_CAPTURE.format(infile=tmp_path / "in.raw"))
    proc = _in_home(tmp_path, _REFUSED_RATE_SCRIPT)
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("SourceError:")]
    assert "acl_file refuses 768000 Hz x 1 ch" in line and "its default rate is" in line
    assert "available input devices: " in line and "acl_capture" in line
    (note,) = [x for x in proc.stdout.splitlines() if x.startswith("note:")]
    assert note.startswith("note: recorded at 96000 Hz, analysed at 48000 Hz")


_REPLUGGED_SCRIPT = """
import pathlib, sys
from animalclap_edge.sources import MicSource, SourceError
try:
    MicSource("acl_capture", target_sr=48000)
except SourceError as e:
    print("before:", "not found" in str(e))
pathlib.Path(sys.argv[1]).write_text(sys.argv[2])  # the microphone is plugged in
with MicSource("acl_capture", block_seconds=0.1, target_sr=48000) as src:
    print("after:", src.device_name)
"""


def test_a_microphone_plugged_in_after_start_is_found_on_the_next_open(tmp_path):
    """PortAudio lists the devices it found at initialisation: a USB microphone pulled
    out and plugged back (a new ALSA card) was never found again by the watchdog's
    reopens in the same process (found in a deployment trial). A real ALSA device that
    appears only after PortAudio started (its ~/.asoundrc written then) stands in."""
    _sounddevice_or_skip()
    (tmp_path / "in.raw").write_bytes(bytes(9600))
    rc = _ALSA_CAPTURE.format(infile=tmp_path / "in.raw")
    proc = _in_home(tmp_path, _REPLUGGED_SCRIPT, str(tmp_path / ".asoundrc"), rc)
    assert proc.stdout.split("\n")[:2] == ["before: True", "after: acl_capture"], proc.stdout


_STEP_SCRIPT = """
import json, time
from animalclap_edge.clock_step import ClockWatch
from animalclap_edge.sources import MicSource
calls = {"n": 0}
def wall():  # NTP sets the clock 26.5 years forward at the watch's 7th look
    calls["n"] += 1
    return time.time() + (836_000_000 if calls["n"] > 6 else 0)
src = MicSource("acl_capture", block_seconds=0.25, target_sr=48000, ring_seconds=10,
                watch=lambda: ClockWatch(wall, time.monotonic))
with src:
    recs = src.recordings()
    first = next(recs)
    a = sum(len(b) for b in first.blocks)
    second = next(recs)
    n = 0
    for b in second.blocks:
        n += len(b)
        if n >= 24000:
            src.stop()
    more = len(list(recs))
print(json.dumps({"first": a, "second": n, "years": [first.start_time.year,
      second.start_time.year], "note": second.clock_note, "more": more,
      "released": src._stream is None}))
"""


def test_a_clock_set_mid_stream_starts_a_new_recording_on_the_same_open_device(tmp_path):
    """A board's microphone opened before NTP set the clock stamped every detection of
    the stream with the year it booted in (a field test with libfaketime); the cut keeps
    the device open and loses no block."""
    _sounddevice_or_skip()
    rng = np.random.default_rng(1)
    noise = (0.2 * rng.standard_normal(48_000 * 8)).astype(np.float32)
    sf.write(tmp_path / "in.raw", noise, 48_000, format="RAW", subtype="PCM_16")
    (tmp_path / ".asoundrc").write_text(_ALSA_CAPTURE.format(infile=tmp_path / "in.raw"))
    info = json.loads(_in_home(tmp_path, _STEP_SCRIPT).stdout.strip().splitlines()[-1])
    assert info["first"] == 6 * 12_000  # the blocks up to the one the step was seen after
    assert info["second"] >= 24_000 and info["more"] == 0 and info["released"]
    y0, y1 = info["years"]
    assert y1 - y0 >= 26
    assert "set +836000000 s mid-stream" in info["note"]
