"""Decode audio files in bounded memory: probe, stream as mono float32 blocks, resample.

Everything that can go wrong with a field recording (not audio, empty, a rate
outside what we support, NaN/Inf samples, a file cut short by a power loss)
becomes an `AudioError` whose `str()` is one line a person can act on.

Truncation: libsndfile quietly shortens a WAV whose data chunk is cut short
and an OGG cut between pages, so `probe` also reads the RIFF header and the
last Ogg page. A file cut short (or one whose decoder fails midway) is
streamed up to the cut, then `read_blocks` raises
`AudioError("truncated or corrupt after <t> s: ...")`; the blocks already
yielded are valid audio.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 768_000
RESAMPLE_QUALITY = "HQ"

# Extensions libsndfile reads, by the format names soundfile reports.
_EXTENSIONS_BY_FORMAT = {
    "WAV": (".wav", ".wave", ".bwf"),
    "WAVEX": (".wav",),
    "RF64": (".rf64",),
    "W64": (".w64",),
    "FLAC": (".flac",),
    "OGG": (".ogg", ".oga", ".opus"),
    "MP3": (".mp3",),
    "AIFF": (".aif", ".aiff", ".aifc"),
    "AU": (".au", ".snd"),
    "CAF": (".caf",),
}
# every audio extension libsndfile knows, read here or not: an .mp3 with a libsndfile
# built without MP3 (Ubuntu 22.04's 1.0.31) is a recording skipped with its reason
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    e for exts in _EXTENSIONS_BY_FORMAT.values() for e in exts
)
_AVAILABLE_FORMATS = sf.available_formats()
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    ext for fmt, exts in _EXTENSIONS_BY_FORMAT.items() if fmt in _AVAILABLE_FORMATS for ext in exts
)

# Subtypes whose WAV block_align is one frame, so header bytes convert to frames.
_WAV_FRAME_SUBTYPES = frozenset(
    {"PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"}
)
# Compressed decoders may report an estimated length (MP3 without a Xing header),
# so only a shortfall beyond this counts as truncation.
_COMPRESSED_SHORTFALL_FRAMES = 4096
_COMPRESSED_SHORTFALL_FRACTION = 0.01
# Native-rate read buffer cap (float32 values): 16 MB, so 10 s blocks of a
# 768 kHz multichannel file stay small on a Pi-class recorder; blocks get shorter.
_MAX_BLOCK_VALUES = 4_000_000


class AudioError(Exception):
    """Audio that cannot be (fully) used; `str(e)` is a one-line reason."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int  # what libsndfile will decode
    duration_s: float
    format: str  # libsndfile major format, e.g. "WAV", "OGG"
    subtype: str  # e.g. "PCM_16", "VORBIS"
    # Why the container shows the file was cut short ("" when intact); libsndfile
    # still decodes what is there, and `read_blocks` raises after the last block.
    truncated: str = ""
    # the header's text (WAV LIST/INFO, Vorbis comments): AudioMoth writes its clock
    # into the comment and its serial number as the artist (audio.header_time)
    comment: str = ""
    artist: str = ""


# A recording whose band ends below this fraction of the model's is said to miss
# calls: 32 kHz (an AudioMoth saving its card) is, 44.1 kHz is not (22 of 24 kHz).
NARROW_BAND_FRACTION = 0.8


def band_note(native_sr: int, target_sr: int) -> str:
    """What of the sound the model does not hear, "" when nothing that matters:
    - a faster recording is resampled to the model's rate, which filters out all
      above half that rate, such as a bat detector's ultrasound (384 or 500 kHz);
    - a much slower one holds nothing above half its own rate (16 kHz: 8 kHz), where
      the model was trained on sound up to half of its rate."""
    if native_sr > target_sr:
        return (
            f"recorded at {native_sr} Hz, analysed at {target_sr} Hz: sound above "
            f"{target_sr // 2} Hz (ultrasound: bats, bush-crickets) is not heard"
        )
    if native_sr < NARROW_BAND_FRACTION * target_sr:
        return (
            f"recorded at {native_sr} Hz, analysed at {target_sr} Hz: the recording holds "
            f"nothing above {native_sr // 2} Hz, so calls above it are missed"
        )
    return ""


def _one_line(msg: object) -> str:
    return re.sub(r"\s+", " ", str(msg)).strip() or "unknown error"


def _libsndfile_reason(e: Exception) -> str:
    # LibsndfileError's str() starts with "Error opening '<path>': "; the path is known already.
    return _one_line(getattr(e, "error_string", None) or e)


