"""The "fast" from-scratch audio config goes through the same save, load and ONNX path."""

import numpy as np
import torch

from export.onnx_export import export_audio_encoder, parity
from training.model import (
    AudioEncoder,
    build_tokenizer,
    load_clap,
    new_clap_model,
    save_checkpoint,
    small_clap_config,
)


def test_fast_audio_config_saves_loads_and_exports_with_parity(tmp_path, realaudio):
    from animalclap_edge.audio.decode import read_all
    from animalclap_edge.contracts.frontend import CLAP_UNFUSED, repeat_pad

    tok = build_tokenizer(["Turdus merula", "Strix aluco", "Aves Strigiformes"], vocab_size=300)
    torch.manual_seed(0)
    model = new_clap_model(small_clap_config(len(tok), projection_dim=64, audio="fast"))
    loaded = load_clap(str(save_checkpoint(model, tok, CLAP_UNFUSED, tmp_path / "ck")))
    assert loaded.model.config.audio_config.patch_size == 16
    enc = AudioEncoder(loaded.model, loaded.frontend).eval()
    files = sorted(realaudio.glob("*.wav"))[:6]
    windows = np.stack([repeat_pad(read_all(f, 48000)[:144000], 144000) for f in files])
    onnx_path = export_audio_encoder(enc, 144000, tmp_path / "audio.onnx", {"test": "fast"})
    figures = parity(enc, onnx_path, windows)
    assert figures["onnx_vs_torch_min_cosine"] > 0.9999
