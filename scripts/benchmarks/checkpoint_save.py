"""How long pretrain's periodic checkpoint of the full-size model takes to write: the
time a SIGTERM stop needs inside torchrun's --shutdown-timeout and SLURM's KillWait.

The model is scratch:full (transformers' ClapConfig defaults: HTS-AT and a RoBERTa-base
text tower, the shapes of laion/clap-htsat-unfused) with RoBERTa-base's vocabulary of
50,265 tokens, as a run from the hub checkpoint has; AdamW holds both moments, as after
the first step. The save is `training.pretrain.state.save`, the loop's own: model/ in
save_pretrained layout, training_state.pt, each file and the folder flushed (fsync),
then the `latest` pointer. Run it with --out on the file system the runs will use:

    python scripts/benchmarks/checkpoint_save.py --out /scratch/$USER/save-test
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import ClapConfig

from animalclap_edge.contracts.frontend import CLAP_UNFUSED
from training.model import build_tokenizer, new_clap_model
from training.pretrain import state

ROBERTA_BASE_VOCAB = 50_265


def _megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="a folder on the runs' file system")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {args.repeats}")

    config = ClapConfig(
        text_config={
            "vocab_size": ROBERTA_BASE_VOCAB,
            "pad_token_id": 1,
            "bos_token_id": 0,
            "eos_token_id": 2,
        },
        audio_config={"enable_fusion": False},
    )
    model = new_clap_model(config)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # creates exp_avg and exp_avg_sq for every parameter
    opt.zero_grad(set_to_none=True)
    tok = build_tokenizer(["a call of a bird", "a song of a frog"], vocab_size=300)

    root = Path(tempfile.mkdtemp(prefix="save-", dir=args.out)) if args.out else None
    root = root or Path(tempfile.mkdtemp(prefix="save-"))
    print(f"{params / 1e6:.1f} M parameters; saving to {root}")
    try:
        times = []
        for i in range(args.repeats):
            t = time.perf_counter()
            final = state.save(root, i, model, tok, CLAP_UNFUSED, opt, {"global_step": i}, 1)
            times.append(time.perf_counter() - t)
            print(f"save {i + 1}: {times[-1]:.2f} s")
        model_mb = _megabytes(final / "model")
        state_mb = (final / "training_state.pt").stat().st_size / 1e6
        best = min(times)
        print(
            f"model/ {model_mb:.0f} MB, training_state.pt {state_mb:.0f} MB; "
            f"fastest save {best:.2f} s ({(model_mb + state_mb) / best:.0f} MB/s), "
            f"slowest {max(times):.2f} s"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
