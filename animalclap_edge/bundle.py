"""Load and verify a model bundle; refuse a bad one by file and reason."""

from __future__ import annotations

import csv
import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from animalclap_edge.contracts import bundle as B
from animalclap_edge.contracts.catalogue import TAXON_LEVELS, Catalogue, CatalogueError
from animalclap_edge.contracts.frontend import FrontendConfig, FrontendMismatch
from animalclap_edge.contracts.traits import TraitSchema, TraitSchemaError

BundleError = B.BundleError
DEMO_BUNDLE_RESOURCE = "demo_bundle"
NORM_TOLERANCE = 2e-2  # fp16 storage keeps unit rows within ~1e-3; more means not normalised


@dataclass
class Bundle:
    root: Path
    manifest: B.Manifest
    frontend: FrontendConfig
    catalogue: Catalogue
    text_embeddings: np.ndarray  # (N, D) float32, unit rows
    calibration: B.Calibration
    taxa: list[tuple[str, str]] = field(default_factory=list)  # (level, name)
    taxon_embeddings: np.ndarray | None = None  # (T, D) float32
    trait_schema: TraitSchema | None = None
    trait_weight: np.ndarray | None = None  # (D, n_outputs)
    trait_bias: np.ndarray | None = None  # (n_outputs,)
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def encoder_path(self) -> Path:
        return self.root / self.manifest.audio_encoder.file

    @property
    def id(self) -> str:
        return self.manifest.bundle_id