def probe(path: str | os.PathLike) -> AudioInfo:
    """Header facts of an audio file; raises `AudioError` for anything we cannot stream."""
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"not found or not a file: {p}")
    size = p.stat().st_size
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        with sf.SoundFile(str(p)) as info:  # one open for the facts and the header's text
            comment, artist = info.comment or "", info.artist or ""
    except Exception as e:
        raise AudioError(f"cannot decode: {_libsndfile_reason(e)}") from e
    sr, ch, frames = int(info.samplerate), int(info.channels), int(info.frames)
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"sample rate {sr} Hz outside the supported {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )
    if ch < 1:
        raise AudioError(f"cannot decode: {ch} channels")
    truncated = ""
    if info.format in ("WAV", "WAVEX") and info.subtype in _WAV_FRAME_SUBTYPES:
        declared = _wav_declared_frames(p)
        if declared is not None and declared > frames:
            truncated = f"the header promises {declared / sr:.2f} s"
    elif info.format == "OGG" and frames > 0 and not _ogg_ends_cleanly(p, size):
        truncated = "the OGG stream has no end-of-stream page (file cut short?)"
    if frames <= 0:
        if info.format in ("WAV", "WAVEX") and size > 4096:
            raise AudioError(
                f"empty file (0 samples): the WAV header declares no data but the file has {size} bytes (recording never finalized?)"
            )
        if info.format == "OGG" and size > 4096:
            raise AudioError(
                f"truncated or corrupt after 0.00 s: the OGG stream has no readable end ({size} bytes, 0 samples)"
            )
        raise AudioError("empty file (0 samples)")
    return AudioInfo(
        path=str(p),
        sample_rate=sr,
        channels=ch,
        frames=frames,
        duration_s=frames / sr,
        format=str(info.format),
        subtype=str(info.subtype),
        truncated=truncated,
        comment=comment,
        artist=artist,
    )


