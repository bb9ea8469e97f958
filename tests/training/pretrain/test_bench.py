"""The training benchmark runs the real step and reports consistent figures."""

import json

import pytest
import torch

from training.cli import main
from training.pretrain.bench import PAPER_SAMPLES

from .conftest import fails_without_hanging


def test_bench_reports_throughput_flops_and_mfu(tmp_path, capsys):
    out = tmp_path / "bench.json"
    sets = ["init=scratch:fast", "data=tiny", "batch_size=4", "crop_seconds=1", "workers=0"]
    args = ["bench", "--set", *sets, "--steps", "2", "--warmup", "1", "--peak-tflops", "1.0"]
    assert main([*args, "--out", str(out)]) == 0
    assert "samples_per_s" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["samples_per_s"] > 0 and r["tflop_per_step"] > 0
    # the headline figures follow from the measured step time (to their rounding)
    assert r["samples_per_s"] == pytest.approx(4 / r["step_s"], rel=0.01)
    assert r["achieved_tflops"] == pytest.approx(
        r["tflop_per_step"] / r["step_s"], rel=0.02, abs=2e-3
    )
    assert r["paper_run_minutes"] == pytest.approx(
        PAPER_SAMPLES / r["samples_per_s"] / 60, rel=0.01
    )
    assert r["sustained_samples_per_s"] == r["samples_per_s"]  # no workers: loading is in it
    assert r["mfu"] == pytest.approx(r["achieved_tflops"] / 1.0, abs=1e-3)  # --peak-tflops 1
    # without workers the clips are decoded in the loop's own thread: that is data wait
    assert r["data_wait_s"] > 0 and r["compute_s"] > 0
    # the fast HTS-AT at batch 4 is a few GFLOP per sample, not kilo- or tera-
    assert 1e9 < r["tflop_per_step"] * 1e12 / 4 < 1e11
    assert r["peak_memory_gb"] is None  # CPU: no GPU memory to report
    assert r["peak_reserved_gb"] is None and r["loader_unpinned_samples_per_s"] is None
    assert r["loader_pinned_samples_per_s"] is None and r["pinned_ring"] is False
    assert r["warmup_steps"] == 1  # as asked: only GPUs stretch it past the prefetch queue
    assert r["compute_alone_s"] > 0 and r["host_overhead"] > -1
    assert abs(r["host_overhead"] - (r["step_s"] / r["compute_alone_s"] - 1)) < 0.01
    assert r["run_ahead"] == 1  # the default, as the loop runs
    assert r["compute_alone_synced_s"] > 0  # timed: on a CPU a sync waits for nothing
    assert r["shards"] is None  # the tiny benchmark: no prepared shards