def demo_bundle_path() -> Path:
    """The small demo bundle shipped in the package (trained on generated audio)."""
    return Path(str(resources.files("animalclap_edge.data").joinpath(DEMO_BUNDLE_RESOURCE)))


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle directory or .tar, verifying schema, checksums and shapes."""
    path = Path(path)
    tmp = None
    if path.is_file() and tarfile.is_tarfile(path):
        tmp = tempfile.TemporaryDirectory(prefix="animalclap-bundle-")
        root = _extract_tar(path, Path(tmp.name))
    elif path.is_dir():
        root = path
    else:
        raise BundleError(str(path), _not_a_bundle(path))
    bundle = _load_dir(root)
    bundle._tmp = tmp
    return bundle


def _not_a_bundle(path: Path) -> str:
    """Why `path` (not a folder, not a tar) is no bundle, with what to give instead."""
    want = "give the bundle's folder (the one holding manifest.json) or a .tar of it"
    if not path.exists():
        return f"not found: {want}"
    if path.parent.joinpath(B.MANIFEST).is_file():
        return f"is a file inside a bundle: give its folder, {path.parent}"
    return f"is a file, not a bundle: {want}"


def _extract_tar(path: Path, dest: Path) -> Path:
    try:
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                target = (dest / m.name).resolve()
                if not (m.isfile() or m.isdir()) or not target.is_relative_to(dest.resolve()):
                    raise BundleError(
                        path.name,
                        f"unsafe member {m.name!r} (links and paths outside the bundle are refused)",
                    )
            tar.extractall(dest)  # members checked above
    except (tarfile.TarError, EOFError) as e:  # a copy to the card cut short, most often
        raise BundleError(
            path.name, f"truncated or damaged archive ({e}): copy the bundle again"
        ) from None
    manifests = list(dest.rglob(B.MANIFEST))
    if len(manifests) != 1:
        raise BundleError(
            path.name, f"expected one {B.MANIFEST} in the archive, found {len(manifests)}"
        )
    return manifests[0].parent


def _load_dir(root: Path) -> Bundle:
    manifest = _read_manifest(root)
    _verify_files(root, manifest)
    try:
        frontend = FrontendConfig.from_dict(manifest.frontend)
    except (FrontendMismatch, TypeError, ValueError) as e:
        raise BundleError(B.MANIFEST, f"frontend: {e}") from None
    if frontend.sample_rate != manifest.sample_rate:
        raise BundleError(
            B.MANIFEST,
            f"sample_rate {manifest.sample_rate} != frontend.sample_rate {frontend.sample_rate}",
        )
    d = manifest.embedding_dim

    try:
        # as its exporter made it: a bundle from before a catalogue check still loads
        species = root / manifest.text.species_file
        catalogue = Catalogue.from_csv(species, strict=False)
    except CatalogueError as e:
        raise BundleError(manifest.text.species_file, str(e)) from None
    text = _read_embeddings(root, manifest.text.embeddings_file, rows=len(catalogue), dim=d)

    taxa, taxon_emb = [], None
    if manifest.text.taxa_file:
        taxa = _read_taxa(root / manifest.text.taxa_file)
        if not manifest.text.taxon_embeddings_file:
            raise BundleError(
                B.MANIFEST, "text.taxa_file is set but text.taxon_embeddings_file is not"
            )
        taxon_emb = _read_embeddings(
            root, manifest.text.taxon_embeddings_file, rows=len(taxa), dim=d
        )

    schema = weight = bias = None
    if manifest.traits is not None:
        try:
            schema = TraitSchema.load(root / manifest.traits.schema_file)
        except TraitSchemaError as e:
            raise BundleError(manifest.traits.schema_file, str(e)) from None
        weight, bias = _read_heads(root / manifest.traits.heads_file, d, schema.n_outputs)

    calibration = _read_calibration(root / manifest.calibration_file)
    unknown = sorted(set(calibration.species_thresholds) - set(catalogue.ids))
    if unknown:
        raise BundleError(
            manifest.calibration_file, f"thresholds for species not in the catalogue: {unknown[:5]}"
        )
    return Bundle(
        root=root,
        manifest=manifest,
        frontend=frontend,
        catalogue=catalogue,
        text_embeddings=text,
        calibration=calibration,
        taxa=taxa,
        taxon_embeddings=taxon_emb,
        trait_schema=schema,
        trait_weight=weight,
        trait_bias=bias,
    )


def _minor(version: str) -> int:
    parts = version.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _where_instead(root: Path) -> str:
    """What to give instead of a folder that is not a bundle: the bundle inside it (a
    training run's folder holds one in bundle/), or how to make one of a checkpoint."""
    if not root.is_dir():
        return ""
    inside = sorted(p.parent for p in root.glob(f"*/{B.MANIFEST}"))
    if inside:
        return f"; the bundle in it is {inside[0]}: give that"
    if (root / "config.json").is_file():  # save_pretrained's: a CLAP checkpoint
        return (
            "; it is a model checkpoint: make a bundle of it with "
            f"`animalclap-export bundle --checkpoint {root} --out BUNDLE`"
        )
    return ""


def _read_manifest(root: Path) -> B.Manifest:
    p = root / B.MANIFEST
    if not p.exists():
        raise BundleError(
            B.MANIFEST, f"missing in {root}: this is not a model bundle{_where_instead(root)}"
        )
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(B.MANIFEST, f"not valid JSON: {e}") from None
    version = str(raw.get("schema_version", "")) if isinstance(raw, dict) else ""
    major = version.split(".")[0]
    if not major.isdigit():
        raise BundleError(
            B.MANIFEST,
            f"schema_version {version!r} missing or malformed; expected {B.SCHEMA_VERSION}",
        )
    if int(major) != B.SUPPORTED_MAJOR:
        hint = (
            "upgrade animalclap-edge" if int(major) > B.SUPPORTED_MAJOR else "re-export the bundle"
        )
        raise BundleError(
            B.MANIFEST,
            f"schema_version {version} is not supported (this runtime reads {B.SUPPORTED_MAJOR}.x): {hint}",
        )
    try:
        return B.Manifest.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        newer = _minor(version) > _minor(B.SCHEMA_VERSION)
        hint = (
            f" (schema {version}, from a newer exporter than this runtime's "
            f"{B.SCHEMA_VERSION}: upgrade animalclap-edge, or re-export with this version)"
            if newer and err["type"] == "extra_forbidden"
            else ""
        )
        raise BundleError(B.MANIFEST, f"{loc}: {err['msg']}{hint}") from None


def _verify_files(root: Path, manifest: B.Manifest) -> None:
    referenced = {
        manifest.audio_encoder.file,
        manifest.text.species_file,
        manifest.text.embeddings_file,
        manifest.calibration_file,
    }
    referenced |= {f for f in (manifest.text.taxa_file, manifest.text.taxon_embeddings_file) if f}
    if manifest.traits:
        referenced |= {manifest.traits.schema_file, manifest.traits.heads_file}
    missing_sums = sorted(referenced - set(manifest.files))
    if missing_sums:
        raise BundleError(B.MANIFEST, f"no checksum listed for {missing_sums}")
    for name, digest in sorted(manifest.files.items()):
        p = (root / name).resolve()
        if not p.is_relative_to(root.resolve()):
            raise BundleError(name, "path leaves the bundle directory")
        if not p.is_file():
            raise BundleError(name, "listed in manifest.json but missing")
        actual = B.sha256_file(p)
        if actual != digest:
            raise BundleError(
                name,
                f"checksum mismatch (sha256 {actual[:12]}…, manifest says {digest[:12]}…): the file is corrupt or was edited; re-copy or re-export the bundle",
            )
    # The id names the files' content: a manifest whose checksums were updated by hand
    # (or by another tool) while its id was kept would let a database pass over every
    # recording as "already done with this bundle".
    content_id = B.bundle_id_from_files(manifest.files)
    if manifest.bundle_id != content_id:
        raise BundleError(
            B.MANIFEST,
            f"bundle_id {manifest.bundle_id} does not match its files (their id is "
            f"{content_id}): the bundle was edited; re-export it with animalclap-export",
        )


def _read_embeddings(root: Path, name: str, rows: int, dim: int) -> np.ndarray:
    try:
        arr = np.load(root / name, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BundleError(name, f"cannot read: {e}") from None
    if arr.ndim != 2 or arr.shape != (rows, dim):
        raise BundleError(
            name, f"shape {arr.shape}, expected ({rows}, {dim}) = (catalogue rows, embedding_dim)"
        )
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise BundleError(name, "contains NaN or Inf")
    norms = np.linalg.norm(arr, axis=1)
    if rows and np.abs(norms - 1).max() > NORM_TOLERANCE:
        raise BundleError(
            name, f"rows are not L2-normalised (norms {norms.min():.3f}..{norms.max():.3f})"
        )
    return arr


def _read_taxa(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = [(r["level"], r["name"]) for r in csv.DictReader(f)]
    bad = [lvl for lvl, _ in rows if lvl not in TAXON_LEVELS]
    if bad:
        raise BundleError(
            path.name, f"unknown taxonomic level(s) {sorted(set(bad))}; allowed {TAXON_LEVELS}"
        )
    return rows


def _read_heads(path: Path, dim: int, n_outputs: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            w, b = z["weight"].astype(np.float32), z["bias"].astype(np.float32)
    except (OSError, KeyError, ValueError) as e:
        raise BundleError(
            path.name, f"cannot read trait heads (need arrays 'weight' and 'bias'): {e}"
        ) from None
    if w.shape != (dim, n_outputs) or b.shape != (n_outputs,):
        raise BundleError(
            path.name,
            f"weight {w.shape} / bias {b.shape}, expected ({dim}, {n_outputs}) / ({n_outputs},) from embedding_dim and the trait schema",
        )
    return w, b


def _read_calibration(path: Path) -> B.Calibration:
    try:
        return B.Calibration.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as e:
        err = e.errors()[0]
        raise BundleError(path.name, f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
