"""Settings for few-second pretraining runs (the checkpoint is in tests/training/conftest.py)."""


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
