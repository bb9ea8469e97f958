"""Stable, process-independent randomness keyed by names.

Python's `hash()` is salted per process, so every draw that must be identical on
every machine and in every worker is keyed through blake2b instead.
"""

from __future__ import annotations

import hashlib

import numpy as np

_SEP = "\x1f"  # unit separator: cannot occur in taxon names, so keys cannot collide


def stable_int(*parts: object) -> int:
    """A 63-bit non-negative integer from the parts' string forms (fits numpy seeds and int64)."""
    key = _SEP.join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def stable_rng(*parts: object) -> np.random.Generator:
    """A generator seeded by the parts; the same parts give the same stream everywhere."""
    return np.random.default_rng(stable_int(*parts))
