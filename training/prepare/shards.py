"""Shards: WebDataset-layout tar files of 48 kHz mono 16-bit audio (FLAC, or WAV) plus JSON.

Why WebDataset tar: a shard is a plain POSIX tar (`tar tf` lists it, any language
reads it), read front to back in large blocks, which is what network file systems
and object stores serve well; `webdataset`, torchdata and Ray read it without us;
a training job splits the work across ranks and loader workers by shard, and a
data-preparation job across machines by shard. Parquet row groups of audio blobs
or one HDF5 file give random access we do not need and are awkward to write from
many machines at once.

Layout of shard NNNNNN:
    shards/shard-NNNNNN.tar   members <key>.flac or <key>.wav (PCM 16-bit, 48 kHz
                              mono) and <key>.json (the manifest row plus duration)
    shards/shard-NNNNNN.json  the index: each record's metadata and the byte
                              offset/size of its audio inside the tar (random access:
                              a training crop decodes only its own frames), plus
                              every rejected row and why.
The index is written last, by rename: a shard is done exactly when its index exists.

FLAC (the default) takes about half the disk of WAV on real recordings; WAV takes no
decoding: the same 16-bit samples either way, so the choice is disk against loader
CPU (see docs/pretraining.md for the measured cost of each).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import soundfile as sf

from training.atomic import fsync, writer_gone, writer_tag
from training.prepare.spool import spool

SAMPLE_RATE = 48_000
INDEX_FORMAT = "animalclap-shard-index"
INDEX_VERSION = 1
CODECS = {"flac": "FLAC", "wav": "WAV"}  # member suffix -> libsndfile format


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def _pcm16(block: np.ndarray) -> np.ndarray:
    """float samples -> int16, rounded here and not by libsndfile, whose float-to-16-bit
    scaling differs between its FLAC and WAV writers (by one step on half the samples):
    so both codecs hold the same integers, and the loader's int16 wire (`Collate`)
    carries them exactly."""
    return np.clip(np.rint(np.asarray(block, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def write_audio(blocks: Iterable[np.ndarray], out: IO[bytes], codec: str = "flac") -> int:
    """Encode float blocks as 16-bit PCM in the codec's container into the seekable `out`,
    one block at a time; returns the samples written. libsndfile's output does not depend
    on how the samples are split into blocks (tested), so a shard is the same bytes
    however its recordings were read."""
    samples = 0
    with sf.SoundFile(out, "w", SAMPLE_RATE, 1, format=CODECS[codec], subtype="PCM_16") as f:
        for block in blocks:
            f.write(_pcm16(block))
            samples += len(block)
    return samples


def encode_audio(wave: np.ndarray, codec: str = "flac") -> bytes:
    """One whole array as a member's bytes (`write_audio` streams)."""
    buf = io.BytesIO()
    write_audio([wave], buf, codec)
    return buf.getvalue()


def decode_audio(data: bytes) -> np.ndarray:
    """A member's samples (FLAC or WAV: libsndfile reads the format from the bytes)."""
    wave, sr = sf.read(io.BytesIO(data), dtype="float32")
    if sr != SAMPLE_RATE:
        raise ValueError(f"shard audio at {sr} Hz, expected {SAMPLE_RATE}: re-run prepare")
    return wave


