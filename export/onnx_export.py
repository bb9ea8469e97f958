"""Export the audio encoder (front-end inside) to ONNX and check it against torch."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from animalclap_edge.contracts import bundle as B
from training.model import AudioEncoder

if TYPE_CHECKING:
    from export.student import StudentEncoder

OPSET = 18


def export_audio_encoder(
    encoder: AudioEncoder | StudentEncoder, window_samples: int, path: str | Path, provenance: dict
) -> Path:
    """Write `path`: input "waveform" (batch, window_samples) float32 -> "embedding" (batch, D).

    Batch is dynamic; the window is static (the repeat-padding to the clip length
    is unrolled for it). Front-end settings and provenance go into metadata_props.
    """
    encoder = encoder.eval()
    example = torch.zeros(2, window_samples)
    batch = torch.export.Dim("batch", min=1, max=256)
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), _quiet_loggers():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            encoder,
            (example,),
            input_names=["waveform"],
            output_names=["embedding"],
            dynamic_shapes={"wave": {0: batch}},
            dynamo=True,
            opset_version=OPSET,
            verbose=False,
        )
    # dynamo=True always returns the program (None only from the legacy exporter)
    model = cast(torch.onnx.ONNXProgram, program).model_proto
    with torch.no_grad():
        dim = int(encoder(example[:1]).shape[-1])
    meta = {
        B.ONNX_META_FRONTEND: json.dumps(encoder.frontend_cfg.to_dict(), sort_keys=True),
        B.ONNX_META_WINDOW: str(window_samples),
        B.ONNX_META_EMBED_DIM: str(dim),
        B.ONNX_META_PROVENANCE: json.dumps(provenance, sort_keys=True),
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    import onnx

    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


@contextlib.contextmanager
def _quiet_loggers():
    names = ["torch.onnx", "torch.export", "torch._dynamo", "onnxscript"]
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, lvl in old.items():
            logging.getLogger(n).setLevel(lvl)


def parity(
    encoder: AudioEncoder | StudentEncoder,
    onnx_path: Path,
    windows: np.ndarray,
    batch_size: int = 16,
) -> dict[str, float]:
    """torch vs onnxruntime on the same windows (N, window_samples)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    ref, got = [], []
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            x = windows[i : i + batch_size].astype(np.float32)
            ref.append(encoder(torch.from_numpy(x)).numpy())
            got.append(sess.run(["embedding"], {"waveform": x})[0])
    ref_a, got_a = np.concatenate(ref), np.concatenate(got)
    cos = np.sum(ref_a * got_a, axis=1) / (
        np.linalg.norm(ref_a, axis=1) * np.linalg.norm(got_a, axis=1)
    )
    return {
        "onnx_vs_torch_min_cosine": float(cos.min()),
        "onnx_vs_torch_max_abs": float(np.abs(ref_a - got_a).max()),
        "onnx_vs_torch_windows": len(windows),
    }
