"""DevicePrefetch hands over every batch, in order, unchanged, on the device."""

import pytest
import torch

from training.pretrain.prefetch import DevicePrefetch


def _host_batches(n: int, pin: bool = False):
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        wave = torch.randint(-32768, 32767, (4, 48_000), generator=g, dtype=torch.int16)
        ids = torch.full((4, 7), i)
        yield {"wave": wave.pin_memory() if pin else wave, "input_ids": ids}


def _check(device: torch.device, pin: bool) -> None:
    got = list(DevicePrefetch(_host_batches(5, pin), device))
    want = list(_host_batches(5))
    assert len(got) == 5
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for k in w:
            assert g[k].device.type == device.type and g[k].dtype == w[k].dtype
            assert torch.equal(g[k].cpu(), w[k])


def test_on_cpu_it_is_a_plain_move_in_order():
    _check(torch.device("cpu"), pin=False)
    assert list(DevicePrefetch([], torch.device("cpu"))) == []


@pytest.mark.hardware
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_side_stream_copies_arrive_intact():
    dev = torch.device("cuda")
    _check(dev, pin=True)
    # while the compute stream is busy, each batch read there is the one copied for it
    for i, batch in enumerate(DevicePrefetch(_host_batches(6, pin=True), dev)):
        torch.cuda._sleep(1_000_000)  # keep the compute stream busy while the next copies
        assert int(batch["input_ids"][0, 0]) == i
