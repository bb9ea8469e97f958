"""bench --profile: where the step alone spends its time, by kind of kernel."""

import gzip
import json
from types import SimpleNamespace

import pytest
import torch

from training.cli import main
from training.pretrain.step_profile import kind_of, summarise

# kernel names as the profiler reports them on Hopper GPUs (cuBLAS, CUTLASS's
# memory-efficient attention, inductor's Triton kernels, ATen's CUDA kernels)
KERNELS = {
    "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_cublas": "matmul",
    "nvjet_hsh_128x256_64x4_2x1_v_bz_coopB_TNT": "matmul",
    "fmha_cutlassB_bf16_aligned_64x64_k32_sm80": "attention",
    "triton_per_fused_native_layer_norm_0": "normalisation",
    "triton_poi_fused_add_mul_roll_3": "compiled, fused",
    "void at::native::vectorized_elementwise_kernel<4, at::native::AUnaryFunctor>": (
        "elementwise, reductions"
    ),
    "Memcpy HtoD (Pinned -> Device)": "copy",
    "void at::native::cunn_SoftMaxForward<4, float>": "softmax",
    "void regular_fft_factor<128, 8>": "front-end FFT",
    "void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor>": "optimizer",
    "void cudnn::cnn::conv2d_grouped_direct_kernel": "convolution",
    "aten::mm": "matmul",
    "aten::linalg_vector_norm": "elementwise, reductions",  # gradient clipping
    "something_new": "other",
}


@pytest.mark.parametrize("name", KERNELS)
def test_kernels_are_sorted_into_their_kind(name):
    assert kind_of(name) == KERNELS[name]


def _row(key, us, count=1, cuda=True):
    kind = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
    return SimpleNamespace(
        key=key,
        count=count,
        device_type=kind,
        self_device_time_total=us if cuda else 0,
        self_cpu_time_total=0 if cuda else us,
    )


def test_on_a_gpu_only_kernels_count_and_times_are_per_step():
    rows = [
        _row("nvjet_hsh_128x256", 60_000, 30),
        _row("fmha_cutlassF_bf16", 30_000, 24),
        _row("triton_poi_fused_add_0", 9_000, 300),
        _row("aten::mm", 99_999, 30, cuda=False),  # the CPU op that launched the gemm
    ]
    p = summarise(rows, steps=3, wall_s=0.040, cuda=True)
    assert p.kinds == {"matmul": 20.0, "attention": 10.0, "compiled, fused": 3.0}
    assert p.busy_ms == 33.0 and p.wall_ms == 40.0
    assert p.top[0] == ("nvjet_hsh_128x256", 20.0, 10.0)
    assert "33.0 ms busy per step (kernel time) of 40.0 ms wall (82%)" in p.table()


def test_no_kernel_recorded_on_a_gpu_says_why_and_what_to_do():
    p = summarise([_row("aten::mm", 5_000, cuda=False)], steps=1, wall_s=0.1, cuda=True)
    assert p.busy_ms == 0 and "compile_mode=default" in p.note and p.note in p.table()


def test_bench_profile_writes_the_table_json_and_a_trace(tmp_path, capsys):
    sets = ["init=scratch:fast", "data=tiny", "batch_size=4", "crop_seconds=1", "workers=0"]
    args = ["bench", "--set", *sets, "--steps", "2", "--warmup", "1"]
    assert main([*args, "--profile", str(tmp_path / "prof")]) == 0
    out = capsys.readouterr().out
    p = json.loads((tmp_path / "prof" / "profile.json").read_text())
    assert p["device"] == "cpu" and p["steps"] == 3 and p["wall_ms"] > 0
    assert sum(p["kinds"].values()) == pytest.approx(p["busy_ms"], rel=1e-3)
    assert p["kinds"]["matmul"] > 0 and p["kinds"]["front-end FFT"] > 0
    assert all(ms <= p["busy_ms"] for _, ms, _ in p["top"])
    assert (tmp_path / "prof" / "profile.md").read_text() in out
    with gzip.open(tmp_path / "prof" / "trace.json.gz", "rt") as f:
        events = json.load(f)["traceEvents"]
    assert any(e.get("name") == "aten::mm" for e in events)
    assert "profile: " + str(tmp_path / "prof") in out


def test_a_profile_path_that_is_a_file_is_refused_before_the_bench(tmp_path, capsys):
    taken = tmp_path / "prof"
    taken.write_text("notes")
    assert main(["bench", "--set", "data=tiny", "--profile", str(taken)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"animalclap-train: error: --profile {taken} is a file: give a folder (made if missing)"
    ]


def test_a_profile_that_fails_keeps_the_timed_figures_and_says_why(monkeypatch):
    """The timed figures take minutes on a GPU: a profiler error must not lose them."""
    from training.pretrain import bench as bench_module
    from training.pretrain.config import load_config

    def broken(*args, **kwargs):
        raise RuntimeError("CUPTI is busy")

    monkeypatch.setattr(bench_module, "profile_step", broken)
    sets = ["init=scratch:fast", "data=tiny", "batch_size=4", "crop_seconds=1", "workers=0"]
    r = bench_module.bench(load_config(None, sets), 1, 1, profile_dir="unused")
    assert r.samples_per_s > 0 and r.compute_alone_s > 0
    assert r.profile == "failed (RuntimeError: CUPTI is busy); the figures above stand"
