"""From a CLAP checkpoint to a verified bundle: text, ONNX, trait heads, calibration."""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from animalclap_edge.bundle import load_bundle
from animalclap_edge.contracts import bundle as B
from animalclap_edge.contracts.catalogue import Catalogue
from animalclap_edge.contracts.prompts import Template
from animalclap_edge.contracts.traits import TraitSchema
from export.onnx_export import export_audio_encoder, parity
from export.text import species_embeddings, taxon_embeddings
from export.writer import BundleWriter
from training.embed_audio import embed_items
from training.labelled_audio import open_labelled
from training.model import AudioEncoder, load_clap
from training.probe import fit_trait_heads, score_trait_heads
from training.sampling import group_split

PARITY_MIN_COSINE = 0.999


class ExportGateError(RuntimeError):
    """The exported model failed one of its own gates; nothing was written."""


@dataclass
class ExportConfig:
    checkpoint: str
    out: str
    data: str | None = None  # labelled set for trait heads (and catalogue if none given)
    catalogue: str | None = None  # species.csv to embed; default: the data's catalogue
    name: str = "animalclap"
    window_seconds: float = 3.0
    templates: list[str] = field(default_factory=lambda: ["tax+com"])
    parity_audio: str | None = None  # folder of real recordings for the torch/ONNX check
    parity_windows: int = 32
    default_threshold: float = 0.5
    max_trait_items: int = 2000
    demo: bool = False
    notice: str | None = None
    overwrite: bool = False
    training_run_id: str | None = None


def make_bundle(cfg: ExportConfig, progress: bool = True) -> Path:
    loaded = load_clap(cfg.checkpoint)
    fe = loaded.frontend
    window = round(cfg.window_seconds * fe.sample_rate)
    data = open_labelled(cfg.data) if cfg.data else None
    if cfg.catalogue:
        catalogue = Catalogue.from_csv(cfg.catalogue)
    elif data is not None:
        catalogue = data.catalogue
    else:
        raise ValueError("give --catalogue (species to embed) or --data (a labelled set with one)")
    templates = [Template.parse(t) for t in cfg.templates]
    encoder = AudioEncoder(loaded.model, fe, mode="dft").eval()

    writer = BundleWriter(cfg.out, overwrite=cfg.overwrite)
    try:
        catalogue.to_csv(writer.path(B.SPECIES))
        writer.write_embeddings(B.TEXT_EMBEDDINGS, species_embeddings(loaded, catalogue, templates))
        taxa, taxa_emb = taxon_embeddings(loaded, catalogue)
        writer.write_taxa(B.TAXA, taxa)
        writer.write_embeddings(B.TAXON_EMBEDDINGS, taxa_emb)

        provenance = {
            "checkpoint": loaded.source,
            "git_commit": _git_commit(),
            "window_samples": window,
        }
        export_audio_encoder(encoder, window, writer.path(B.AUDIO_ENCODER), provenance)
        windows, parity_source = _parity_windows(cfg, data, window, fe.sample_rate)
        figures = parity(encoder, writer.path(B.AUDIO_ENCODER), windows)
        figures["parity_audio"] = parity_source
        if figures["onnx_vs_torch_min_cosine"] < PARITY_MIN_COSINE:
            raise ExportGateError(
                f"gate 'onnx parity' failed: min cosine {figures['onnx_vs_torch_min_cosine']:.5f} "
                f"< {PARITY_MIN_COSINE} on {parity_source}"
            )

        traits_spec = None
        if data is not None and data.traits:
            traits_spec = _fit_heads(writer, encoder, data, window, cfg, progress)

        logit_scale = float(min(100.0, math.exp(loaded.model.logit_scale_a.item())))
        writer.write_json(
            B.CALIBRATION,
            B.Calibration(
                logit_scale=logit_scale,
                default_threshold=cfg.default_threshold,
            ).model_dump(),
        )
        n_params = sum(p.numel() for p in loaded.model.audio_model.parameters())
        n_params += sum(p.numel() for p in loaded.model.audio_projection.parameters())
        out = writer.commit(
            {
                "name": cfg.name,
                "demo": cfg.demo,
                "notice": cfg.notice,
                "producer": B.Producer(
                    teacher_checkpoint=loaded.source,
                    student_architecture=None,
                    training_run_id=cfg.training_run_id,
                    training_data=data.name if data else None,
                    git_commit=provenance["git_commit"],
                    tool_version=_version(),
                ).model_dump(),
                "frontend": fe.to_dict(),
                "window_samples": window,
                "sample_rate": fe.sample_rate,
                "embedding_dim": int(loaded.model.config.projection_dim),
                "audio_encoder": B.AudioEncoderSpec(
                    precision="fp32", params=int(n_params)
                ).model_dump(),
                "text": B.TextSpec(
                    template=templates[0].value
                    if len(templates) == 1
                    else "ensemble:" + ",".join(t.value for t in templates),
                    taxa_file=B.TAXA,
                    taxon_embeddings_file=B.TAXON_EMBEDDINGS,
                ).model_dump(),
                "traits": traits_spec,
                "parity": figures,
            }
        )
    except BaseException:
        writer.abort()
        raise
    load_bundle(out)  # the writer's own output must pass the loader
    return out


