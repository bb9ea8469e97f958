"""A tiny checkpoint for pretraining tests: fast HTS-AT, no dropout, so runs with
different rank layouts can be compared number for number."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pretrain_checkpoint(tmp_path_factory, tiny_catalogue) -> Path:
    import torch

    from animalclap_edge.contracts.frontend import CLAP_UNFUSED
    from training.labelled_audio import open_labelled
    from training.model import build_tokenizer, new_clap_model, save_checkpoint, small_clap_config
    from training.train import all_prompts

    tok = build_tokenizer(all_prompts(open_labelled("tiny")), vocab_size=400)
    config = small_clap_config(vocab_size=len(tok), projection_dim=32, audio="fast")
    for sub in (config.text_config, config.audio_config):
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            if hasattr(sub, name):
                setattr(sub, name, 0.0)
    torch.manual_seed(0)
    model = new_clap_model(config)
    return save_checkpoint(model, tok, CLAP_UNFUSED, tmp_path_factory.mktemp("pt") / "ckpt")


def tiny_run(out, checkpoint, **overrides):
    """Settings for a few-second run on the tiny benchmark: 2 clips per species, batch 8
    -> 5 steps per epoch (20 seen species)."""
    from training.pretrain.config import PretrainConfig

    values = dict(
        data="tiny",
        out=str(out),
        init=str(checkpoint),
        epochs=3,
        clips_per_species=2,
        crop_seconds=1.0,
        batch_size=8,
        lr=1e-3,
        warmup_steps=2,
        precision="fp32",
        batchnorm="frozen",
        workers=0,
        checkpoint_every=2,
        log_every=1,
        tensorboard=False,
    )
    values.update(overrides)
    return PretrainConfig(**values)