def _wav_declared_frames(path: Path) -> int | None:
    """Frames the RIFF 'data' chunk claims; None when unknown or a placeholder (0 or 0xFFFFFFFF)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = os.fstat(f.fileno()).st_size
            pos, block_align = 12, 0
            for _ in range(64):  # chunk walk; real files have a handful
                if pos + 8 > size:
                    return None
                f.seek(pos)
                hdr = f.read(8)
                cid, csize = hdr[:4], int.from_bytes(hdr[4:8], "little")
                if cid == b"fmt ":
                    fmt = f.read(16)
                    if len(fmt) < 16:
                        return None
                    block_align = int.from_bytes(fmt[12:14], "little")
                elif cid == b"data":
                    if block_align <= 0 or csize in (0, 0xFFFFFFFF):
                        return None
                    return csize // block_align
                pos += 8 + csize + (csize & 1)
    except OSError:
        return None
    return None


def _ogg_ends_cleanly(path: Path, size: int) -> bool:
    """True when the file's last Ogg page ends exactly at EOF and carries the end-of-stream flag.

    A copy cut short ends mid-page or on a page without EOS; libsndfile then
    reports the shorter length without complaint.
    """
    tail_len = min(size, 27 + 255 + 255 * 255)  # the largest possible Ogg page
    try:
        with open(path, "rb") as f:
            f.seek(size - tail_len)
            tail = f.read(tail_len)
    except OSError:
        return True
    i = tail.rfind(b"OggS")
    while i >= 0:
        # Page header: "OggS", version, flags, ..., n_segments at 26, lacing table at 27.
        if i + 27 <= len(tail) and tail[i + 4] == 0:
            nseg = tail[i + 26]
            body = sum(tail[i + 27 : i + 27 + nseg])
            if i + 27 + nseg <= len(tail) and i + 27 + nseg + body == len(tail):
                return bool(tail[i + 5] & 0x04)
        i = tail.rfind(b"OggS", 0, i)  # "OggS" inside audio data, or a page cut short
    return False


def to_mono(x: np.ndarray) -> np.ndarray:
    """(n,) or (n, channels) -> float32 (n,), channels averaged."""
    x = np.asarray(x)
    if x.ndim == 1:
        return x.astype(np.float32, copy=False)
    if x.ndim == 2:
        if x.shape[1] > x.shape[0]:
            raise AudioError(
                f"array shape {x.shape} looks like (channels, samples); pass (samples, channels)"
            )
        return x.mean(axis=1, dtype=np.float32)
    raise AudioError(f"audio must be (samples,) or (samples, channels), got shape {x.shape}")


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """One-shot soxr HQ resampling of a whole array ((n,) or (n, channels)) to float32."""
    if sr_in <= 0 or sr_out <= 0:
        raise AudioError(f"sample rates must be positive, got {sr_in} -> {sr_out} Hz")
    x = np.asarray(x, np.float32)
    if sr_in == sr_out:
        return x.copy()
    if x.shape[0] == 0:
        return x[:0].copy()
    return soxr.resample(x, sr_in, sr_out, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)


def _first_nonfinite(x: np.ndarray) -> int | None:
    bad = ~np.isfinite(x)
    if not bad.any():
        return None
    return int(np.argmax(bad.any(axis=1) if bad.ndim == 2 else bad))


def read_blocks(
    path: str | os.PathLike, target_sr: int, block_seconds: float = 10.0
) -> Iterator[np.ndarray]:
    """Stream a file as float32 mono blocks at `target_sr`, at most about `block_seconds` each.

    Memory is one native-rate block plus the resampler's state, whatever the
    file length. Raises `AudioError` (from `probe`, or mid-stream for NaN/Inf,
    decode errors and truncation); blocks yielded before stay valid.
    """
    if target_sr <= 0:
        raise AudioError(f"target sample rate must be positive, got {target_sr}")
    info = probe(path)
    sr = info.sample_rate
    block_frames = max(1, min(round(block_seconds * sr), _MAX_BLOCK_VALUES // info.channels))
    # (block_frames, channels): reused for every read; libsndfile fills it in place.
    buf = np.empty((block_frames, info.channels), np.float32)
    stream = (
        None
        if sr == target_sr
        else soxr.ResampleStream(sr, target_sr, 1, "float32", RESAMPLE_QUALITY)
    )
    done = 0  # native frames decoded so far

    def emit(block: np.ndarray) -> np.ndarray:
        """(n, channels) native-rate float32 -> mono at target_sr; NaN/Inf refused."""
        bad = _first_nonfinite(block)
        if bad is not None:
            raise AudioError(f"non-finite samples (NaN/Inf) at {(done + bad) / sr:.2f} s")
        mono = block[:, 0].copy() if info.channels == 1 else block.mean(axis=1, dtype=np.float32)
        return mono if stream is None else stream.resample_chunk(mono)

    try:
        f = sf.SoundFile(info.path)
    except Exception as e:
        raise AudioError(f"cannot decode: {_libsndfile_reason(e)}") from e
    failed: Exception | None = None
    with f:
        while True:
            try:
                # buffer_read_into does not clamp to the header's frame count,
                # so an underestimated MP3 length still decodes to the end.
                n = f.buffer_read_into(buf, "float32")
            except Exception as e:
                failed = e
                break
            if n == 0:
                break
            out = emit(buf[:n])
            done += n
            if len(out):
                yield out
    if failed is not None:
        # libsndfile drops the whole failed read: a FLAC cut 5.9 s in lost all of its
        # first 10 s block. Its span is read again in small pieces, up to the cut.
        for piece in _salvage(info.path, done, info.channels):
            out = emit(piece)
            done += len(piece)
            if len(out):
                yield out
    if stream is not None:
        tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
        if len(tail):
            yield tail
    if failed is not None:
        raise AudioError(
            f"truncated or corrupt after {done / sr:.2f} s: {_libsndfile_reason(failed)}"
        ) from failed
    _check_complete(info, done)


_SALVAGE_FRAMES = 1024  # at most this much of the last piece before a cut is lost


def _salvage(path: str, start: int, channels: int) -> Iterator[np.ndarray]:
    """(n, channels) pieces from native frame `start` until the decoder fails again.

    The pieces share one buffer: each is used before the next is read.
    """
    piece = np.empty((_SALVAGE_FRAMES, channels), np.float32)
    try:
        with sf.SoundFile(path) as f:
            f.seek(start)
            while n := f.buffer_read_into(piece, "float32"):
                yield piece[:n]
    except Exception:  # the cut itself: everything readable has been yielded
        return


def _check_complete(info: AudioInfo, done: int) -> None:
    if info.truncated:
        raise AudioError(
            f"truncated or corrupt after {done / info.sample_rate:.2f} s: {info.truncated}"
        )
    expected = info.frames
    compressed = info.subtype not in _WAV_FRAME_SUBTYPES and info.format not in ("FLAC",)
    slack = (
        max(_COMPRESSED_SHORTFALL_FRAMES, int(_COMPRESSED_SHORTFALL_FRACTION * expected))
        if compressed
        else 0
    )
    if done < expected - slack:
        raise AudioError(
            f"truncated or corrupt after {done / info.sample_rate:.2f} s: the header promises {expected / info.sample_rate:.2f} s"
        )


def read_all(path: str | os.PathLike, target_sr: int) -> np.ndarray:
    """The whole file as one float32 mono array at `target_sr` (for clips; long files: `read_blocks`)."""
    blocks = list(read_blocks(path, target_sr))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
