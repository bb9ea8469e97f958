"""One torchrun rank of tests/training/test_embed_audio.py's two-rank tests: embeds
the first ITEMS recordings of DATA with CHECKPOINT's audio tower through embed_items in
a gloo process group, and writes OUT/rank{r}.npz (the rows, and the recordings this rank
read) or, where embed_items raised, OUT/rank{r}.err (its line), then exits 3.

usage: torchrun --nproc-per-node=2 embed_share.py CHECKPOINT DATA ITEMS OUT
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist

from animalclap_edge.cli_help import error_line
from training.devices import EmbedFeed
from training.embed_audio import embed_items
from training.labelled_audio import open_labelled
from training.model import AudioEncoder, load_clap


def main(checkpoint: str, data_dir: str, n: int, out: Path) -> int:
    tdist.init_process_group("gloo")
    rank = tdist.get_rank()
    try:
        loaded = load_clap(checkpoint)
        encoder = AudioEncoder(loaded.model, loaded.frontend, mode="fft")
        data = open_labelled(data_dir)
        read: list[str] = []
        crop = data.crop

        def counted(item, n_samples, rng):  # the recordings this rank reads
            read.append(item.id)
            return crop(item, n_samples, rng)

        data.crop = counted
        try:
            rows = embed_items(
                encoder, data, data.items[:n], 48_000, progress=False, feed=EmbedFeed(4, 0)
            )
        except ValueError as e:
            (out / f"rank{rank}.err").write_text(error_line(e, (ValueError,)))
            return 3
        np.savez(out / f"rank{rank}.npz", rows=rows, read=np.array(read))
        return 0
    finally:
        # every rank past the gather before any tears down: gloo aborted a rank whose
        # peer destroyed the group first ("terminate called", 2 runs in 12)
        tdist.barrier()
        tdist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])))
