"""Balanced-epoch batches for one rank, decoded and cropped in DataLoader workers.

The plan of an epoch (30 clips per species, rare species with replacement) comes
from (seed, epoch) alone; step s of the epoch is plan positions
[s * G, (s + 1) * G) for global batch G, and rank r takes its B = G / world of them.
The crop offset and the prompt of position p come from (seed, epoch, p): no state
lives in workers, so one process with batch G and world processes with batch G/world
see the same clips, and a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from animalclap_edge.contracts.prompts import Template, render, sample_prompt
from training.labelled_audio import ClipTable, Item, LabelledSet
from training.pretrain.packing import PackPlan, pack
from training.sampling import balanced_epoch, replay_epoch


class EpochPlanDataset(Dataset):
    """(epoch, position) -> (crop (samples,), prompt str); the crop is float32, or
    int16 samples with `pcm16` where the file holds 16-bit PCM."""

    def __init__(
        self,
        data: LabelledSet,
        items: Sequence[Item],
        templates: Sequence[Template],
        shuffle_tax: bool,
        seed: int,
        clips_per_species: int,
        crop_samples: int,
        is_replay: Sequence[bool] | None = None,
        replay_fraction: float = 0.0,
        pcm16: bool = False,
    ):
        self.data, self.items = data, list(items)
        self.templates, self.shuffle_tax = list(templates), shuffle_tax
        self.seed, self.clips, self.crop_samples = seed, clips_per_species, crop_samples
        self.species_of = [it.species_id for it in self.items]
        # What a worker reads per clip, as arrays built here, before the workers fork:
        # the item's species (catalogue position) and its audio's place (ClipTable).
        self.species_row = np.array([data.catalogue.index(s) for s in self.species_of], np.int32)
        self.table = ClipTable.of(data, self.items)
        self.n_species = len(set(self.species_of))
        self.is_replay = (
            np.zeros(len(self.items), bool) if is_replay is None else np.asarray(is_replay)
        )
        self.replay_fraction = replay_fraction  # epoch_plan ignores it with no replayed item
        self._plans: dict[int, np.ndarray] = {}
        self.pcm16 = pcm16  # crops of 16-bit files as int16 (for Collate(int16=True))
        # batch slots in locked shared memory (ring.PinnedRing), set before the loader's
        # workers start: batches whose keys name a slot are read into it
        self.ring = None

    def plan(self, epoch: int) -> np.ndarray:
        if epoch not in self._plans:
            self._plans = {
                epoch: epoch_plan(
                    self.species_of,
                    self.is_replay,
                    self.clips,
                    self.replay_fraction,
                    self.seed,
                    epoch,
                )
            }
        return self._plans[epoch]

    def __len__(self) -> int:
        return len(self.plan(0))

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, str]:
        row, rng, prompt = self._draw(*key)
        return self._crop(row, rng, self.pcm16), prompt

    def __getitems__(self, keys: list[tuple[int, int]]) -> CropBatch:
        """The batch of `keys` (what the DataLoader asks a worker for when the dataset
        has this method), each crop read straight into its row of the batch tensor,
        int16 with `pcm16` and float32 otherwise, in shared memory in a worker: no
        array per crop to allocate, fill and copy again. The same samples as
        `Collate` makes of `[self[k] for k in keys]` (tested). Keys that name a slot of
        `self.ring` (ring.SlotKeys) are read into that slot instead, and the batch
        carries the slot's number, not the wave."""
        slot = getattr(keys, "slot", None)
        if slot is not None and self.ring is not None:
            wave = self.ring.slot(slot)[: len(keys)]
        else:
            slot, wave = None, batch_tensor(len(keys), self.crop_samples, self.pcm16)
        prompts = []
        # one float buffer per batch for crops that need converting (a clip shorter
        # than the crop, repeat-padded from a full decode; another sample type): a
        # worker allocating and freeing one per clip made glibc return and re-fault
        # its pages every clip, which cost more than the copy it saves
        scratch = np.empty(self.crop_samples, np.float32)
        for row, key in zip(wave.numpy(), keys, strict=True):
            i, rng, prompt = self._draw(*key)
            x = self._crop(i, rng, out=row, scratch=scratch)
            if x is not row:  # convert into the row, reusing the buffer as its scratch
                write_row(row, x, scratch)
            prompts.append(prompt)
        return CropBatch(wave, prompts, slot)

    def _crop(
        self,
        i: int,
        rng: np.random.Generator,
        pcm16: bool = False,
        out: np.ndarray | None = None,
        scratch: np.ndarray | None = None,
    ) -> np.ndarray:
        """The crop of items[i], through the table where there is one."""
        n = self.crop_samples
        if self.table is not None:
            return self.data.crop_row(self.table, i, n, rng, pcm16, out, scratch)
        return self.data.crop(self.items[i], n, rng, pcm16, out, scratch)

    def _draw(self, epoch: int, pos: int) -> tuple[int, np.random.Generator, str]:
        """Plan position `pos` of `epoch`: its item's index, the generator of its crop
        and its prompt, all from (seed, epoch, pos)."""
        i = int(self.plan(epoch)[pos])
        species = self.data.catalogue[int(self.species_row[i])]
        prompt = sample_prompt(
            species,
            random.Random(f"{self.seed}:{epoch}:{pos}"),
            self.templates,
            self.shuffle_tax,
        )
        return i, np.random.default_rng([self.seed, epoch, pos]), prompt


