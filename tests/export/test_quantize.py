"""Student, fp16 and INT8 bundles on real audio: gates that pass, gates that refuse,
and nothing half-written when they refuse."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch

from animalclap_edge.audio.decode import read_all
from animalclap_edge.bundle import load_bundle
from animalclap_edge.contracts import bundle as B
from animalclap_edge.contracts.frontend import CLAP_UNFUSED, repeat_pad
from export.pipeline import ExportConfig, ExportGateError, make_bundle
from export.quantize import CalibrationError
from export.student import StudentConfig, StudentEncoder, macs, save_student
from training.model import AudioEncoder, load_clap


def _real_windows(realaudio: Path, n: int) -> torch.Tensor:
    files = sorted(realaudio.glob("*.wav"))[:n]
    return torch.from_numpy(
        np.stack([repeat_pad(read_all(f, 48_000), 144_000)[:144_000] for f in files])
    )


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, tiny_checkpoint, realaudio) -> Path:
    """Random conv weights, BatchNorm statistics from real audio: embeddings that
    differ between windows, which is what the agreement gates need to mean anything."""
    dim = load_clap(str(tiny_checkpoint)).model.config.projection_dim
    torch.manual_seed(0)
    s = StudentEncoder(StudentConfig(width=0.25, embedding_dim=dim), CLAP_UNFUSED)
    for m in s.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    s.train()
    with torch.no_grad():
        s(_real_windows(realaudio, 40))
    return save_student(s.eval(), tmp_path_factory.mktemp("student") / "s")


def _random_student_may_pass(monkeypatch):
    """The fixture student has random weights: it follows no teacher, and the
    "student vs teacher" gate refuses it (tested below); lowered where a test is
    about what a passing bundle holds."""
    import export.pipeline as P

    monkeypatch.setattr(P, "MIN_GAIN_OVER_CONSTANT", -2.0)


def test_a_student_that_never_learned_its_teacher_is_refused(
    student_dir, tiny_checkpoint, tiny_catalogue, realaudio, tmp_path
):
    """Random weights spread windows apart (spread 0.49 passes its gate) but follow no
    teacher: cosine 0.16 against 0.99 for one constant embedding. It shipped at fp32."""
    cfg = _cfg(
        tiny_checkpoint,
        tiny_catalogue,
        tmp_path / "b",
        student=str(student_dir),
        parity_audio=str(realaudio),
    )
    with pytest.raises(ExportGateError, match=r"student vs teacher: 0\.\d+, needs >= 0\.9\d+ \("):
        make_bundle(cfg, progress=False)
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


def _cfg(tiny_checkpoint, tiny_catalogue, out, **kw):
    csv = out.parent / "species.csv"
    tiny_catalogue.to_csv(csv)
    return ExportConfig(
        checkpoint=str(tiny_checkpoint),
        out=str(out),
        catalogue=str(csv),
        parity_windows=8,
        calibration_windows=32,
        gate_windows=48,
        **kw,
    )


def test_fp16_student_bundle_passes_its_gates(
    student_dir, tiny_checkpoint, tiny_catalogue, realaudio, tmp_path, monkeypatch
):
    _random_student_may_pass(monkeypatch)
    precision = "fp16"
    out = make_bundle(
        _cfg(
            tiny_checkpoint,
            tiny_catalogue,
            tmp_path / "b",
            student=str(student_dir),
            precision=precision,
            parity_audio=str(realaudio),
        ),
        progress=False,
    )
    m = json.loads((out / "manifest.json").read_text())
    assert m["audio_encoder"]["precision"] == precision
    assert "front-end" in m["audio_encoder"]["quantization"]
    assert m["producer"]["student_architecture"].startswith("mobilenetv3-large-w0.25")
    gates = m["gates"]
    for name in (f"{precision} vs fp32 top-1 agreement", f"{precision} vs fp32 mean cosine"):
        assert gates[name]["passed"] and gates[name]["measured"] >= 0.99, gates[name]
    assert gates["fp32 embedding spread"]["measured"] < 0.98  # the agreement is not vacuous
    vs_teacher = gates["student vs teacher"]
    assert -1 <= vs_teacher["measured"] <= 1 and 0 < vs_teacher["constant_embedding_baseline"] <= 1
    assert "student embedding spread" not in gates  # reduced precision gates its own windows
    top1 = gates[f"{precision} vs fp32 top-1 agreement"]
    assert 0 <= top1["windows_that_can_flip"] <= 1 and "diagnosis" not in top1  # it passed
    on = gates[f"{precision} vs fp32 mean cosine"]["on"]
    assert "48 real windows" in on and "calibrated" not in on  # fp16 is a cast: no calibration
    model = onnx.load(str(out / "audio_encoder.onnx"))
    assert sum(n.op_type == "Cast" for n in model.graph.node) == 2  # into the body and out of it
    # the graph's metadata names what it holds: this student, at fp16 (it named the teacher)
    made = json.loads({p.key: p.value for p in model.metadata_props}[B.ONNX_META_PROVENANCE])
    assert (made["encoder"], made["precision"]) == ("student", "fp16")
    assert (
        made["student"] == str(student_dir.resolve()) and len(made["student_weights_sha256"]) == 64
    )
    assert m["parity"]["measured_on"].startswith("the fp32 graph before conversion to fp16")
    assert load_bundle(out).manifest.audio_encoder.macs_per_window > 0
    assert not list(tmp_path.glob(".b.*"))  # no working folders left behind
    from export.pipeline import dump_summary

    assert json.loads(dump_summary(out))["traits"].startswith(
        "none: the --data given (if any) has no"
    )


def test_an_fp32_student_bundle_records_how_it_follows_its_teacher(
    student_dir, tiny_checkpoint, tiny_catalogue, realaudio, tmp_path, monkeypatch
):
    _random_student_may_pass(monkeypatch)
    out = make_bundle(
        _cfg(
            tiny_checkpoint,
            tiny_catalogue,
            tmp_path / "b",
            student=str(student_dir),
            parity_audio=str(realaudio),
        ),
        progress=False,
    )
    gates = load_bundle(out).manifest.gates
    spread = gates["student embedding spread"]
    assert spread["passed"] and spread["measured"] < 0.98 and "8 real recordings" in spread["on"]
    assert "constant_embedding_baseline" in gates["student vs teacher"]


def test_int8_of_a_random_weight_student_misses_its_gates_and_says_so(
    student_dir, tiny_checkpoint, tiny_catalogue, realaudio, tmp_path
):
    """Random weights are chaotic under int8 noise (measured: cosine ~0.83, top-1
    ~0.6 against fp32); the gates must catch that rather than ship it. A trained
    student is the case they are for: see docs/export.md for its figures."""
    cfg = _cfg(
        tiny_checkpoint,
        tiny_catalogue,
        tmp_path / "b",
        student=str(student_dir),
        precision="int8",
        parity_audio=str(realaudio),
    )
    with pytest.raises(
        ExportGateError, match=r"int8 vs fp32 top-1 agreement: 0\.\d+, needs >= 0\.99"
    ):
        make_bundle(cfg, progress=False)
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


def test_an_int8_bundle_that_passes_its_gates_is_written_and_runs(
    student_dir, tiny_checkpoint, tiny_catalogue, realaudio, tmp_path, monkeypatch
):
    """The path a trained student takes (gates lowered here: random weights cannot pass
    them): a QDQ encoder in the bundle, its gates in the manifest, and the runtime's
    backend loading and running it."""
    import export.pipeline as P
    from animalclap_edge.backends.onnxruntime_backend import OnnxRuntimeBackend

    monkeypatch.setattr(P, "MIN_TOP1_AGREEMENT", 0.0)
    monkeypatch.setattr(P, "MIN_MEAN_COSINE", 0.0)
    _random_student_may_pass(monkeypatch)
    out = tmp_path / "b"
    cfg = _cfg(
        tiny_checkpoint,
        tiny_catalogue,
        out,
        student=str(student_dir),
        precision="int8",
        parity_audio=str(realaudio),
    )
    make_bundle(cfg, progress=False)
    bundle = load_bundle(out)
    assert bundle.manifest.audio_encoder.precision == "int8"
    note = bundle.manifest.audio_encoder.quantization  # what pre-processing skipped, and why
    assert "ONNX shape inference run" in note and "symbolic shape inference skipped" in note
    gates = bundle.manifest.gates
    assert 0 < gates["int8 vs fp32 mean cosine"]["measured"] <= 1
    graph = onnx.load(str(out / "audio_encoder.onnx")).graph
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)
    assert not list(tmp_path.glob(".b.*"))
    emb = OnnxRuntimeBackend(bundle).embed(_real_windows(realaudio, 4).numpy())
    assert emb.shape == (4, bundle.manifest.embedding_dim) and np.isfinite(emb).all()


def test_int8_graph_is_explicit_qdq_on_the_body_only(student_dir, realaudio, tmp_path, caplog):
    from export.onnx_export import export_audio_encoder
    from export.quantize import _quantize_static, body_nodes, embed, to_int8
    from export.student import load_student

    s, _ = load_student(student_dir)
    export_audio_encoder(s, 144_000, tmp_path / "f.onnx", {})
    windows = _real_windows(realaudio, 24).numpy()
    with caplog.at_level("WARNING"):
        to_int8(tmp_path / "f.onnx", tmp_path / "q.onnx", windows)
    # pre-processing ran (onnxruntime warned twice per export without it) ...
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
    # ... and changed nothing: the same int8 graph as quantizing the export directly
    inside, outside = body_nodes(onnx.load(str(tmp_path / "f.onnx")))
    _quantize_static(tmp_path / "f.onnx", tmp_path / "raw.onnx", windows, inside, outside, 8)
    held = _real_windows(realaudio, 32).numpy()[24:]
    np.testing.assert_array_equal(
        embed(tmp_path / "q.onnx", held), embed(tmp_path / "raw.onnx", held)
    )
    q = onnx.load(str(tmp_path / "q.onnx"))
    fp32_part = set(body_nodes(onnx.load(str(tmp_path / "f.onnx")))[1])
    dq_inputs = {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}
    for n in q.graph.node:
        if n.name in fp32_part and n.op_type in ("Conv", "MatMul", "Gemm"):
            assert not set(n.input) & dq_inputs, f"{n.name} ({n.op_type}) was quantized"
    body_convs = [n for n in q.graph.node if n.op_type == "Conv" and n.name not in fp32_part]
    assert body_convs and all(set(n.input) & dq_inputs for n in body_convs)
    zero_points = [i for i in q.graph.initializer if i.name.endswith("zero_point")]
    assert zero_points and all(
        not onnx.numpy_helper.to_array(z).any() for z in zero_points
    )  # symmetric


def test_student_is_25x_cheaper_than_the_full_htsat_teacher():
    from transformers import ClapConfig, ClapModel

    teacher = ClapModel(
        ClapConfig(text_config={"vocab_size": 100}, audio_config={"enable_fusion": False})
    )
    t = macs(AudioEncoder(teacher, CLAP_UNFUSED), 144_000)
    s = macs(StudentEncoder(StudentConfig(width=0.4), CLAP_UNFUSED), 144_000)
    assert t / s >= 25, (t, s)


@pytest.mark.parametrize(
    ("precision", "gate"),
    [("int8", "fp32 embedding spread"), ("fp32", "student embedding spread")],
)
def test_a_collapsed_student_is_refused_and_nothing_is_written(
    precision, gate, tiny_checkpoint, tiny_catalogue, realaudio, tmp_path
):
    """fp32 students had no gate: a collapsed one shipped (every window one embedding)."""
    dim = load_clap(str(tiny_checkpoint)).model.config.projection_dim
    torch.manual_seed(0)  # default BatchNorm statistics on dB input: one embedding for all
    flat = save_student(
        StudentEncoder(StudentConfig(width=0.25, embedding_dim=dim), CLAP_UNFUSED).eval(),
        tmp_path / "flat",
    )
    cfg = _cfg(
        tiny_checkpoint,
        tiny_catalogue,
        tmp_path / "b",
        student=str(flat),
        precision=precision,
        parity_audio=str(realaudio),
    )
    with pytest.raises(ExportGateError, match=rf"{gate}: 1\.0000, needs <= 0\.98"):
        make_bundle(cfg, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat", "species.csv"]


def test_silent_calibration_audio_is_refused(
    student_dir, tiny_checkpoint, tiny_catalogue, realaudio, tmp_path
):
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    for i in range(100):
        sf.write(quiet / f"q{i:03d}.wav", np.zeros(48_000, np.float32), 48_000)
    cfg = _cfg(
        tiny_checkpoint,
        tiny_catalogue,
        tmp_path / "b",
        student=str(student_dir),
        precision="int8",
        parity_audio=str(realaudio),
        calibration_audio=str(quiet),
    )
    with pytest.raises(CalibrationError, match="non-silent windows"):
        make_bundle(cfg, progress=False)
    assert not (tmp_path / "b").exists()


def test_recordings_that_do_not_decode_leave_too_few_windows_and_say_how_many(
    student_dir, tiny_checkpoint, tiny_catalogue, realaudio, tmp_path
):
    """50 files pass the count before the model loads (32 + 16 needed here); 10 do not
    decode, and the refusal after decoding gives the windows found and needed."""
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        sf.write(calib / f"n{i:03d}.wav", 0.1 * rng.standard_normal(48_000), 48_000)
    for i in range(10):
        (calib / f"x{i:03d}.wav").write_bytes(b"not a wav file")
    cfg = _cfg(
        tiny_checkpoint,
        tiny_catalogue,
        tmp_path / "b",
        student=str(student_dir),
        precision="int8",
        parity_audio=str(realaudio),
        calibration_audio=str(calib),
    )
    with pytest.raises(CalibrationError) as e:
        make_bundle(cfg, progress=False)
    assert str(e.value).startswith(
        f"--calibration-audio {calib}: found 40 usable windows, int8 needs 48 windows "
        "(32 to calibrate + 16 to check)"
    )
    assert "(144 s of audio in 48 windows)" in str(e.value)
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


def test_precision_needs_a_student(tiny_checkpoint, tiny_catalogue, tmp_path):
    with pytest.raises(ValueError, match="give --student"):
        make_bundle(
            _cfg(tiny_checkpoint, tiny_catalogue, tmp_path / "b", precision="int8"), progress=False
        )


def test_agreement_says_when_the_margins_are_too_small_to_keep():
    from export.quantize import agreement

    text = np.eye(4, 8, dtype=np.float32)  # 4 species on the first axes
    rng = np.random.default_rng(0)
    noise = 0.01 * rng.standard_normal((50, 8)).astype(np.float32)
    clear = np.tile(np.array([1.0, 0.2, 0, 0, 0.3, 0, 0, 0], np.float32), (50, 1))
    tied = np.tile(np.array([1.0, 0.9999, 0, 0, 0.3, 0, 0, 0], np.float32), (50, 1))
    c = agreement(clear, clear + noise, text)
    assert c["top1_agreement"] == 1.0 and c["windows_that_can_flip"] == 0.0
    assert c["median_top1_margin"] > 10 * c["median_score_change"]
    t = agreement(tied, tied + noise, text)
    assert t["windows_that_can_flip"] == 1.0 and t["median_top1_margin"] < 1e-3
    assert t["top1_agreement"] < 0.9  # the ties do flip


def test_reduced_precision_is_judged_on_the_species_rows_the_bundle_ships(
    student_dir, tiny_checkpoint, tiny_catalogue, realaudio, tmp_path, monkeypatch
):
    """The top-1 gate ranked species against fp32 text embeddings recomputed for it;
    the bundle (and the recorder) score against the fp16 rows it stores."""
    import export.quantize as Q

    _random_student_may_pass(monkeypatch)
    seen = []
    real = Q.agreement
    monkeypatch.setattr(Q, "agreement", lambda a, b, text: seen.append(text) or real(a, b, text))
    out = make_bundle(
        _cfg(
            tiny_checkpoint,
            tiny_catalogue,
            tmp_path / "b",
            student=str(student_dir),
            precision="fp16",
            parity_audio=str(realaudio),
        ),
        progress=False,
    )
    shipped = load_bundle(out).text_embeddings
    assert seen and all(np.array_equal(t, shipped) for t in seen)
