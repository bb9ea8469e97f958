"""Refuse to continue, in an output folder, work that another configuration started."""

from __future__ import annotations

import json
from pathlib import Path


def refuse_other_settings(
    saved: Path, new: dict, keys: tuple[str, ...], holds: str, advice: str
) -> None:
    """Raise ValueError naming the first of `keys` whose value in the JSON file `saved`
    (written by the run that began the folder) differs from `new`; nothing if `saved`
    is not there yet. `holds` says what the folder holds, `advice` what to do."""
    if not saved.is_file():
        return
    old = json.loads(saved.read_text(encoding="utf-8"))
    changed = [k for k in keys if k in old and old[k] != new[k]]
    if changed:
        k = changed[0]
        also = f"; also {', '.join(changed[1:])}" if changed[1:] else ""
        raise ValueError(
            f"{saved.parent} holds {holds} ({k} {old[k]!r}, not {new[k]!r}{also}): {advice}"
        )
