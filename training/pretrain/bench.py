"""`animalclap-train bench`: training throughput, data wait vs compute, MFU, memory.

One process, the real pieces of the pretraining loop (plan dataset, DataLoader
workers, both towers, gathered loss, AdamW, autocast). FLOPs per step are counted
by torch's FlopCounterMode on real eager steps (matmuls and convolutions, forward and
backward, on slices of a real batch: step_flops), not estimated from parameter
counts. The data pipeline is also timed alone, without the model, so it is clear
whether it could keep up; and the step is timed alone, its batch on the device and
no loader running, so that host work the loop's step carries (copies, cores shared
with the workers) shows as host_overhead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import torch

from training.pretrain.config import PretrainConfig
from training.pretrain.data import RankBatches
from training.pretrain.dist import Dist
from training.pretrain.loop import (
    LOADER_PREFETCH,
    ClapTrainModule,
    build_model,
    catalogue_prompt_lengths,
    compile_module,
    configure_towers,
    fixed_prompts,
    forward_loss,
    gradient_checkpointing_off,
    make_collate,
    make_dataset,
    make_loader,
    make_optimizer,
    make_ring,
    optimizer_step,
    resolve_packing,
    shut_down,
)
from training.pretrain.mixed import training_data
from training.pretrain.pacing import RunAhead
from training.pretrain.packing import (
    PACKED_KEYS,
    PackPlan,
    is_packed,
    packed_text_features,
    take,
)
from training.pretrain.prefetch import DevicePrefetch
from training.pretrain.roofline import (
    MEMORY_TBPS,
    PEAK_BF16_TFLOPS,
    Device,
    bound,
    by_name,
    record_step,
    trainable,
)
from training.pretrain.step_profile import profile_step

PAPER_SAMPLES = 20 * 6823 * 30  # 20 balanced epochs of 6,823 species x 30 clips


@dataclass
class BenchResult:
    device: str
    model: str
    params_m: float
    batch_size: int
    precision: str
    compiled: str  # "no" or the torch.compile mode
    prompt_length: int  # 0: padded to each batch's longest
    attention: str  # eager (transformers' default) or sdpa, both towers
    device_prefetch: bool
    pinned_ring: bool  # batches through locked shared slots, no pinning thread (ring.py)
    run_ahead: int  # steps queued ahead of the GPU (0: a sync after every step)
    workers: int
    shards: str | None  # codec of a prepared set's shards; None for other data
    steps: int
    warmup_steps: int  # untimed; on a GPU at least the loader's prefetch queue
    samples_per_s: float
    step_s: float
    data_wait_s: float
    compute_s: float
    loader_only_samples_per_s: float
    loader_unpinned_samples_per_s: float | None  # GPU only: without the pinning thread
    # GPU with pinned_ring only: the loader as without it (pinning thread), the ring's
    # peer in the same run
    loader_pinned_samples_per_s: float | None
    # what a long run keeps up: the loop's rate, or the loader's where the timed steps
    # outran it (they drew on batches queued during the warm-up); achieved_tflops, mfu
    # and paper_run_minutes follow it
    sustained_samples_per_s: float
    # the step with its batch already on the device and no loader running; the loop's
    # step over it, minus one: host work hidden in compute_s
    compute_alone_s: float
    host_overhead: float
    tflop_per_step: float
    achieved_tflops: float
    peak_tflops: float | None
    mfu: float | None
    peak_memory_gb: float | None  # tensors allocated; misses CUDA graphs' private pools
    peak_reserved_gb: float | None  # the caching allocator's reserve, graph pools included
    paper_run_minutes: float
    # the step alone again, with a sync after every step (as run_ahead=0 runs the loop):
    # what queueing steps ahead of the GPU saves, on the same compiled module
    compute_alone_synced_s: float | None = None
    # with --profile: the folder holding where the step's time goes (step_profile.py),
    # or why profiling failed
    profile: str | None = None
    # tokens per row of packed prompts (0: padded), and the tokens the text tower took
    # in the step the FLOPs were counted on (rows x row length, padding included)
    prompt_packing: int | str = 0
    text_tokens_per_step: int | None = None
    # padded prompts only: the tokens prompt_packing=auto would give the text tower (its
    # plan for this catalogue and batch)
    packed_text_tokens: int | None = None
    # the step's roofline (roofline.py) from its operators recorded on this device, where
    # its peak and memory bandwidth are known: at best the flash bound's time (attention
    # fused, every other operator without FLOPs free), and the step alone's share of
    # that speed; the fused and unfused bounds beside it
    bandwidth_tbs: float | None = None
    roofline_flash_s: float | None = None
    roofline_fused_s: float | None = None
    roofline_unfused_s: float | None = None
    of_roofline: float | None = None
    mfu_bound: float | None = None
    roofline_error: str | None = None  # why recording the step failed, where it did


PROFILE_STEPS = 3  # steps of the step alone under the profiler (--profile)

# The FLOP count runs on slices of this many clips and twice as many (step_flops)
FLOP_COUNT_SLICE = 16


def step_flops(count: Callable[[int], float], batch: int) -> float:
    """FLOPs of one step at `batch`, from `count(n)`: the FLOPs of an eager step on the
    batch's first n clips. Every FLOP is linear in the batch but the B x B logits', so
    f(B) = a B + b B^2 is solved from slices of FLOP_COUNT_SLICE and twice that. An
    eager step on the whole batch keeps every activation (no grad_checkpointing, eager
    attention) beside the compiled step's CUDA-graph pools: at batch 512 on an H100
    (2026-11-28) it ran out of memory with 48 GB in those pools."""
    s = FLOP_COUNT_SLICE
    if batch <= 2 * s:
        return count(batch)
    one, two = count(s), count(2 * s)
    quadratic = (two - 2 * one) / (2 * s * s)
    return (one / s - quadratic * s) * batch + quadratic * batch * batch


def packed_text_flops(module: ClapTrainModule, batch: dict, autocast) -> float:
    """FLOPs of the text tower's forward and backward on a batch's packed prompts (0 for
    padded ones): the text costs the same in a whole step. Alone, the whole batch's
    text fits in memory where the whole step's activations did not (step_flops)."""
    if not is_packed(batch):
        return 0.0
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, gradient_checkpointing_off(module):
        with autocast:
            text = packed_text_features(module.clap, *(batch[k] for k in PACKED_KEYS))
        text.float().sum().backward()
    module.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def _shard_codec(data: str) -> str | None:
    plan = Path(data) / "plan.json"  # training.prepare.run.PLAN
    if not plan.is_file():
        return None
    return json.loads(plan.read_text(encoding="utf-8")).get("codec", "flac")


