"""One source recording -> 48 kHz mono float32 (spooled: `spool.Decoded`), or the reason
it was rejected.

Decoding goes through the runtime's libsndfile path (WAV, FLAC, OGG/Opus, MP3,
AIFF... with truncation checks); formats libsndfile does not read (M4A/AAC, WMA,
video containers) go through PyAV, which bundles FFmpeg. URLs are downloaded to a
temporary file first, with retries.
"""

from __future__ import annotations

import itertools
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from animalclap_edge.audio.decode import RESAMPLE_QUALITY, AudioError, read_blocks
from training.prepare.spool import Decoded

SAMPLE_RATE = 48_000

# Rejection reasons (counted in the shard indexes and the report).
MISSING = "missing file"
DOWNLOAD = "download failed"
UNDECODABLE = "undecodable"
BROKEN = "broken (truncated or corrupt)"
EMPTY = "empty"
NON_FINITE = "non-finite samples"
BAD_RATE = "unsupported sample rate"
TOO_SHORT = "too short"
SILENT = "silent"
# its decoding process died on it, decoding alone (out of memory, a decoder crash)
CRASHED = "killed its decoding process"


@dataclass(frozen=True)
class DecodeSettings:
    min_seconds: float = 1.0
    # Peak level below which a file is called silent: -60 dBFS is below the noise
    # floor of any working recorder, so only dead channels and zero fills fall under.
    silence_dbfs: float = -60.0
    timeout_s: float = 60.0
    retries: int = 3


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def fetch(uri: str, workdir: Path, settings: DecodeSettings) -> Path:
    """A local path as is; an http(s)/file URL downloaded into workdir."""
    parts = urllib.parse.urlsplit(uri)
    if "://" not in uri or (parts.scheme == "file" and parts.netloc in ("", "localhost")):
        # a file:// URL is a path: a missing one is missing, not a failed download
        # retried three times (and counted for --retry-downloads to try again)
        p = Path(urllib.request.url2pathname(parts.path)) if "://" in uri else Path(uri)
        if not p.is_file():
            raise Rejected(MISSING, "no such file" if not p.exists() else "not a file")
        return p
    name = Path(urllib.request.url2pathname(uri.split("?")[0].rsplit("/", 1)[-1])).name
    target = workdir / (name or "download")
    host = urllib.parse.urlsplit(uri).netloc
    failed, since = _HOSTS.get(host, (0, 0.0))
    if host and failed >= HOST_GIVE_UP_AFTER and time.monotonic() - since < HOST_PAUSE_S:
        raise Rejected(
            DOWNLOAD,
            f"not tried: the last {failed} downloads from {host} in a row got no answer "
            "(--retry-downloads tries them again later)",
        )
    last, tries, answered = "", 0, False
    for attempt in range(max(1, settings.retries)):
        if attempt:
            time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
        tries = attempt + 1
        try:
            with (
                urllib.request.urlopen(uri, timeout=settings.timeout_s) as resp,
                open(target, "wb") as out,
            ):
                _copy(resp, out, settings.timeout_s)
                # http.client ends a body quietly where the connection drops: a file
                # cut short by the network would be rejected as broken, never retried
                _check_length(resp.headers.get("Content-Length"), out.tell())
            _HOSTS.pop(host, None)
            return target
        except urllib.error.HTTPError as e:
            last, answered = f"HTTP {e.code}", True
            if 400 <= e.code < 500 and e.code != 429:
                break  # a client error will not change on retry
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            last = str(getattr(e, "reason", e))
    if answered:  # an HTTP error: the host is up
        _HOSTS.pop(host, None)
    elif host:  # no answer: counted
        _HOSTS[host] = (failed + 1, time.monotonic())
    raise Rejected(DOWNLOAD, f"{last} (after {tries} attempt{'s' * (tries > 1)})")


# A host whose last downloads, this many in a row, got no answer (timeouts, refused or
# dropped connections, stalls) is not tried again by this process for HOST_PAUSE_S: each
# such row took every try's full timeout, minutes per row of a dead mirror. Its rows are
# counted as failed downloads, which `prepare --retry-downloads` tries again.
HOST_GIVE_UP_AFTER = 3
HOST_PAUSE_S = 600.0
_HOSTS: dict[str, tuple[int, float]] = {}  # host -> (failures in a row, time of the last)


# A download slower than this over a whole `timeout_s` is given up (and retried): the
# socket timeout alone never fires while a server sends a byte now and then.
MIN_BYTES_PER_SECOND = 1024


