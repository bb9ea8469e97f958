"""Where prepare keeps one recording between decoding and the shard: in memory while it
is small, in a temporary file once it is not, so a worker's memory is bounded whatever
the recording's length.

A recording is decoded once in full before any of it is written (a silent or too-short
one is rejected, and one whose peak passes full scale is scaled, not clipped), so it has
to be held somewhere. Held whole in memory, as arrays, an hour of audio took about
5 GB in one worker (float32 at 48 kHz is 690 MB an hour, and the 16-bit encoding made
several float64 copies of it); now a worker holds 10 s blocks and at most
SPOOL_MEMORY_BYTES per spool. Spilled files go to the temporary folder (TMPDIR).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import numpy as np

# 64 MiB: 5.8 min of float32 at 48 kHz in memory; longer recordings spill to disk.
SPOOL_MEMORY_BYTES = 64 << 20
BLOCK_SAMPLES = 480_000  # 10 s at 48 kHz: the unit every pass reads and writes


def spool() -> tempfile.SpooledTemporaryFile[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, prefix="acl-prepare-")


class Decoded:
    """One recording as 48 kHz mono float32 samples, appended block by block, with its
    length and peak; read back in blocks, scaled to full scale where its peak passes it
    (float audio, or a lossy decoder's or resampler's overshoot, that the shard's 16 bits
    would otherwise clip). Close it (or use `with`) to release the spool."""

    def __init__(self) -> None:
        self._spool = spool()
        self.samples = 0
        self.peak = 0.0

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, np.float32)
        if len(block):
            self.peak = max(self.peak, float(np.max(np.abs(block))))
            self._spool.write(block.data)
            self.samples += len(block)

    def clear(self) -> None:
        self._spool.seek(0)
        self._spool.truncate()
        self.samples, self.peak = 0, 0.0

    @property
    def scale(self) -> float:
        return 1.0 / self.peak if self.peak > 1.0 else 1.0

    def blocks(self, samples: int = BLOCK_SAMPLES) -> Iterator[np.ndarray]:
        """(<= samples,) float32 blocks of the recording, scaled to full scale at most."""
        scale = np.float32(self.scale)
        self._spool.seek(0)
        while data := self._spool.read(samples * 4):
            block = np.frombuffer(data, np.float32)
            yield block * scale if scale != 1 else block

    def read(self) -> np.ndarray:
        """The whole recording as one array (for short ones; the shard writer streams)."""
        parts = list(self.blocks())
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def close(self) -> None:
        self._spool.close()

    def __enter__(self) -> Decoded:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