def _peak(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    return by_name(PEAK_BF16_TFLOPS, torch.cuda.get_device_name(device))


def sustained_rate(loop: float, loader_alone: float, workers: int) -> float:
    """Samples/s a long run keeps up: the timed loop's, capped at what the loader alone
    delivers. Timed steps can outrun the loader only by drawing on its prefetch queue,
    which the loader refills during the warm-up as fast as the warm-up consumes it: on
    an H100 on 2026-11-27 the loop timed 2,471 samples/s beside a loader of 1,945
    clips/s. Without workers loading runs in the loop, and its rate is already in it."""
    return min(loop, loader_alone) if workers else loop


def steady_loader_rate(it, steps: int, workers: int, batch_size: int) -> float:
    """Clips/s of a fresh loader in steady state: worker start-up excluded.

    Workers deliver their batches in rounds of `workers`; timing from the first batch
    to the first batch of a later round counts whole rounds (>= `steps` batches).
    """
    try:
        next(it)
        rounds = max(1, -(-steps // max(workers, 1)))
        n = rounds * max(workers, 1)
        t0 = time.perf_counter()
        for _ in range(n):
            next(it)
        return n * batch_size / (time.perf_counter() - t0)
    finally:
        shut_down(it)


def bench(
    cfg: PretrainConfig,
    steps: int = 20,
    warmup: int = 3,
    peak_tflops: float | None = None,
    progress: bool = False,
    profile_dir: str | Path | None = None,
    bandwidth_tbs: float | None = None,
) -> BenchResult:
    """Time the loop's step, the loader alone and the step alone (module docstring);
    with `progress`, a bar on stderr names the phase (a compiled warm-up takes minutes);
    with `profile_dir`, profile the step alone into it (step_profile.py); `bandwidth_tbs`:
    the device's memory bandwidth for the roofline, where its name does not give it."""
    if steps < 1 or warmup < 0:  # before minutes of loading
        raise ValueError(
            f"--steps {steps} --warmup {warmup}: give at least 1 timed step and 0 or more "
            "warm-up steps"
        )
    for flag, value in (("--peak-tflops", peak_tflops), ("--bandwidth-tbs", bandwidth_tbs)):
        if value is not None and not value > 0:  # a bound of negative time otherwise
            raise ValueError(f"{flag} {value}: give the device's figure, a number above 0")
    with contextlib.ExitStack() as cleanup:  # the ring's lock, however the bench ends
        return _timed(
            cfg, steps, warmup, peak_tflops, bandwidth_tbs, progress, cleanup, profile_dir
        )


def _timed(
    cfg: PretrainConfig,
    steps: int,
    warmup: int,
    peak_tflops: float | None,
    bandwidth_tbs: float | None,
    progress: bool,
    cleanup: contextlib.ExitStack,
    profile_dir: str | Path | None,
) -> BenchResult:
    from tqdm.auto import tqdm

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    one = Dist(rank=0, world=1, local_rank=0, device=device)
    td = training_data(cfg.data, cfg.split, cfg.seed, cfg.val_fraction, cfg.replay, cfg.init)
    loaded = build_model(cfg, td.data, td.seen_species)
    configure_towers(cfg, loaded.model)
    module = ClapTrainModule(loaded).to(device)
    opt = make_optimizer(cfg, module, device)
    dataset = make_dataset(cfg, td, loaded)
    per_epoch = len(dataset) // cfg.batch_size
    if per_epoch < 1:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds one epoch ({len(dataset)} clips)")

    collate = make_collate(cfg, loaded, td.data.catalogue, cfg.batch_size)
    ring = make_ring(cfg, dataset, cfg.batch_size, device)
    if ring is not None:
        cleanup.callback(ring.close)

    def batches(to: torch.device = device, ring=ring):  # one loader across epochs, as the loop's
        sampler = RankBatches(per_epoch, cfg.batch_size, 0, 1, 0, 1_000 * per_epoch)
        # pinned for a GPU, or through the ring's locked slots
        return iter(make_loader(cfg, dataset, collate, sampler, to, ring))

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    # FLOPs are counted on the eager module (FlopCounterMode does not see into
    # compiled graphs); the timed steps run what the loop would run.
    compiled = (
        compile_module(module, cfg.compile_mode, fixed_prompts(collate)) if cfg.compile else module
    )

    def step(batch, forward=compiled) -> None:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        module.train()
        loss = forward_loss(forward, module, batch, autocast, one)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_step(opt, cfg, module.clap)

    from torch.utils.flop_counter import FlopCounterMode

    it = loop_batches = batches()
    cleanup.callback(shut_down, loop_batches)  # after the ring's close: runs before it
    if cfg.device_prefetch and ring is None:  # the ring copies on a side stream itself
        it = iter(DevicePrefetch(it, device))
    if device.type == "cuda" and cfg.workers:
        # Batches the workers prefetched during the warm-up (a compile takes minutes)
        # would be handed over with no wait in the timed steps: measured on an H100,
        # 1,939 samples/s and no data wait, against 1,839 once the queue had drained.
        # The loader refills the queue while the warm-up drains it, so a loader nearly
        # as fast as the step still hides behind it: sustained_rate caps the result.
        warmup = max(warmup, LOADER_PREFETCH * cfg.workers + 1)
    # steps of the loop's warm-up, the FLOP count, the timed steps, and the step alone
    bar = tqdm(total=warmup + 1 + 3 * steps, desc="bench: warm-up", disable=not progress)
    for _ in range(warmup):
        step(next(it))
        bar.update()
    sync()
    bar.set_description("bench: counting FLOPs")
    full = next(it)
    # the roofline is recorded after the timed steps, on its own copy: with pinned_ring,
    # `full` is a view of a slot the loader refills meanwhile
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = _peak(device, peak_tflops)
    bandwidth = bandwidth_tbs or (by_name(MEMORY_TBPS, name) if device.type == "cuda" else None)
    kept = {k: v.to("cpu", copy=True) for k, v in full.items()} if peak and bandwidth else None

    def count(part: int) -> float:
        # model FLOPs: with grad_checkpointing the recomputed forwards would count too
        # (+27% on the tiny test model), and MFU would read as hardware utilisation
        counter = FlopCounterMode(display=False)
        sliced = take(full, part, collate.pack, loaded.tokenizer.pad_token_id)
        with counter, gradient_checkpointing_off(module):
            step(sliced, module)
        # packed prompts: a slice's rows are rounded up, so its text is not in
        # proportion to its clips; counted on the whole batch instead (below)
        return counter.get_total_flops() - (packed_text_flops(module, sliced, autocast))

    flops = step_flops(count, cfg.batch_size) + packed_text_flops(module, full, autocast)
    bar.update()
    bar.set_description("bench: timed steps")
    if device.type == "cuda":
        # The reset sets each peak to what is held now, and the allocator still holds
        # the eager FLOP-counting steps' blocks and the compile's autotuning buffers:
        # released first, or peak_reserved_gb would report them. Blocks in use, CUDA
        # graphs' pools included, stay.
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    pace = RunAhead(device, cfg.run_ahead)  # as the loop paces itself
    wait = 0.0
    t_start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - t0
        step(batch)
        pace.step_queued()
        bar.update()
    pace.drain()
    total = time.perf_counter() - t_start
    bar.set_description("bench: the loader alone")
    compute = total - wait  # host time outside the loader: queueing, and waiting for the GPU
    # The loop's loader shut down before the loader is timed alone: left running, its
    # workers (and pinning thread) refill its queue of 4 batches per worker on the same
    # cores, which on a loader-bound GPU host is seconds of work, during the pinned
    # figure and not the unpinned one timed after it. `batch` is kept for the step alone.
    shut_down(loop_batches)
    del it

    loader_rate = steady_loader_rate(batches(), steps, cfg.workers, cfg.batch_size)
    # Pinning copies every batch once more, in one thread of the main process: if the
    # loader is much faster without it, that thread is its limit, not the workers.
    unpinned = (
        steady_loader_rate(batches(torch.device("cpu"), None), steps, cfg.workers, cfg.batch_size)
        if device.type == "cuda"
        else None
    )
    # with the ring, its peer: the pinned loader it replaces, timed in the same run
    pinned = (
        steady_loader_rate(batches(device, None), steps, cfg.workers, cfg.batch_size)
        if device.type == "cuda" and ring is not None
        else None
    )

    # The same step with no loader running and the batch already on the device: what
    # the loop's step costs beyond it (host-to-device copies, workers competing with
    # the launching thread for the cores) does not show as data wait.
    bar.set_description("bench: the step alone")
    # a copy: with pinned_ring on a CPU, `batch` is a view of a slot the loader refills
    on_device = {k: v.to(device, copy=True) for k, v in batch.items()}
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(on_device)
        bar.update()  # a host-side count: the GPU may run behind it until the sync
    sync()
    alone = (time.perf_counter() - t0) / steps
    # A sync after every step: the host waits for the GPU before it launches the next,
    # so its launch time shows (the `synced` A/B of the loop, without a second compile).
    bar.set_description("bench: the step alone, synced")
    t0 = time.perf_counter()
    for _ in range(steps):
        step(on_device)
        sync()
        bar.update()
    synced = (time.perf_counter() - t0) / steps
    profiled = None
    if profile_dir is not None:
        bar.set_description("bench: profiling the step alone")
        try:
            profile_step(lambda: step(on_device), PROFILE_STEPS, device, profile_dir)
            profiled = str(profile_dir)
        except Exception as e:  # the timed figures above took minutes: keep them
            profiled = f"failed ({type(e).__name__}: {e}); the figures above stand"
    roof, roof_error = None, None
    # the FLOP count's slices, eager, recorded operator by operator (kept: with a peak
    # and a bandwidth)
    if kept is not None and peak is not None and bandwidth is not None:
        bar.set_description("bench: the roofline")
        try:
            ops = record_step(
                module,
                kept,
                collate.pack,
                loaded.tokenizer.pad_token_id,
                autocast,
                device,
                batch=cfg.batch_size,
                small=FLOP_COUNT_SLICE,
                large=2 * FLOP_COUNT_SLICE,
            )
            roof = bound(ops, Device(name, peak * 1e12, bandwidth * 1e12), trainable(module))
        except Exception as e:  # the timed figures above took minutes: keep them
            roof_error = f"failed ({type(e).__name__}: {e}); the figures above stand"
    bar.close()

    rate = steps * cfg.batch_size / total
    sustained = sustained_rate(rate, loader_rate, cfg.workers)
    achieved = flops * sustained / cfg.batch_size / 1e12
    return BenchResult(
        device=f"{name} ({torch.get_num_threads()} threads)" if device.type == "cpu" else name,
        model=loaded.source,
        params_m=round(sum(p.numel() for p in module.parameters()) / 1e6, 1),
        batch_size=cfg.batch_size,
        precision=cfg.precision,
        compiled=cfg.compile_mode if cfg.compile else "no",
        prompt_length=collate.pad_to,
        attention=cfg.attention,
        device_prefetch=cfg.device_prefetch,
        pinned_ring=cfg.pinned_ring,
        run_ahead=cfg.run_ahead,
        workers=cfg.workers,
        shards=_shard_codec(cfg.data),
        steps=steps,
        warmup_steps=warmup,
        samples_per_s=round(rate, 2),
        step_s=round(total / steps, 4),
        data_wait_s=round(wait / steps, 4),
        compute_s=round(compute / steps, 4),
        loader_only_samples_per_s=round(loader_rate, 2),
        loader_unpinned_samples_per_s=round(unpinned, 2) if unpinned else None,
        loader_pinned_samples_per_s=round(pinned, 2) if pinned else None,
        sustained_samples_per_s=round(sustained, 2),
        compute_alone_s=round(alone, 4),
        host_overhead=round(total / steps / alone - 1, 3),
        tflop_per_step=round(flops / 1e12, 4),
        achieved_tflops=round(achieved, 3),
        peak_tflops=peak,
        mfu=round(achieved / peak, 4) if peak else None,
        peak_memory_gb=round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda"
        else None,
        peak_reserved_gb=round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
        if device.type == "cuda"
        else None,
        paper_run_minutes=round(PAPER_SAMPLES / sustained / 60, 1),
        compute_alone_synced_s=round(synced, 4),
        profile=profiled,
        prompt_packing=cfg.prompt_packing,
        text_tokens_per_step=int(full["input_ids"].numel()),
        packed_text_tokens=None if collate.pack else _packed_tokens(cfg, loaded, td),
        bandwidth_tbs=bandwidth,
        roofline_flash_s=round(roof.flash_s, 5) if roof else None,
        roofline_fused_s=round(roof.fused_s, 5) if roof else None,
        roofline_unfused_s=round(roof.unfused_s, 5) if roof else None,
        of_roofline=round(roof.flash_s / alone, 3) if roof else None,
        mfu_bound=round(roof.mfu_flash, 4) if roof else None,
        roofline_error=roof_error,
    )


def _packed_tokens(cfg: PretrainConfig, loaded, td) -> int:
    """Text tokens a step would take with prompt_packing=auto."""
    lengths = catalogue_prompt_lengths(cfg, loaded.tokenizer, td.data.catalogue)
    auto = dataclasses.replace(cfg, prompt_length=0, prompt_packing="auto")
    plan = cast(PackPlan, resolve_packing(auto, lengths, cfg.batch_size))  # packing is on
    return plan.tokens


def write(result: BenchResult, out: str | Path | None) -> str:
    r = asdict(result)
    lines = [f"{k:>29}: {v}" for k, v in r.items()]
    if result.mfu is None:  # say why, where a person reads it
        i = list(r).index("mfu")
        lines[i] += " (no peak TFLOP/s known for this device: give --peak-tflops)"
    if result.of_roofline is None and not result.roofline_error:
        i = list(r).index("of_roofline")
        lines[i] += " (needs the device's peak and memory bandwidth: --bandwidth-tbs)"
    verdict = (
        "data pipeline keeps up"
        if result.loader_only_samples_per_s > 1.2 * result.samples_per_s
        else "data pipeline is (close to) the bottleneck: add --set workers=N"
    )
    if result.sustained_samples_per_s < 0.99 * result.samples_per_s:
        verdict += (
            f"; the timed steps ({result.samples_per_s:.0f} samples/s) outran the loader "
            f"alone ({result.loader_only_samples_per_s:.0f} clips/s) on batches queued "
            "during the warm-up: mfu and paper_run_minutes use the loader's rate"
        )
    unpinned = result.loader_unpinned_samples_per_s
    ring = result.pinned_ring
    pinned = result.loader_pinned_samples_per_s
    if pinned:
        verdict += (
            f"; the ring's loader delivers {result.loader_only_samples_per_s:.0f} clips/s "
            f"to the GPU, the pinning thread's {pinned:.0f} "
            f"({result.loader_only_samples_per_s / pinned:.2f}x)"
        )
    if unpinned and ring and result.loader_only_samples_per_s < 0.8 * unpinned:
        verdict += (
            f"; the ring's loader ({result.loader_only_samples_per_s:.0f} clips/s, copied "
            f"to the GPU) trails the workers unpinned ({unpinned:.0f}): the copies or "
            "their waits limit it"
        )
    elif unpinned and result.loader_only_samples_per_s < 0.8 * unpinned:
        verdict += (
            f"; pinning limits the loader ({result.loader_only_samples_per_s:.0f} clips/s "
            f"pinned, {unpinned:.0f} unpinned): the main process's pinning thread copies "
            "every batch once more"
        )
    if result.host_overhead < -0.05:  # the step alone ran slower than inside the loop
        verdict += (
            f"; the step alone took {1 / (1 + result.host_overhead) - 1:.0%} longer than "
            "the loop's step, which only other work on the machine explains: rerun before "
            "reading the timings"
        )
    if result.host_overhead > 0.05:
        gpu = not result.device.startswith("cpu")  # both remedies act on the GPU side
        tries = ["run_ahead=1"] if gpu and not result.run_ahead else []
        tries += [] if result.device_prefetch or not gpu else ["device_prefetch=true"]
        if gpu and result.compiled not in ("no", "reduce-overhead"):
            tries.append("compile_mode=reduce-overhead prompt_length=auto")
        if result.shards == "flac":  # decoding FLAC is host work WAV shards avoid
            tries.append("WAV shards (prepare --codec wav)")
        if result.workers > 1:
            tries.append("fewer workers")
        elif not result.workers:
            tries.append("workers=N (loading runs in the loop)")
        cause = (
            "host-to-device copies, workers sharing the cores"
            if gpu
            else "loading and the model sharing the cores"
        )
        verdict += (
            f"; the loop's step is {result.host_overhead:.0%} slower than the step alone "
            f"({cause})" + (f": try {', '.join(tries)}" if tries else "")
        )
    padded, packed = result.text_tokens_per_step, result.packed_text_tokens
    if padded and packed and packed < 0.8 * padded:
        verdict += (
            f"; prompt_packing=auto would give the text tower {packed} tokens a step "
            f"instead of {padded} (prompts packed end to end, not padded)"
        )
    synced = result.compute_alone_synced_s
    if synced and not result.device.startswith("cpu") and synced > 1.05 * result.compute_alone_s:
        verdict += (
            f"; a sync after every step costs {synced / result.compute_alone_s - 1:.0%} "
            "(the GPU waits while the host launches the next step): keep run_ahead >= 1"
        )
    if result.of_roofline is not None:
        flash_s = cast(float, result.roofline_flash_s)  # set with of_roofline
        verdict += (
            f"; the step alone runs at {result.of_roofline:.0%} of its roofline's speed "
            f"({flash_s * 1e3:.1f} ms with attention fused and every "
            f"operator without FLOPs free: MFU at most {result.mfu_bound:.0%})"
        )
    lines.append(f"{'verdict':>29}: {verdict}")
    text = "\n".join(lines)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({**r, "verdict": verdict}, indent=2), encoding="utf-8")
    return text
