"""Model bundle v1: the one contract between the server and the recorder.

A bundle is a directory (or a .tar of one):

    manifest.json          this model (`Manifest`), with the sha256 of every other file
    audio_encoder.onnx     raw mono waveform (B, window samples) -> L2-normalised (B, D);
                           the front-end is inside the graph; settings in its metadata
    species.csv            the catalogue (row order = embedding rows)
    text_embeddings.npy    (N, D) float16, L2-normalised
    taxa.csv               optional: level,name rows for taxonomic back-off
    taxon_embeddings.npy   optional: (T, D) float16, row order = taxa.csv
    trait_schema.json      optional: the trait schema
    trait_heads.npz        optional: weight (D, n_outputs) float32, bias (n_outputs,)
    calibration.json       logit scale, default threshold, per-species thresholds

The writer lives in `export`, the loader in `animalclap_edge.bundle`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.0"
SUPPORTED_MAJOR = 1

MANIFEST = "manifest.json"
AUDIO_ENCODER = "audio_encoder.onnx"
SPECIES = "species.csv"
TEXT_EMBEDDINGS = "text_embeddings.npy"
TAXA = "taxa.csv"
TAXON_EMBEDDINGS = "taxon_embeddings.npy"
TRAIT_SCHEMA = "trait_schema.json"
TRAIT_HEADS = "trait_heads.npz"
CALIBRATION = "calibration.json"

# Keys of the ONNX graph's metadata_props.
ONNX_META_FRONTEND = "animalclap.frontend"
ONNX_META_WINDOW = "animalclap.window_samples"
ONNX_META_EMBED_DIM = "animalclap.embedding_dim"
ONNX_META_PROVENANCE = "animalclap.provenance"


class BundleError(ValueError):
    """A bundle refused; the message names the file and the problem."""

    def __init__(self, file: str, problem: str):
        self.file, self.problem = file, problem
        super().__init__(f"bundle refused: {file}: {problem}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Producer(_Strict):
    teacher_checkpoint: str | None = None
    student_architecture: str | None = None
    training_run_id: str | None = None
    training_data: str | None = None
    git_commit: str | None = None
    tool: str = "animalclap-export"
    tool_version: str = ""


class AudioEncoderSpec(_Strict):
    file: str = AUDIO_ENCODER
    input_name: str = "waveform"
    output_name: str = "embedding"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    quantization: str | None = None
    macs_per_window: int | None = None
    params: int | None = None


class TextSpec(_Strict):
    template: str  # a Template value, or "ensemble:a,b,c"
    species_file: str = SPECIES
    embeddings_file: str = TEXT_EMBEDDINGS
    taxa_file: str | None = None
    taxon_embeddings_file: str | None = None


class TraitsSpec(_Strict):
    schema_file: str = TRAIT_SCHEMA
    heads_file: str = TRAIT_HEADS
    fitted_on: str = ""
    scores: dict[str, dict[str, float | bool]] = Field(default_factory=dict)  # per trait


class Manifest(_Strict):
    schema_version: str
    bundle_id: str
    name: str
    created_utc: str
    demo: bool = False
    notice: str | None = None  # shown by the CLI whenever the bundle is used
    producer: Producer
    frontend: dict
    window_samples: int = Field(gt=0)
    sample_rate: int = Field(gt=0)
    embedding_dim: int = Field(gt=0)
    audio_encoder: AudioEncoderSpec
    text: TextSpec
    traits: TraitsSpec | None = None
    calibration_file: str = CALIBRATION
    parity: dict[str, float | int | str] = Field(default_factory=dict)
    # What the exporter measured and required: gate name -> measured, threshold, passed,
    # what it was measured on (e.g. "int8 vs fp32 top-1 agreement").
    gates: dict[str, dict[str, float | int | str | bool]] = Field(default_factory=dict)
    files: dict[str, str]  # relative name -> sha256 hex

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate


class Calibration(_Strict):
    logit_scale: float = Field(gt=0)  # multiplies cosine before the softmax over species
    default_threshold: float = Field(ge=0, le=1)
    species_thresholds: dict[str, float] = Field(default_factory=dict)
    backoff_threshold: float = Field(default=0.5, ge=0, le=1)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def bundle_id_from_files(files: dict[str, str]) -> str:
    """Content id: the same files give the same id, whoever packs them."""
    h = hashlib.sha256("".join(f"{k}={v}\n" for k, v in sorted(files.items())).encode())
    return h.hexdigest()[:16]