def _add(tar: tarfile.TarFile, name: str, data: IO[bytes], size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0  # identical inputs give identical shards
    tar.addfile(info, data)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    _add(tar, name, io.BytesIO(data), len(data))


def stale_temporaries(folder: Path, index: int, now: float | None = None) -> list[Path]:
    """Temporary files of shard `index` left by writers that are gone: untagged ones
    (written before tags), this host's whose process has ended, and any not written to
    for STALE_AFTER_S (a live writer adds a record every few seconds; a pre-empted
    node's restart comes back under another hostname, and pids are reused)."""
    now = time.time() if now is None else now
    stale = []
    for path in Path(folder).glob(f"{shard_name(index)}.*tmp"):
        tag = ".".join(path.name.removeprefix(shard_name(index)).split(".")[2:-1])  # host-pid
        try:
            idle = now - path.stat().st_mtime
        except FileNotFoundError:  # its writer finished or removed it meanwhile
            continue
        if not tag or writer_gone(tag) or idle > STALE_AFTER_S:
            stale.append(path)
    return stale


STALE_AFTER_S = 3600.0


class ShardWriter:
    """Write one shard atomically: records go to <name>.tar.<host-pid>.tmp, then `close`
    renames it and writes the index. An interrupted shard leaves only a .tmp, redone
    (and the .tmp removed) on resume."""

    def __init__(self, folder: Path, index: int, codec: str = "flac"):
        if codec not in CODECS:
            raise ValueError(f"codec {codec!r}: use one of {sorted(CODECS)}")
        self.folder, self.index, self.codec = Path(folder), index, codec
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tar_path = self.folder / f"{shard_name(index)}.tar"
        self._tmp = self.tar_path.with_suffix(f".tar.{writer_tag()}.tmp")
        self._tar = tarfile.open(  # noqa: SIM115 - closed in close() or abort()
            self._tmp, "w", format=tarfile.USTAR_FORMAT
        )
        self.records: list[dict] = []
        self.rejected: list[dict] = []

    def add(self, key: str, audio: np.ndarray | Iterable[np.ndarray], meta: dict) -> None:
        """One record: its audio as a whole array or as blocks (a `spool.Decoded`'s, so
        that a long recording is never whole in memory)."""
        blocks = [audio] if isinstance(audio, np.ndarray) else audio
        with spool() as encoded:
            samples = write_audio(blocks, encoded, self.codec)
            size = encoded.seek(0, io.SEEK_END)
            encoded.seek(0)
            _add(self._tar, f"{key}.{self.codec}", encoded, size)
        meta = {**meta, "key": key, "duration_s": round(samples / SAMPLE_RATE, 4)}
        _add_bytes(self._tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
        self.records.append(meta)

    def reject(self, key: str, uri: str, reason: str, detail: str) -> None:
        self.rejected.append({"key": key, "uri": uri, "reason": reason, "detail": detail})

    def close(self) -> Path:
        self._tar.close()
        offsets = {}
        suffix = f".{self.codec}"
        with tarfile.open(self._tmp, "r") as tar:
            for m in tar:
                if m.name.endswith(suffix):
                    offsets[m.name[: -len(suffix)]] = (m.offset_data, m.size)
        for rec in self.records:
            rec["offset"], rec["size"] = offsets[rec["key"]]
        fsync(self._tmp)  # the tar's data on disk before the index that vouches for it
        os.replace(self._tmp, self.tar_path)
        index = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "shard": self.index,
            "tar": self.tar_path.name,
            "codec": self.codec,
            "records": self.records,
            "rejected": self.rejected,
        }
        path = self.folder / f"{shard_name(self.index)}.json"
        # named as the tar's temporary is, so stale_temporaries finds one a kill left
        tmp = path.with_suffix(f".json.{writer_tag()}.tmp")
        tmp.write_text(json.dumps(index, indent=1), encoding="utf-8")
        fsync(tmp)
        os.replace(tmp, path)
        fsync(self.folder)
        return path

    def abort(self) -> None:
        self._tar.close()
        self._tmp.unlink(missing_ok=True)


def shard_complete(folder: Path, index: int) -> str | None:
    """None when shard `index` is done; else why not. Its index is written last, so
    an index is normally proof enough; a tar deleted or cut short afterwards (by hand,
    by a failing disk) is caught here rather than when training opens it."""
    path = folder / f"{shard_name(index)}.json"
    if not path.exists():
        return "not written"
    idx = read_index(path)
    tar = folder / idx["tar"]
    if not tar.is_file():
        return f"{tar.name} is missing"
    need = max((r["offset"] + r["size"] for r in idx["records"]), default=0)
    if tar.stat().st_size < need:
        return f"{tar.name} is cut short ({tar.stat().st_size} of at least {need} bytes)"
    return None


def read_index(path: Path) -> dict:
    index = json.loads(Path(path).read_text(encoding="utf-8"))
    if index.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path}: not a shard index (format {index.get('format')!r})")
    if index.get("version", 0) > INDEX_VERSION:
        raise ValueError(
            f"{path}: shard index version {index['version']} is newer than this code reads "
            f"({INDEX_VERSION}); upgrade animalclap-edge"
        )
    return index


@dataclass(frozen=True)
class ShardRecord:
    key: str
    wave: np.ndarray  # float32 mono, 48 kHz
    meta: dict


def iter_shard(tar_path: Path) -> Iterator[ShardRecord]:
    """Records of one shard in order, streaming (the way a training loader reads)."""
    pending: dict[str, dict] = {}
    with tarfile.open(tar_path, "r|") as tar:  # stream mode: no seeking
        for m in tar:
            key, _, ext = m.name.partition(".")
            f = tar.extractfile(m)
            if f is None:
                continue
            pending.setdefault(key, {})[ext] = f.read()
            got = pending[key]
            audio = next((got[c] for c in CODECS if c in got), None)
            if audio is not None and "json" in got:
                del pending[key]
                yield ShardRecord(key, decode_audio(audio), json.loads(got["json"]))


class MemberReader(io.RawIOBase):
    """One tar member's bytes as a seekable file, read in place from the shard: what
    libsndfile needs to seek in a FLAC and decode only a crop of it."""

    def __init__(self, tar_path: Path | str, offset: int, size: int):
        super().__init__()
        self._f = open(tar_path, "rb")  # noqa: SIM115 - closed with this reader
        self._offset, self._size, self._pos = offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = min(max(0, base + pos), self._size)
        return self._pos

    def readinto(self, b) -> int:
        n = min(len(b), self._size - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._offset + self._pos)
        got = self._f.readinto(memoryview(b)[:n]) or 0
        self._pos += got
        return got

    def close(self) -> None:
        self._f.close()
        super().close()


@dataclass(frozen=True)
class RecordRegion:
    """Where one record's audio member lies inside its shard (from the shard index)."""

    tar: Path | str  # a str where a loader worker made it (labelled_audio.ClipTable)
    offset: int
    size: int

    def open(self) -> MemberReader:
        return MemberReader(self.tar, self.offset, self.size)


def read_record(tar_path: Path | str, offset: int, size: int) -> np.ndarray:
    """One record's audio by its index offset: random access without scanning the tar."""
    with open(tar_path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise ValueError(f"{tar_path}: record at {offset} cut short; re-run prepare for it")
    return decode_audio(data)
