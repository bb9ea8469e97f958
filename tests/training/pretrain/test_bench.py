"""The training benchmark runs the real step and reports consistent figures."""

import json

from training.cli import main


def test_bench_reports_throughput_flops_and_mfu(tmp_path, capsys):
    out = tmp_path / "bench.json"
    sets = ["init=scratch:fast", "data=tiny", "batch_size=4", "crop_seconds=1", "workers=0"]
    args = ["bench", "--set", *sets, "--steps", "2", "--warmup", "1", "--peak-tflops", "1.0"]
    assert main([*args, "--out", str(out)]) == 0
    assert "samples_per_s" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["samples_per_s"] > 0 and r["tflop_per_step"] > 0
    assert abs(r["step_s"] - (r["data_wait_s"] + r["compute_s"])) < 0.05 * r["step_s"] + 0.01
    assert abs(r["mfu"] - r["achieved_tflops"] / 1.0) < 1e-3
    # the fast HTS-AT at batch 4 is a few GFLOP per sample, not kilo- or tera-
    assert 1e9 < r["tflop_per_step"] * 1e12 / 4 < 1e11
    assert r["peak_memory_gb"] is None  # CPU: no GPU memory to report
    assert r["warmup_steps"] == 1  # as asked: only GPUs stretch it past the prefetch queue
    assert r["compute_alone_s"] > 0 and r["host_overhead"] > -1
    assert abs(r["host_overhead"] - (r["step_s"] / r["compute_alone_s"] - 1)) < 0.01