def epoch_plan(
    species_of: Sequence[str],
    is_replay: np.ndarray,
    clips_per_species: int,
    replay_fraction: float,
    seed: int,
    epoch: int,
) -> np.ndarray:
    """Item positions of an epoch, from (seed, epoch) alone: balanced over species, and
    with replay's share where some items are replayed (none at replay_fraction 0: a
    balanced epoch over every species would give the replayed ones a regional share)."""
    if is_replay.any():
        return replay_epoch(species_of, is_replay, clips_per_species, replay_fraction, seed, epoch)
    return balanced_epoch(species_of, clips_per_species, seed, epoch)


class RankBatches(Sampler):
    """This rank's share of global steps [start, stop) of the run, across epochs.

    Step s is step s % steps_per_epoch of epoch s // steps_per_epoch. Spanning the
    run lets one DataLoader (and its workers) serve every epoch: a loader per epoch
    restarts its workers and drains its prefetch queue at each epoch boundary.
    """

    def __init__(
        self,
        steps_per_epoch: int,
        global_batch: int,
        rank: int,
        world: int,
        start: int = 0,
        stop: int | None = None,
    ):
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
        self.steps_per_epoch, self.start = steps_per_epoch, start
        self.stop = steps_per_epoch if stop is None else stop
        self.local = global_batch // world
        self.offset = rank * self.local
        self.global_batch = global_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            epoch, in_epoch = divmod(step, self.steps_per_epoch)
            base = in_epoch * self.global_batch + self.offset
            yield [(epoch, p) for p in range(base, base + self.local)]

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


@dataclass
class CropBatch:
    """A batch assembled by `EpochPlanDataset.__getitems__`: crops already in rows."""

    wave: torch.Tensor  # (B, N) int16 or float32
    prompts: list[str]
    slot: int | None = None  # the ring slot `wave` lies in; handed on instead of it


def batch_tensor(rows: int, n: int, int16: bool) -> torch.Tensor:
    """An empty (rows, n) batch, int16 or float32; in a loader worker it lives in shared
    memory from the start (as torch's default_collate allocates it), so handing it to
    the main process copies nothing."""
    dtype = torch.int16 if int16 else torch.float32
    if torch.utils.data.get_worker_info() is None:
        return torch.empty((rows, n), dtype=dtype)
    storage = torch.UntypedStorage._new_shared(rows * n * dtype.itemsize)
    return torch.tensor([], dtype=dtype).set_(storage).view(rows, n)


def write_row(row: np.ndarray, w: np.ndarray, scratch: np.ndarray | None = None) -> None:
    """One crop into its batch row, in the row's dtype. Float crops into an int16 row
    are rounded half to even, clipped and narrowed: exact for 16-bit sources. `scratch`
    (float32, as long as the row) saves an allocation per row."""
    if row.dtype == np.float32:
        if w.dtype == np.int16:  # 16-bit samples read as such (EpochPlanDataset pcm16)
            np.multiply(w, np.float32(1 / 32768), out=row)
        else:
            row[:] = w
    elif w.dtype == np.int16:
        row[:] = w
    else:
        scratch = np.empty(len(row), np.float32) if scratch is None else scratch
        np.multiply(w, 32768.0, out=scratch)
        np.rint(scratch, out=scratch)
        np.clip(scratch, -32768, 32767, out=scratch)
        row[:] = scratch


