"""Embedding labelled recordings: windows read by workers, on the model's device."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from training.benchmark.corpus import Benchmark
from training.devices import EmbedFeed, module_device, resolve_device
from training.embed_audio import embed_items, share
from training.labelled_audio import crop, open_labelled
from training.model import AudioEncoder, load_clap

WINDOW_S = 1.0


@pytest.fixture(scope="module")
def encoder(tiny_checkpoint):
    loaded = load_clap(str(tiny_checkpoint))
    return AudioEncoder(loaded.model, loaded.frontend, mode="fft")


@pytest.fixture(scope="module")
def written_dir(tmp_path_factory) -> Path:
    """The tiny benchmark written as 48 kHz FLAC: windows are read from the files."""
    return Benchmark.build("tiny", seed=0).write(
        tmp_path_factory.mktemp("bench") / "tiny", workers=1, progress=False
    )


@pytest.fixture(scope="module")
def written(written_dir):
    return open_labelled(str(written_dir))


def _by_full_decode(encoder, data, items, n) -> np.ndarray:
    """The embeddings as evaluation made them before windows were read alone: each
    recording decoded whole, its centre cropped."""
    x = np.stack([crop(data.load(it), n, None) for it in items])
    with torch.no_grad():
        return encoder(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("workers", [0, 2])
def test_windows_read_alone_by_workers_give_the_full_decodes_embeddings(encoder, written, workers):
    n = round(WINDOW_S * 48_000)
    items = written.items[:10]
    # both sides of the window path: longer recordings (the window read alone) and
    # any shorter one (decoded whole, repeat-padded)
    assert any(it.duration_s > WINDOW_S for it in items)
    feed = EmbedFeed(batch_size=4, workers=workers)
    got = embed_items(encoder, written, items, n, progress=False, feed=feed)
    assert got.shape == (10, encoder.clap.config.projection_dim)
    np.testing.assert_allclose(got, _by_full_decode(encoder, written, items, n), atol=1e-5)


def test_real_recordings_at_other_rates_are_embedded_as_decoded_whole(encoder, real_folder):
    """shared/realaudio's files are at 44.1 kHz and others: decoded whole and resampled,
    on the workers as in this process."""
    data = open_labelled(str(real_folder))
    items = data.items[:6]
    n = round(WINDOW_S * 48_000)
    got = embed_items(encoder, data, items, n, progress=False, feed=EmbedFeed(3, 2))
    np.testing.assert_allclose(got, _by_full_decode(encoder, data, items, n), atol=1e-5)


def test_a_recording_that_cannot_be_read_is_named_from_a_worker(encoder, written, tmp_path):
    from animalclap_edge.cli_help import error_line

    broken = written.file_of(written.items[3])
    good = broken.read_bytes()
    try:
        broken.write_bytes(good[:200])  # the header survives, the audio does not
        with pytest.raises(ValueError) as e:
            embed_items(
                encoder, written, written.items[:6], 48_000, progress=False, feed=EmbedFeed(8, 1)
            )
    finally:
        broken.write_bytes(good)
    line = error_line(e.value, (ValueError,))
    assert broken.name in line and "\n" not in line


def test_no_items_give_no_rows(encoder, written):
    assert embed_items(encoder, written, [], 48_000, progress=False).shape[0] == 0


def test_devices_are_chosen_once_and_a_missing_gpu_is_said(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    for bad, said in (("banana", "not a device"), ("meta", "not supported")):
        with pytest.raises(ValueError, match=said):
            resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"sees no CUDA GPU.*--device cpu or auto"):
        resolve_device("cuda")


def test_auto_takes_this_ranks_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == torch.device("cuda:3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="sees 2 GPU"):
        resolve_device("cuda:2")


def test_a_gpu_gets_workers_shared_among_torchrun_processes(monkeypatch):
    assert EmbedFeed.for_device(torch.device("cpu")) == EmbedFeed(32, 0)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    cuda = torch.device("cuda:0")
    assert EmbedFeed.for_device(cuda) == EmbedFeed(128, 8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 2 cores a process
    assert EmbedFeed.for_device(cuda) == EmbedFeed(128, 1)


def test_an_encoders_front_end_sits_on_its_towers_device(tiny_checkpoint):
    """A model loaded on a GPU: its front-end's filterbanks must be there too, or the
    first batch fails. The meta device stands in for the GPU this machine lacks."""
    loaded = load_clap(str(tiny_checkpoint))
    enc = AudioEncoder(loaded.model.to("meta"), loaded.frontend, mode="fft")
    assert {b.device.type for b in enc.frontend.buffers()} == {"meta"}
    assert module_device(enc) == torch.device("meta")


def test_module_device():
    assert module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert module_device(torch.nn.ReLU()) == torch.device("cpu")


@pytest.mark.hardware
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_gives_the_cpus_embeddings(tiny_checkpoint, written):
    n = round(WINDOW_S * 48_000)
    items = written.items[:16]
    embs = {}
    for device in ("cpu", "cuda"):
        loaded = load_clap(str(tiny_checkpoint), resolve_device(device))
        enc = AudioEncoder(loaded.model, loaded.frontend, mode="fft")
        embs[device] = embed_items(enc, written, items, n, progress=False)  # its device's feed
    # fp32 on both; kernels differ, so not bit for bit
    cos = np.sum(embs["cpu"] * embs["cuda"], axis=1)
    assert cos.min() > 0.9999


def test_a_feed_of_no_clips_or_negative_workers_is_refused(encoder, written):
    for feed in (EmbedFeed(0, 0), EmbedFeed(8, -1)):
        with pytest.raises(ValueError, match="at least 1 clip a batch and 0 or more workers"):
            embed_items(encoder, written, written.items[:2], 48_000, progress=False, feed=feed)


def test_shares_cover_every_item_once_in_order():
    for n in (0, 1, 5, 7, 64):
        for world in (1, 2, 3, 8):
            blocks = [share(n, r, world) for r in range(world)]
            assert [i for b in blocks for i in b] == list(range(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


RANKS = Path(__file__).parent / "ranks" / "embed_share.py"


def _two_ranks_embed(checkpoint, data_dir, n: int, out: Path) -> subprocess.CompletedProcess:
    from .pretrain.conftest import run_two_ranks

    out.mkdir()
    return run_two_ranks([str(RANKS), str(checkpoint), str(data_dir), str(n), str(out)], 180)


def test_two_ranks_each_embed_half_and_both_get_one_process_rows(
    tiny_checkpoint, written_dir, written, encoder, tmp_path
):
    """finetune's reports under torchrun: each rank used to embed every recording."""
    n = 7  # odd: the shares differ by one
    done = _two_ranks_embed(tiny_checkpoint, written_dir, n, tmp_path / "two")
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [np.load(tmp_path / "two" / f"rank{r}.npz") for r in (0, 1)]
    ids = [it.id for it in written.items[:n]]
    assert [list(r["read"]) for r in ranks] == [ids[:4], ids[4:]]
    one = embed_items(encoder, written, written.items[:n], 48_000, progress=False)
    for r in ranks:
        np.testing.assert_allclose(r["rows"], one, atol=1e-5)


def test_a_broken_recording_in_one_ranks_share_is_said_by_both_ranks(
    tiny_checkpoint, written_dir, written, tmp_path
):
    broken = written.file_of(written.items[5])  # rank 1's share of 7
    good = broken.read_bytes()
    try:
        broken.write_bytes(good[:200])
        done = _two_ranks_embed(tiny_checkpoint, written_dir, 7, tmp_path / "two")
    finally:
        broken.write_bytes(good)
    assert done.returncode != 0
    for r in (0, 1):
        line = (tmp_path / "two" / f"rank{r}.err").read_text()
        assert broken.name in line and "\n" not in line
