"""Write a bundle atomically: everything into a temporary directory, then rename."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from animalclap_edge.contracts import bundle as B
from training.atomic import process_umask


def write_taxa_csv(path: Path, taxa: list[tuple[str, str]]) -> None:
    """The bundle's taxa.csv: a level,name header, then one row per taxon embedding."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["level", "name"])
        w.writerows(taxa)


class BundleWriter:
    """Collect files in a temporary sibling directory; `commit` checksums and renames."""

    def __init__(self, out: str | Path, overwrite: bool = False):
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise FileExistsError(f"{self.out} exists; pass --overwrite to replace it")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        # mkdtemp makes it 0700; renamed into place as is, a bundle was readable by its
        # writer alone, and a recorder service running as another user could not load it
        os.chmod(self.tmp, 0o777 & ~process_umask())
        self.overwrite = overwrite
        self._scratch: Path | None = None

    def path(self, name: str) -> Path:
        return self.tmp / name

    def scratch(self, name: str) -> Path:
        """A working file that is not part of the bundle (removed at commit or abort)."""
        if self._scratch is None:
            self._scratch = Path(
                tempfile.mkdtemp(prefix=f".{self.out.name}.work.", dir=self.out.parent)
            )
        return self._scratch / name

    def _drop_scratch(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def write_bytes(self, name: str, write: Callable[[Path], None]) -> None:
        write(self.tmp / name)

    def write_json(self, name: str, obj) -> None:
        (self.tmp / name).write_text(
            json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )

    def write_embeddings(self, name: str, emb: np.ndarray) -> None:
        np.save(self.tmp / name, emb.astype(np.float16), allow_pickle=False)

    def write_taxa(self, name: str, taxa: list[tuple[str, str]]) -> None:
        write_taxa_csv(self.tmp / name, taxa)

    def write_heads(self, name: str, weight: np.ndarray, bias: np.ndarray) -> None:
        np.savez(self.tmp / name, weight=weight.astype(np.float32), bias=bias.astype(np.float32))

    def commit(self, manifest_fields: dict) -> Path:
        """Checksum every file, write manifest.json, fsync, rename into place."""
        self._drop_scratch()
        files = {
            p.relative_to(self.tmp).as_posix(): B.sha256_file(p)
            for p in sorted(self.tmp.rglob("*"))
            if p.is_file() and p.name != B.MANIFEST
        }
        manifest = B.Manifest.model_validate(
            {
                **manifest_fields,
                "schema_version": B.SCHEMA_VERSION,
                "bundle_id": B.bundle_id_from_files(files),
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "files": files,
            }
        )
        self.write_json(B.MANIFEST, manifest.model_dump(mode="json"))
        for p in self.tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.out)
        return self.out

    def abort(self) -> None:
        self._drop_scratch()
        shutil.rmtree(self.tmp, ignore_errors=True)