@pytest.mark.parametrize("steps,warmup", [(0, 1), (2, -1)])
def test_bench_refuses_no_timed_steps_in_one_line(steps, warmup, capsys):
    args = ["bench", "--set", "init=scratch:fast", "data=tiny", "--steps", str(steps)]
    assert main([*args, "--warmup", str(warmup)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("give at least 1 timed step and 0 or more warm-up steps")


def test_the_verdict_suggests_only_what_is_not_already_on():
    from training.pretrain.bench import BenchResult, write

    figures = dict(device="gpu", model="m", params_m=1.0, batch_size=256, precision="bf16")
    figures.update(workers=14, steps=60, warmup_steps=70, samples_per_s=2000.0, step_s=0.128)
    figures.update(shards="flac", attention="eager")
    figures.update(data_wait_s=0.001, compute_s=0.127, loader_only_samples_per_s=2100.0)
    figures.update(loader_unpinned_samples_per_s=2200.0, sustained_samples_per_s=2000.0)
    figures.update(loader_pinned_samples_per_s=None, pinned_ring=False)
    figures.update(compute_alone_s=0.108, host_overhead=0.19, tflop_per_step=11.6)
    figures.update(achieved_tflops=90.0, peak_tflops=989.0, mfu=0.09, peak_memory_gb=25.0)
    figures.update(peak_reserved_gb=30.0, paper_run_minutes=34.0)
    base = BenchResult(
        compiled="default", prompt_length=0, device_prefetch=False, run_ahead=0, **figures
    )
    tuned = BenchResult(
        compiled="reduce-overhead", prompt_length=24, device_prefetch=True, run_ahead=1, **figures
    )
    before, after = write(base, None), write(tuned, None)
    assert "run_ahead=1" in before and "run_ahead" not in after.splitlines()[-1]
    assert "close to) the bottleneck" in before  # 2,100 clips/s alone feed 2,000 samples/s
    assert "19% slower" in before and "19% slower" in after
    assert "device_prefetch=true" in before and "reduce-overhead" in before
    assert "device_prefetch=true" not in after and "reduce-overhead prompt" not in after
    assert "pinning" not in before  # 2,100 pinned against 2,200 unpinned: not the limit
    assert "outran" not in before  # the loop at 2,000 samples/s, under its loader's 2,100
    assert "a sync after every step" not in after  # not timed: nothing said
    synced = BenchResult(compiled="reduce-overhead", prompt_length=24, device_prefetch=True,
                         run_ahead=1, **figures, compute_alone_synced_s=0.13)  # fmt: skip
    assert "a sync after every step costs 20%" in write(synced, None).splitlines()[-1]
    figures["loader_unpinned_samples_per_s"] = 3000.0
    pinned = write(
        BenchResult(compiled="no", prompt_length=0, device_prefetch=False, run_ahead=1, **figures),
        None,
    )
    assert "pinning limits the loader (2100 clips/s pinned, 3000 unpinned)" in pinned
    # on a CPU neither GPU-side remedy applies, and without workers there are none to cut
    figures.update(device="cpu (2 threads)", workers=0)
    cpu = BenchResult(compiled="no", prompt_length=0, device_prefetch=False, run_ahead=0, **figures)
    cpu = write(cpu, None).splitlines()[-1]  # the verdict
    assert "device_prefetch" not in cpu and "reduce-overhead" not in cpu and "run_ahead" not in cpu
    assert "workers=N (loading runs in the loop)" in cpu and "fewer workers" not in cpu
    assert "WAV shards" in cpu  # FLAC shards: decoding them is host work
    # other data has no shards to re-prepare; and a missing MFU says why
    figures.update(shards=None, peak_tflops=None, mfu=None)
    text = write(BenchResult(compiled="no", prompt_length=0, device_prefetch=False,
                             run_ahead=0, **figures), None)  # fmt: skip
    assert "WAV shards" not in text.splitlines()[-1]
    assert "mfu: None (no peak TFLOP/s known for this device: give --peak-tflops)" in text
    # a step alone slower than the loop's (a busy machine: -0.431 was seen) is flagged
    figures.update(compute_alone_s=4.46, step_s=2.54, host_overhead=-0.431)
    busy = write(BenchResult(compiled="no", prompt_length=0, device_prefetch=False,
                             run_ahead=0, **figures), None).splitlines()[-1]  # fmt: skip
    assert "the step alone took 76% longer than the loop's step" in busy
    assert "rerun before reading the timings" in busy and "slower than the step alone" not in busy


def test_timed_steps_faster_than_the_loader_are_capped_at_its_rate_and_said():
    """On an H100 (2026-11-27) the loop timed 2,471 samples/s beside a loader alone of
    1,945 clips/s: its steps drew on batches queued during the warm-up, and the paper
    run's 27.6 min could not be kept up past the queue."""
    from training.pretrain.bench import BenchResult, sustained_rate, write

    assert sustained_rate(2471.0, 1945.0, workers=14) == 1945.0
    assert sustained_rate(2287.0, 2459.0, workers=14) == 2287.0
    assert sustained_rate(50.0, 10.0, workers=0) == 50.0  # loading is in the loop's steps
    figures = dict(device="gpu", model="m", params_m=1.0, batch_size=256, precision="bf16")
    figures.update(workers=14, steps=60, warmup_steps=70, samples_per_s=2471.0, step_s=0.1036)
    figures.update(shards="wav", attention="sdpa", compiled="reduce-overhead")
    figures.update(data_wait_s=0.002, compute_s=0.101, loader_only_samples_per_s=1945.0)
    figures.update(loader_unpinned_samples_per_s=5254.0, sustained_samples_per_s=1945.0)
    figures.update(loader_pinned_samples_per_s=None, pinned_ring=False)
    figures.update(compute_alone_s=0.1026, host_overhead=0.01, tflop_per_step=13.36)
    figures.update(achieved_tflops=101.5, peak_tflops=989.0, mfu=0.103, peak_memory_gb=2.5)
    figures.update(peak_reserved_gb=30.3, paper_run_minutes=35.1, prompt_length=32)
    verdict = write(BenchResult(device_prefetch=True, run_ahead=1, **figures), None)
    verdict = verdict.splitlines()[-1]
    assert "the timed steps (2471 samples/s) outran the loader alone (1945 clips/s)" in verdict
    assert "pinning limits the loader (1945 clips/s pinned, 5254 unpinned)" in verdict
    # through the ring, the same run times the pinned loader as its peer, and says so
    figures.update(pinned_ring=True, loader_only_samples_per_s=4800.0)
    figures.update(loader_pinned_samples_per_s=2000.0, sustained_samples_per_s=2471.0)
    ring = write(BenchResult(device_prefetch=True, run_ahead=1, **figures), None)
    ring = ring.splitlines()[-1]
    assert (
        "the ring's loader delivers 4800 clips/s to the GPU, the pinning thread's 2000 (2.40x)"
        in ring
    )
    assert "outran" not in ring and "pinning limits" not in ring and "trails" not in ring
    figures.update(loader_only_samples_per_s=3000.0)  # under 0.8x the 5,254 unpinned
    slow = write(BenchResult(device_prefetch=True, run_ahead=1, **figures), None)
    assert "the ring's loader (3000 clips/s, copied to the GPU) trails the workers" in slow
    # padded prompts: what packing would give the text tower, said where it is much less
    figures.update(text_tokens_per_step=12288, packed_text_tokens=4288)
    padded = write(BenchResult(device_prefetch=True, run_ahead=1, **figures), None)
    assert (
        "prompt_packing=auto would give the text tower 4288 tokens a step instead of 12288"
        in padded.splitlines()[-1]
    )
    figures.update(packed_text_tokens=11000)  # little to gain: not said
    assert (
        "prompt_packing"
        not in write(BenchResult(run_ahead=1, device_prefetch=True, **figures), None).splitlines()[
            -1
        ]
    )


def test_a_loader_bench_never_reports_more_than_its_loader_keeps_up():
    sets = ["init=scratch:fast", "data=tiny", "batch_size=4", "crop_seconds=1", "workers=1"]
    from training.pretrain.bench import bench
    from training.pretrain.config import load_config

    r = bench(load_config(None, sets), steps=2, warmup=1, peak_tflops=1.0)
    assert r.sustained_samples_per_s <= min(r.samples_per_s, r.loader_only_samples_per_s)
    assert r.paper_run_minutes == pytest.approx(
        PAPER_SAMPLES / r.sustained_samples_per_s / 60, rel=0.01
    )
    assert r.achieved_tflops == pytest.approx(
        r.tflop_per_step * r.sustained_samples_per_s / 4, rel=0.02, abs=2e-3
    )


def test_the_flop_count_is_a_training_steps_forward_and_backward():
    """MFU is only as right as its FLOPs: a training step costs about 3x its forward
    pass (the backward about twice it), which a forward-only count would miss."""
    import contextlib

    from torch.utils.flop_counter import FlopCounterMode

    from training.pretrain.bench import bench
    from training.pretrain.config import load_config
    from training.pretrain.dist import Dist
    from training.pretrain.loop import (
        ClapTrainModule,
        build_model,
        forward_loss,
        make_collate,
        make_dataset,
    )
    from training.pretrain.mixed import training_data

    sets = ["init=scratch:fast", "data=tiny", "batch_size=4", "crop_seconds=1", "workers=0"]
    cfg = load_config(None, sets)
    step_flops = bench(cfg, steps=1, warmup=1, peak_tflops=1.0).tflop_per_step * 1e12
    td = training_data(cfg.data, cfg.split, cfg.seed, cfg.val_fraction, cfg.replay)
    loaded = build_model(cfg, td.data, td.seen_species)
    module = ClapTrainModule(loaded)
    dataset = make_dataset(cfg, td, loaded)
    batch = make_collate(cfg, loaded, td.data.catalogue, 4)([dataset[(0, p)] for p in range(4)])
    one = Dist(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        forward_loss(module, module, batch, contextlib.nullcontext(), one)
    ratio = step_flops / counter.get_total_flops()
    print(f"step / forward FLOPs: {ratio:.2f}")
    assert 2.5 < ratio < 3.5, ratio  # prompts differ in length between batches: not exact


def test_the_loader_alone_is_timed_with_the_loops_loader_shut_down(monkeypatch):
    """The loop's loader keeps `4 * workers` batches outstanding: left running, its
    workers (and, on a GPU, its pinning thread) refill that queue while the loader is
    timed alone, on the same cores, and the pinned figure reads low beside the unpinned
    one timed after it."""
    import multiprocessing

    from training.pretrain import bench as bench_module
    from training.pretrain.config import load_config

    real = bench_module.steady_loader_rate
    before = {p.pid for p in multiprocessing.active_children()}
    alive = []

    def counting(it, steps, workers, batch_size):
        alive.append(len({p.pid for p in multiprocessing.active_children()} - before))
        return real(it, steps, workers, batch_size)

    monkeypatch.setattr(bench_module, "steady_loader_rate", counting)
    sets = ["init=scratch:fast", "data=tiny", "batch_size=4", "crop_seconds=1", "workers=1"]
    bench_module.bench(load_config(None, sets), steps=1, warmup=1, peak_tflops=1.0)
    assert alive == [1]  # the timed loader's one worker, and no other


@pytest.mark.parametrize(
    "name,peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),  # SXM: the H100 rows of docs/pretraining.md
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H200 NVL", 835.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A10", 125.0),
        ("NVIDIA L40S", 362.0),
        ("Tesla T4", None),
    ],
)
def test_mfu_uses_the_dense_bf16_peak_of_the_cards_own_variant(monkeypatch, name, peak):
    """An H100 PCIe (756 TFLOP/s dense bf16) or NVL (835) is not an SXM H100 (989):
    matched as "H100", its MFU read 24% or 16% low."""
    from training.pretrain.bench import _peak

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert _peak(torch.device("cuda"), None) == peak
    assert _peak(torch.device("cuda"), 500.0) == 500.0  # --peak-tflops wins


def test_gradient_checkpointing_does_not_inflate_the_flop_count(capsys):
    """MFU counts the model's FLOPs. With grad_checkpointing the counted step also
    recomputed every checkpointed layer's forward in backward (0.0120 -> 0.0152
    TFLOP per step on this config), so the same run read as 27% higher MFU."""
    sets = ["init=scratch:fast", "data=tiny", "batch_size=4", "crop_seconds=1", "workers=0"]
    figures = []
    for on in ("false", "true"):
        args = ["bench", "--set", *sets, f"grad_checkpointing={on}", "--steps", "1"]
        assert main([*args, "--warmup", "1", "--peak-tflops", "1.0"]) == 0
        out = capsys.readouterr().out
        figures.append(float(out.split("tflop_per_step:")[1].split()[0]))
    assert figures[1] == pytest.approx(figures[0], rel=1e-3)


def test_the_flops_are_counted_on_two_slices_and_fitted(monkeypatch):
    """An eager step on the whole batch keeps every activation: beside the compiled
    step's CUDA-graph pools it ran out of memory at batch 512 on an H100, and a batch
    that fits only with checkpointing did so before it timed a step. Slices of 1 and 2
    clips, fitted as a B + b B^2 (the B x B logits), give batch 4's count; packed
    prompts too, though a slice's packed rows are not in proportion to its clips."""
    from training.pretrain import bench as bench_module
    from training.pretrain.config import load_config

    sets = ["init=scratch:fast", "data=tiny", "batch_size=4", "crop_seconds=1", "workers=0"]
    for more in ([], ["grad_checkpointing=true"], ["prompt_packing=48"]):
        whole = bench_module.bench(load_config(None, [*sets, *more]), 1, 1, 1.0)
        monkeypatch.setattr(bench_module, "FLOP_COUNT_SLICE", 1)
        sliced = bench_module.bench(load_config(None, [*sets, *more]), 1, 1, 1.0)
        monkeypatch.undo()
        assert sliced.tflop_per_step == pytest.approx(whole.tflop_per_step, rel=1e-4), more


def test_step_flops_solves_the_linear_and_the_logits_terms(monkeypatch):
    from training.pretrain import bench as bench_module

    monkeypatch.setattr(bench_module, "FLOP_COUNT_SLICE", 16)
    counted = []

    def count(n: int) -> float:
        counted.append(n)
        return 7.0 * n + 3.0 * n * n

    assert bench_module.step_flops(count, 512) == pytest.approx(7.0 * 512 + 3.0 * 512**2)
    assert counted == [16, 32]  # never the whole batch
    counted.clear()
    assert bench_module.step_flops(count, 20) == 7.0 * 20 + 3.0 * 400 and counted == [20]


def test_an_error_in_bench_ends_the_process_instead_of_hanging_at_exit():
    """Loader workers ignore SIGTERM (a rank saves first on pre-emption). An error that
    left bench with its loaders running kept them alive to the interpreter's exit,
    whose multiprocessing SIGTERMs and joins them: on an H100 an out-of-memory error
    hung until the call's timeout. The error is injected where that one struck."""
    import textwrap

    script = textwrap.dedent(
        """
        import torch.utils.flop_counter as fc
        from training.pretrain.bench import bench
        from training.pretrain.config import load_config

        class OutOfMemory:
            def __init__(self, *args, **kwargs):
                pass

            def __enter__(self):
                raise RuntimeError("injected: CUDA out of memory")

            def __exit__(self, *exc):
                return False

        fc.FlopCounterMode = OutOfMemory
        sets = ["init=scratch:fast", "data=tiny", "batch_size=4", "crop_seconds=1"]
        bench(load_config(None, [*sets, "workers=2", "pinned_ring=RING"]), 2, 1)
        """
    )
    for ring in ("false", "true"):
        filled = script.replace("RING", ring)
        fails_without_hanging(filled, "injected: CUDA out of memory", f"pinned_ring={ring}")


def test_bench_bounds_the_step_by_its_roofline_where_the_bandwidth_is_known(capsys):
    """The roofline of the step it timed, from the same FLOPs: on a CPU only with the
    peak and the bandwidth given (a GPU's name gives both)."""
    from training.pretrain.bench import bench, write
    from training.pretrain.config import load_config

    sets = ["init=scratch:fast", "data=tiny", "batch_size=4", "crop_seconds=1", "workers=0"]
    cfg = load_config(None, sets)
    r = bench(cfg, steps=1, warmup=0, peak_tflops=1.0, bandwidth_tbs=0.05)
    assert r.bandwidth_tbs == 0.05
    assert 0 < r.roofline_flash_s <= r.roofline_fused_s <= r.roofline_unfused_s
    assert r.of_roofline == pytest.approx(r.roofline_flash_s / r.compute_alone_s, abs=1e-3)
    # the roofline's FLOPs are the ones MFU is counted with
    flops = r.mfu_bound * r.roofline_flash_s * 1e12
    assert flops == pytest.approx(r.tflop_per_step * 1e12, rel=0.01)
    assert "of its roofline's speed" in write(r, None)
    unknown = bench(cfg, steps=1, warmup=0, peak_tflops=1.0)
    assert unknown.of_roofline is None and unknown.roofline_flash_s is None
    assert "--bandwidth-tbs" in write(unknown, None)


def test_a_roofline_that_cannot_be_recorded_keeps_the_timed_figures(monkeypatch):
    """It runs after minutes of compiled, timed steps on a GPU: its failure is said, not
    raised."""
    from training.pretrain import bench as bench_module
    from training.pretrain.config import load_config

    def fails(*a, **k):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(bench_module, "record_step", fails)
    sets = ["init=scratch:fast", "data=tiny", "batch_size=4", "crop_seconds=1", "workers=0"]
    r = bench_module.bench(load_config(None, sets), 1, 0, peak_tflops=1.0, bandwidth_tbs=0.05)
    assert r.samples_per_s > 0 and r.of_roofline is None
    assert r.roofline_error.startswith("failed (RuntimeError: CUDA out of memory)")
    assert "--bandwidth-tbs" not in bench_module.write(r, None)


@pytest.mark.parametrize("flag", ["--peak-tflops", "--bandwidth-tbs"])
def test_a_device_figure_of_zero_or_less_is_refused_in_one_line(flag, capsys):
    sets = ["init=scratch:fast", "data=tiny", "batch_size=4", "crop_seconds=1", "workers=0"]
    assert main(["bench", "--set", *sets, "--steps", "1", flag, "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after bench's "what it runs"
    assert err.endswith(f"error: {flag} -1.0: give the device's figure, a number above 0")