def _fit_heads(writer, encoder, data, window, cfg: ExportConfig, progress: bool) -> dict:
    schema: TraitSchema = data.schema
    rng = np.random.default_rng(0)
    items = data.items
    if len(items) > cfg.max_trait_items:
        items = [
            items[i] for i in sorted(rng.choice(len(items), cfg.max_trait_items, replace=False))
        ]
    emb = embed_items(encoder, data, items, window, desc="trait probe", progress=progress)
    species = [it.species_id for it in items]
    targets, known = schema.encode(data.traits, species)
    tr, te = group_split([it.group for it in items], 0.2, seed=0)
    held_out = f"scored on {len(te)} held-out site-days"
    if len(te) == 0 or len(tr) == 0:
        # Too few site-days to hold any out: the scores below are training fit, and
        # the manifest says so.
        tr = te = np.arange(len(items))
        held_out = "scored on its own training recordings (too few site-days to hold out)"
    weight, bias = fit_trait_heads(emb[tr], targets[tr], known[tr], schema)
    scores = score_trait_heads(
        emb[te], targets[te], known[te], schema, weight, bias, targets[tr], known[tr]
    )
    writer.write_json(B.TRAIT_SCHEMA, schema.to_dict())
    writer.write_heads(B.TRAIT_HEADS, weight, bias)
    return B.TraitsSpec(
        fitted_on=f"{data.name}: {len(tr)} recordings, {held_out}",
        scores=scores,
    ).model_dump()


def _parity_windows(cfg: ExportConfig, data, window: int, sr: int) -> tuple[np.ndarray, str]:
    from animalclap_edge.contracts.frontend import repeat_pad

    out = []
    if cfg.parity_audio:
        from animalclap_edge.audio.decode import AudioError, read_all

        files = sorted(
            p
            for p in Path(cfg.parity_audio).iterdir()
            if p.suffix.lower() in (".wav", ".ogg", ".flac", ".mp3")
        )
        for p in files:
            if len(out) >= cfg.parity_windows:
                break
            try:
                x = read_all(p, sr)
            except AudioError:
                continue
            if len(x) >= sr // 10:
                out.append(repeat_pad(x, window)[:window].astype(np.float32))
        source = f"{len(out)} real recordings from {cfg.parity_audio}"
    elif data is not None:
        for it in data.items[: cfg.parity_windows]:
            out.append(repeat_pad(data.load(it), window)[:window].astype(np.float32))
        source = f"{len(out)} recordings of {data.name}"
    if not out:
        raise ExportGateError(
            "gate 'onnx parity' cannot run: no parity audio (give --parity-audio DIR or --data)"
        )
    return np.stack(out), source


def _git_commit() -> str | None:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("animalclap-edge")
    except PackageNotFoundError:
        return "0+unknown"


def dump_summary(path: Path) -> str:
    m = json.loads((path / B.MANIFEST).read_text())
    return json.dumps(
        {k: m[k] for k in ("bundle_id", "name", "embedding_dim", "window_samples", "parity")},
        indent=2,
    )
