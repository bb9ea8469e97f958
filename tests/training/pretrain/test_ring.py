"""pinned_ring: workers write batches into shared slots; the batches that come out are
the plain loader's, and no slot is refilled while its batch may still be read."""

import dataclasses
import json
import time
from itertools import islice

import pytest
import torch

from training.pretrain.config import load_config
from training.pretrain.data import RankBatches
from training.pretrain.loop import (
    LOADER_PREFETCH,
    build_model,
    make_collate,
    make_dataset,
    make_loader,
    make_ring,
)
from training.pretrain.mixed import training_data
from training.pretrain.ring import MARGIN, PinnedRing

from .conftest import tiny_run

BATCH, WORKERS, TAKEN = 4, 2, 16


@pytest.fixture(scope="module")
def parts():
    sets = ["init=scratch:fast", "data=tiny", f"batch_size={BATCH}", "crop_seconds=1"]
    cfg = load_config(None, [*sets, f"workers={WORKERS}", "pinned_ring=true"])
    td = training_data(cfg.data, cfg.split, cfg.seed, cfg.val_fraction, cfg.replay)
    loaded = build_model(cfg, td.data, td.seen_species)
    dataset = make_dataset(cfg, td, loaded)
    collate = make_collate(cfg, loaded, td.data.catalogue, cfg.batch_size)
    per_epoch = len(dataset) // BATCH
    # across an epoch boundary, as the run's one loader goes
    sampler = RankBatches(per_epoch, BATCH, 0, 1, per_epoch - TAKEN // 2, per_epoch + TAKEN)
    plain = make_loader(
        dataclasses.replace(cfg, workers=0), dataset, collate, sampler, torch.device("cpu")
    )
    want = [{k: v.clone() for k, v in b.items()} for b in islice(plain, TAKEN)]
    return cfg, dataset, collate, sampler, want


def _ring_batches(parts, ring: PinnedRing, device: torch.device):
    cfg, dataset, collate, sampler, _ = parts
    return make_loader(cfg, dataset, collate, sampler, device, ring)


def _equal(got: dict, want: dict) -> bool:
    return got.keys() == want.keys() and all(torch.equal(got[k].cpu(), want[k]) for k in want)


def test_ring_batches_are_the_plain_loaders_and_stay_intact_while_held(parts):
    """On a CPU a batch's wave is its slot: still the same once the next batch is taken
    and a worker is writing the batch the loader sent it then."""
    cfg, dataset, _, _, want = parts
    ring = make_ring(cfg, dataset, BATCH, torch.device("cpu"))
    assert ring.slots == WORKERS * LOADER_PREFETCH + MARGIN
    batches = iter(_ring_batches(parts, ring, torch.device("cpu")))
    held = None
    for j in range(TAKEN):
        # handing batch j over sends batch j + W * P to a worker: its slot, before
        sent = ring.slot((j + WORKERS * LOADER_PREFETCH) % ring.slots)
        before = sent.clone()
        batch = next(batches)
        assert set(batch) == {"wave", "input_ids", "attention_mask"}
        assert _equal(batch, want[j]), j
        _wait_for_change(sent, before)
        if held is not None:
            assert _equal(held, want[j - 1]), f"batch {j - 1} overwritten after {j} was taken"
        held = batch
    del batches


def _wait_for_change(slot: torch.Tensor, before: torch.Tensor, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while torch.equal(slot, before):
        assert time.monotonic() < deadline, "no worker wrote the slot of the batch sent to it"
        time.sleep(0.01)


def test_with_one_slot_fewer_a_held_batch_is_overwritten(parts):
    """The arithmetic the ring rests on: the DataLoader sends batch j + W * P to a worker
    when it hands over batch j, so W * P + MARGIN - 1 slots refill the slot of the batch
    taken just before, while it is held (what the test above would catch)."""
    cfg, dataset, _, _, want = parts
    full = make_ring(cfg, dataset, BATCH, torch.device("cpu"))
    short = PinnedRing(full.slots - 1, BATCH, dataset.crop_samples, full.wave.dtype, "cpu")
    batches = iter(_ring_batches(parts, short, torch.device("cpu")))
    first = next(batches)
    assert _equal(first, want[0])
    next(batches)  # hands batch 1 over: batch 1 + W * P goes to a worker, into slot 0
    _wait_for_change(first["wave"], want[0]["wave"])  # fails the test if never written
    del batches


def test_pretrain_through_the_ring_trains_as_the_pinned_loader_does(pretrain_checkpoint, tmp_path):
    from training.pretrain.loop import pretrain

    losses, notes = {}, {}
    for ring in ("false", "true"):
        cfg = tiny_run(tmp_path / ring, pretrain_checkpoint, max_steps=3, checkpoint_every=100)
        pretrain(dataclasses.replace(cfg, workers=1, pinned_ring=ring == "true"), progress=False)
        rows = [json.loads(x) for x in (tmp_path / ring / "train_log.jsonl").open()]
        losses[ring] = [r["loss"] for r in rows if "step" in r]
        notes[ring] = [r.get("note", "") for r in rows]
    assert len(losses["false"]) == 3 and losses["false"][0] != losses["false"][-1]
    assert losses["true"] == losses["false"]
    assert any(n.startswith("pinned_ring: 6 batch slots") for n in notes["true"])
    assert not any("pinned_ring" in n for n in notes["false"])


def test_bench_through_the_ring_reports_it():
    from training.pretrain.bench import bench

    sets = ["init=scratch:fast", "data=tiny", "batch_size=4", "crop_seconds=1", "workers=1"]
    r = bench(load_config(None, [*sets, "pinned_ring=true"]), steps=2, warmup=1)
    assert r.pinned_ring and r.loader_only_samples_per_s > 0 and r.samples_per_s > 0


def test_too_little_shared_memory_is_one_line_that_says_what_to_do(monkeypatch):
    def full(self):
        raise RuntimeError("unable to write to file </torch_1_2>: No space left on device")

    monkeypatch.setattr(torch.Tensor, "share_memory_", full)
    with pytest.raises(RuntimeError) as e:
        PinnedRing.for_loader(14 * 4, 256, 480_000, True, "cpu")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("pinned_ring: could not allocate 13.3 GB of shared memory for 58")
    assert "docker --shm-size" in msg and "pinned_ring=false" in msg


@pytest.mark.hardware
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_locked_slots_reach_the_device_intact(parts):
    """Copied from locked slots on a side stream while the compute stream lags behind:
    every batch on the device is the plain loader's, and closing unlocks the slots."""
    cfg, dataset, _, _, want = parts
    dev = torch.device("cuda")
    with make_ring(cfg, dataset, BATCH, dev) as ring:
        assert ring._locked
        got = []
        for batch in islice(_ring_batches(parts, ring, dev), TAKEN):
            assert all(v.device.type == "cuda" for v in batch.values())
            torch.cuda._sleep(2_000_000)  # the compute stream lags: copies run ahead of it
            got.append({k: v.clone() for k, v in batch.items()})
        torch.cuda.synchronize()
        assert all(_equal(g, w) for g, w in zip(got, want, strict=True))
    assert not ring._locked
