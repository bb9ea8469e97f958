"""The roofline bound: operators recorded with their FLOPs and bytes, extrapolated in
the batch, and the step's bounds computed from them."""

import pytest
import torch

from training.pretrain.roofline import (
    ADAMW_BYTES_PER_PARAM,
    Device,
    OpCost,
    bound,
    extrapolate,
    fit,
    plot_bound,
    record,
    step_costs,
)

F32 = 4


def test_a_product_is_recorded_with_its_flops_and_bytes_and_views_move_nothing():
    a, w = torch.randn(512, 96), torch.randn(96, 288)

    def f():
        y = (a @ w).t().t().view(-1)  # views of views: nothing moves
        y.add_(1.0)  # in place: it reads and writes y

    mm, add = record(f)
    assert mm.name == "aten.mm" and mm.kind == "matmul"
    assert mm.flops == 2 * 512 * 96 * 288
    assert mm.bytes == (512 * 96 + 96 * 288 + 512 * 288) * F32
    assert mm.largest == 512 * 288 * F32
    # in place: y is read and written
    assert add.name == "aten.add_" and add.flops == 0 and add.bytes == 2 * 512 * 288 * F32


def test_recorded_flops_are_the_flop_counters_and_extrapolate_in_the_batch():
    """The step's FLOPs are the ones MFU is counted with (torch's flop counter, as
    bench's); their line through steps of 2 and 4 clips meets a step of 8."""
    from torch.utils.flop_counter import FlopCounterMode

    from training.pretrain.config import load_config

    sets = ["init=scratch:fast", "data=tiny", "crop_seconds=1", "workers=0", "prompt_length=auto"]
    cfg = load_config(None, sets)
    direct = step_costs(cfg, batch=8, small=4, large=8)
    far = step_costs(cfg, batch=8, small=2, large=4)
    flops = sum(o.flops for o in direct.ops)
    assert flops > 0 and direct.params > 0
    # the B x B logits are quadratic in the batch, and a few KFLOP against GFLOPs
    assert sum(o.flops for o in far.ops) == pytest.approx(flops, rel=1e-4)
    assert sum(o.bytes for o in far.ops) == pytest.approx(
        sum(o.bytes for o in direct.ops), rel=1e-3
    )

    x, w = torch.randn(8, 64, requires_grad=True), torch.randn(64, 32, requires_grad=True)
    counter = FlopCounterMode(display=False)
    with counter:
        ops = record(lambda: (x @ w).relu().sum().backward())
    assert sum(o.flops for o in ops) == counter.get_total_flops() == 3 * 2 * 8 * 64 * 32


def test_extrapolation_refuses_steps_of_other_operators():
    one = [OpCost("aten.mm", 1.0, 1.0)]
    other = [OpCost("aten.bmm", 1.0, 1.0)]
    with pytest.raises(ValueError, match="different operators"):
        extrapolate(one, other, 2, 4, 256)
    (op,) = extrapolate(
        [OpCost("aten.mm", 2.0, 10.0, 4.0)], [OpCost("aten.mm", 4.0, 12.0, 8.0)], 2, 4, 256
    )
    # FLOPs in proportion; a weight's read (the bytes' constant part) stays
    assert (op.flops, op.bytes, op.largest) == (256.0, 264.0, 512.0)


def test_each_bound_counts_what_it_says():
    gpu = Device("test", peak_flops=100.0, bandwidth=10.0)
    ops = [
        OpCost("aten.mm", flops=1000.0, bytes=10.0, largest=5.0),  # compute: 10 s
        OpCost("aten.mm", flops=100.0, bytes=100.0, largest=50.0),  # memory: 10 s (1 s compute)
        OpCost("aten.bmm", flops=100.0, bytes=300.0, largest=200.0),  # scores: 30 s, 10 s flash
        OpCost("aten.add", flops=0.0, bytes=50.0, largest=20.0),  # 5 s, fused away
    ]
    b = bound(ops, gpu, params=10)
    adam = 10 * ADAMW_BYTES_PER_PARAM / 10.0
    assert b.optimizer_s == adam
    assert b.unfused_s == pytest.approx(10 + 10 + 30 + 5 + adam)
    assert b.fused_s == pytest.approx(10 + 10 + 30 + adam)
    assert b.flash_s == pytest.approx(10 + 10 + 10 + adam)
    assert b.model_flops == 1200.0
    assert b.mfu_flash == pytest.approx(1200 / (b.flash_s * 100))
    assert b.mfu_unfused < b.mfu_fused < b.mfu_flash <= 1
    assert b.by_kind["matmul"]["memory_bound_flops"] == 100.0
    assert b.by_kind["attention"]["memory_bound_flops"] == 100.0
    assert b.by_kind["elementwise"]["unfused_s"] == 5.0


def test_packed_costs_are_fitted_in_clips_and_rows_apart():
    """A slice's packed rows are rounded up (5 rows for 16 clips of a 72-row plan for
    256): a line in the clips alone would reach 65 rows at 256, not 72."""
    from training.pretrain.packing import PackPlan

    plan = PackPlan(row_tokens=64, rows=72, prompts=256)
    points = [(16, plan.rows_for(16)), (32, plan.rows_for(32)), (32, plan.rows_for(32) + 1)]
    assert [r for _, r in points] == [5, 9, 10]

    def cost(clips, rows):  # an audio op in the clips, a text op in the rows
        return [OpCost("aten.mm", 2.0 * clips, 1.0 + clips), OpCost("aten.mm", 3.0 * rows, 5.0)]

    got = fit([cost(*p) for p in points], points, (256, 72))
    assert got == cost(256, 72)
    clips_only = extrapolate(cost(16, 5), cost(32, 9), 16, 32, 256)
    assert clips_only[1].flops == 3.0 * 65  # what the line in the clips alone gives


def test_the_bounds_are_drawn_with_a_measured_step_beside_them(tmp_path):
    gpu = Device("test", peak_flops=100.0, bandwidth=10.0)
    ops = [OpCost("aten.mm", 1000.0, 10.0, 5.0), OpCost("aten.add", 0.0, 50.0, 20.0)]
    b = bound(ops, gpu, params=10)
    for measured in (None, 50.0):
        png = plot_bound(b, tmp_path / f"{measured}.png", "a test", measured)
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert b.by_kind["elementwise"]["fused_s"] == 0.0 and b.by_kind["matmul"]["fused_s"] == 10.0