class Collate:
    """Stack crops and tokenize prompts (in the worker, off the training thread).

    Prompts are padded to the batch's longest, or with `pad_to` to a fixed length, so
    every batch has one shape (what CUDA graphs need), or with `pack` packed into the
    plan's fixed rows (packing.py: input_ids, segments and cls_index instead of
    input_ids and attention_mask).

    With `int16` the crops travel as 16-bit PCM (half the bytes through shared memory,
    pinned memory and the host-to-device copy; a batch of 256 crops of 10 s is 0.5 GB
    in float32). That is exact for 16-bit sources and the -96 dB quantisation LAION's
    CLAP pipeline also applies; `ClapTrainModule` scales it back on the device.
    """

    def __init__(
        self,
        tokenizer,
        max_len: int = 64,
        int16: bool = False,
        pad_to: int = 0,
        pack: PackPlan | None = None,
    ):
        if pad_to and pack is not None:
            raise ValueError("a Collate pads prompts to pad_to or packs them, not both")
        self.tok, self.max_len, self.int16, self.pad_to = tokenizer, max_len, int16, pad_to
        self.pack = pack

    def __call__(self, batch: list[tuple[np.ndarray, str]] | CropBatch) -> dict[str, torch.Tensor]:
        if isinstance(batch, CropBatch) and batch.slot is not None:
            # crops already in their ring slot, whose dtype the dataset chose: only
            # the slot's number crosses to the main process (ring.RingFeed)
            return {"slot": torch.tensor(batch.slot), **self.tokens(batch.prompts)}
        if isinstance(batch, CropBatch):
            waves, texts = batch.wave, batch.prompts
            if waves.dtype == torch.int16 and not self.int16:
                # its float crops (other sample types, resampled) are already rounded
                # to 16 bits: float32 rows would not be the crops [ds[k]...] gives
                raise ValueError(
                    "an EpochPlanDataset with pcm16=True assembles int16 batches, and "
                    "this Collate has int16=False: build both from one wire_int16"
                )
            if waves.dtype != torch.int16 and self.int16:  # float rows: narrow them
                waves = self._waves(list(waves.numpy()))
        else:
            waves = self._waves([w for w, _ in batch])
            texts = [t for _, t in batch]
        return {"wave": waves, **self.tokens(texts)}

    def tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The prompts as the text tower takes them: padded, or packed with `pack`."""
        # Tokenized to one token more than kept: a prompt that reaches it is refused,
        # never silently cut. The run checks the catalogue before it starts; this
        # catches prompts it could not foresee (e.g. shuffled taxonomies).
        if self.pack is not None:
            return self._packed(texts, self.pack)
        keep = self.pad_to or self.max_len
        enc = self.tok(
            texts,
            padding="max_length" if self.pad_to else True,
            truncation=True,
            max_length=keep + 1,
            return_tensors="pt",
        )
        ids, mask = enc["input_ids"][:, :keep], enc["attention_mask"]
        cut = mask[:, keep:].any(dim=1).nonzero().flatten().tolist()
        if cut:
            limit = f"prompt_length={self.pad_to} tokens" if self.pad_to else ""
            raise self._too_long(texts[cut[0]], limit, "prompt_length")
        return {"input_ids": ids, "attention_mask": mask[:, :keep]}

    def _packed(self, texts: list[str], plan: PackPlan) -> dict[str, torch.Tensor]:
        keep = min(plan.row_tokens, self.max_len)
        lists = self.tok(texts, truncation=True, max_length=keep + 1)["input_ids"]
        cut = next((i for i, ids in enumerate(lists) if len(ids) > keep), None)
        if cut is not None:
            row = plan.row_tokens
            limit = f"a packed row of prompt_packing={row} tokens" if keep == row else ""
            raise self._too_long(texts[cut], limit, "prompt_packing")
        return pack(lists, plan.row_tokens, plan.rows, self.tok.pad_token_id)

    def _too_long(self, text: str, limit: str, setting: str) -> ValueError:
        """A prompt past `limit` (a phrase naming the `setting` that sets it) or, with no
        limit, past the tokens the text tower takes."""
        if limit:
            return ValueError(f"prompt {text!r} is longer than {limit}: raise {setting}")
        return ValueError(
            f"prompt {text!r} is longer than the {self.max_len} tokens the text model takes: "
            "shorten the templates or the names"
        )

    def _waves(self, crops: list[np.ndarray]) -> torch.Tensor:
        """(B, N) crops written row by row into the batch tensor, which in a loader
        worker is allocated in shared memory at once (as torch's default_collate
        does): stacking first and converting the whole batch cost several passes over
        it, and handing it to the main process one more copy (batch of 64 crops of
        10 s, 2 workers, no decoding: 95-105 -> 36-37 ms per batch;
        scripts/benchmarks/loader_collate.py)."""
        n = len(crops[0])
        out = batch_tensor(len(crops), n, self.int16)
        scratch = np.empty(n, np.float32) if self.int16 else None
        for row, w in zip(out.numpy(), crops, strict=True):
            write_row(row, w, scratch)
        return out


def prompt_lengths(tokenizer, species: Sequence, templates: Sequence[Template]) -> list[int]:
    """Tokens of every prompt the templates give for these species (special tokens
    included): a fixed prompt_length is checked against their longest before a run
    starts (rather than at the first batch that meets the long name hours later), and
    packing sizes its rows from them."""
    texts = [render(sp, t) for sp in species for t in templates]
    return [len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"]]
