"""Settings for few-second pretraining runs (the checkpoint is in tests/training/conftest.py),
and launching them as torchrun ranks."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


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


def cli_args(cfg) -> list[str]:
    """`python -m training.cli pretrain --set ...` arguments for these settings."""
    sets = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.name == "templates":
            v = ",".join(v)
        sets.append(f"{f.name}={'null' if v is None else v}")
    return ["-m", "training.cli", "pretrain", "--set", *sets]


def child_env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def run_two_ranks(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`args` (a script or -m module and its arguments) as two gloo ranks on this
    machine, under torchrun; its output captured."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    return subprocess.run(
        [*torchrun, *args],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def torchrun_two_ranks(cfg, timeout: float = 300) -> None:
    """Run these settings as two gloo ranks on this machine; fails with rank stderr."""
    proc = run_two_ranks(cli_args(cfg), timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]


def torchrun_two_nodes(cfg, timeout: float = 300) -> None:
    """Run these settings as two one-rank "nodes" on this machine, launched apart and
    met through torchrun's c10d rendezvous, as docs/pretraining.md launches nodes
    (each rank has LOCAL_RANK 0; RANK 0 and 1); fails with each node's stderr."""
    for code, err in two_nodes([cfg, cfg], timeout):
        assert code == 0, err[-2000:]


def two_nodes(cfgs: list, timeout: float = 300) -> list[tuple[int, str]]:
    """(exit code, stderr) of two one-rank "nodes", each started with its own settings
    (`cfgs[i]` on node i), met through torchrun's c10d rendezvous."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        "--rdzv-id=two-nodes",
    ]
    nodes = [
        subprocess.Popen(
            [*torchrun, *cli_args(cfg)],
            cwd=REPO,
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cfg in cfgs
    ]
    try:
        errors = [p.communicate(timeout=timeout)[1] for p in nodes]
    finally:
        for p in nodes:
            p.kill()
    return [(p.returncode, err) for p, err in zip(nodes, errors, strict=True)]


def fails_without_hanging(script: str, error: str, what: str, timeout: float = 120) -> None:
    """Run `script` in a fresh interpreter: it must end (not hang at exit, where
    multiprocessing joins children that ignore SIGTERM) with exit code 1 and `error`
    in its stderr."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: the error left the process hanging at exit")
    assert done.returncode == 1 and error in done.stderr, (what, done.stderr[-2000:])
