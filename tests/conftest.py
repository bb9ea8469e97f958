"""Shared fixtures: real audio, a tiny CLAP checkpoint written with save_pretrained."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALAUDIO = REPO.parent / "shared" / "realaudio"


@pytest.fixture(scope="session")
def realaudio() -> Path:
    if not REALAUDIO.is_dir():
        pytest.skip(f"real audio folder {REALAUDIO} not present")
    return REALAUDIO


@pytest.fixture(scope="session")
def tiny_catalogue():
    from animalclap_edge.contracts.catalogue import Catalogue, Species

    rows = [
        (
            "eurbla",
            "Turdus merula",
            "Eurasian Blackbird",
            "Aves",
            "Passeriformes",
            "Turdidae",
            "Turdus",
            ("EU",),
        ),
        (
            "sonthr1",
            "Turdus philomelos",
            "Song Thrush",
            "Aves",
            "Passeriformes",
            "Turdidae",
            "Turdus",
            ("EU",),
        ),
        (
            "eurrob1",
            "Erithacus rubecula",
            "European Robin",
            "Aves",
            "Passeriformes",
            "Muscicapidae",
            "Erithacus",
            ("EU",),
        ),
        (
            "tawowl1",
            "Strix aluco",
            "Tawny Owl",
            "Aves",
            "Strigiformes",
            "Strigidae",
            "Strix",
            ("EU",),
        ),
        (
            "comfro",
            "Rana temporaria",
            "Common Frog",
            "Amphibia",
            "Anura",
            "Ranidae",
            "Rana",
            ("EU",),
        ),
        (
            "amebul",
            "Lithobates catesbeianus",
            "American Bullfrog",
            "Amphibia",
            "Anura",
            "Ranidae",
            "Lithobates",
            ("NA",),
        ),
    ]
    return Catalogue([Species(*r) for r in rows], source="tiny")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_catalogue) -> Path:
    """A real ClapModel checkpoint (small config, random weights), saved as a hub one would be."""
    import torch

    from animalclap_edge.contracts.frontend import CLAP_UNFUSED
    from animalclap_edge.contracts.prompts import ALL_TEMPLATES, render, taxon_prompt
    from training.model import build_tokenizer, new_clap_model, save_checkpoint, small_clap_config

    texts = [render(sp, t) for sp in tiny_catalogue for t in ALL_TEMPLATES]
    texts += [
        taxon_prompt(sp, lvl)
        for sp in tiny_catalogue
        for lvl in ("class", "order", "family", "genus")
    ]
    tok = build_tokenizer(texts, vocab_size=400)
    torch.manual_seed(0)
    model = new_clap_model(small_clap_config(vocab_size=len(tok), projection_dim=64))
    return save_checkpoint(model, tok, CLAP_UNFUSED, tmp_path_factory.mktemp("ckpt") / "tiny-clap")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_checkpoint, realaudio) -> Path:
    """A real bundle from the tiny checkpoint: ONNX export, parity on real audio, trait heads."""
    from export.pipeline import ExportConfig, make_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny-bundle"
    return make_bundle(
        ExportConfig(
            checkpoint=str(tiny_checkpoint),
            out=str(out),
            data="tiny",
            name="test-tiny",
            parity_audio=str(realaudio),
            parity_windows=8,
            max_trait_items=120,
            default_threshold=0.2,
            notice="test bundle: random weights",
        ),
        progress=False,
    )


@pytest.fixture()
def bundle_copy(tmp_path, tiny_bundle) -> Path:
    """A private copy of the tiny bundle that a test may corrupt."""
    import shutil

    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


@pytest.fixture(scope="session")
def pretrain_checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint for (pre)training tests: fast HTS-AT and no dropout, so runs
    with different rank layouts can be compared number for number."""
    import torch

    from animalclap_edge.contracts.frontend import CLAP_UNFUSED
    from training.labelled_audio import open_labelled
    from training.model import build_tokenizer, new_clap_model, save_checkpoint, small_clap_config
    from training.train import all_prompts

    # a stand-in for a checkpoint pretrained elsewhere (as a hub model's tokenizer is),
    # not one trained on tiny's split: its vocabulary covers every tiny species
    catalogue = open_labelled("tiny").catalogue
    tok = build_tokenizer(all_prompts(catalogue, catalogue.ids), vocab_size=400)
    config = small_clap_config(vocab_size=len(tok), projection_dim=32, audio="fast")
    for sub in (config.text_config, config.audio_config):
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            if hasattr(sub, name):
                setattr(sub, name, 0.0)
    torch.manual_seed(0)
    model = new_clap_model(config)
    return save_checkpoint(model, tok, CLAP_UNFUSED, tmp_path_factory.mktemp("pt") / "ckpt")


def _fill_card(card: Path) -> None:
    with open(card / "recorder-os-files", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


@pytest.fixture
def fill_card():
    """fill_card(card): other files fill what is left of the card, to the last block."""
    return _fill_card


@pytest.fixture
def small_card(tmp_path):
    """A real 3 MB file system (tmpfs): needs root, as CI has."""
    card = tmp_path / "card"
    card.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(card)],
                          capture_output=True)  # fmt: skip
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield card
    finally:
        subprocess.run(["umount", str(card)], check=False)