def _copy(resp, out, timeout_s: float) -> None:
    """resp -> out, raising TimeoutError where it stalls: less than MIN_BYTES_PER_SECOND
    on average over any `timeout_s`."""
    read = getattr(resp, "read1", None) or resp.read  # read1: returns what one recv has
    since, got = time.monotonic(), 0
    while chunk := read(1 << 20):
        out.write(chunk)
        got += len(chunk)
        now = time.monotonic()
        if now - since >= timeout_s:
            if got < MIN_BYTES_PER_SECOND * (now - since):
                raise TimeoutError(f"stalled: {got} bytes in the last {now - since:.0f} s")
            since, got = now, 0


def _check_length(declared: str | None, got: int) -> None:
    try:
        expected = int(declared) if declared is not None else None
    except ValueError:
        return
    if expected is not None and got < expected:
        raise OSError(f"connection closed after {got} of {expected} bytes")


def _reason(e: AudioError) -> str:
    msg = str(e)
    for prefix, reason in (
        ("not found", MISSING),
        ("empty file", EMPTY),
        ("truncated", BROKEN),
        ("non-finite", NON_FINITE),
        ("sample rate", BAD_RATE),
    ):
        if msg.startswith(prefix):
            return reason
    return UNDECODABLE


def _decode_pyav(path: Path, out: Decoded) -> None:
    """Formats libsndfile does not read, streamed frame by frame into `out`."""
    try:
        import av
    except ImportError:
        raise Rejected(
            UNDECODABLE, "not a libsndfile format; install PyAV (pip install av) for M4A/AAC etc."
        ) from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise Rejected(UNDECODABLE, "no audio stream")
            stream = container.streams.audio[0]
            rate = stream.rate or SAMPLE_RATE
            # interleaved float32 in the stream's own layout, averaged here as libsndfile's
            # path does: FFmpeg's own downmix weighs each stereo channel 0.707, 3 dB
            # louder than the same audio as WAV, and a loud recording clipped in the shard
            channels = stream.channels or 1
            to_float = av.AudioResampler(format="flt", layout=stream.layout, rate=rate)
            to_48k = (
                None
                if rate == SAMPLE_RATE
                else soxr.ResampleStream(rate, SAMPLE_RATE, 1, "float32", RESAMPLE_QUALITY)
            )
            for frame in itertools.chain(container.decode(stream), [None]):  # None: flush
                for f in to_float.resample(frame):
                    pcm = f.to_ndarray().reshape(-1, channels)
                    mono = pcm[:, 0] if channels == 1 else pcm.mean(axis=1, dtype=np.float32)
                    if not np.isfinite(mono).all():
                        raise Rejected(NON_FINITE)
                    out.append(mono if to_48k is None else to_48k.resample_chunk(mono))
            if to_48k is not None:
                out.append(to_48k.resample_chunk(np.zeros(0, np.float32), last=True))
    except Rejected:
        raise
    except Exception as e:  # PyAV raises its own FFmpeg error classes
        # FFmpeg's errors carry their AVERROR code as errno ("[Errno 1094995529] Invalid
        # data found..."): the words are the reason, the code means nothing to a person
        words = getattr(e, "strerror", None) or next(iter(str(e).splitlines()), "")
        raise Rejected(UNDECODABLE, f"FFmpeg: {words}" if words else type(e).__name__) from e


def decode(path: Path, out: Decoded) -> None:
    """Append the recording to `out` as float32 mono at 48 kHz, 10 s at a time; raises
    Rejected with a counted reason."""
    try:
        for block in read_blocks(path, SAMPLE_RATE):
            out.append(block)
        return
    except AudioError as e:
        reason = _reason(e)
        if reason != UNDECODABLE:
            raise Rejected(reason, str(e)) from None
    out.clear()  # libsndfile refuses a file before its first block; kept safe regardless
    _decode_pyav(path, out)
    if not out.samples:  # FFmpeg takes a text file for a stream with no frames in it
        raise Rejected(UNDECODABLE, "no audio in it: not a format libsndfile or FFmpeg reads")


def check(audio: Decoded, settings: DecodeSettings) -> None:
    seconds = audio.samples / SAMPLE_RATE
    if seconds < settings.min_seconds:
        raise Rejected(TOO_SHORT, f"{seconds:.2f} s < {settings.min_seconds:g} s")
    if audio.peak <= 10 ** (settings.silence_dbfs / 20):
        level = f"{20 * np.log10(audio.peak):.1f} dBFS" if audio.peak > 0 else "all zeros"
        raise Rejected(SILENT, f"peak {level}")


def load_source(uri: str, settings: DecodeSettings) -> Decoded:
    """Fetch, decode and check one recording. The caller closes what it returns (its
    blocks come back scaled to full scale at most: the shard's 16 bits would clip
    float audio past it)."""
    audio = Decoded()
    try:
        with tempfile.TemporaryDirectory(prefix="acl-fetch-") as tmp:
            decode(fetch(uri, Path(tmp), settings), audio)
        check(audio, settings)
    except BaseException:
        audio.close()
        raise
    return audio
