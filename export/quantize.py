"""fp16 and INT8 (QDQ) audio encoders, and the figures that show what they kept.

Only the CNN body is reduced. The front-end stays fp32 (|STFT|^2 of a loud window
reaches ~1e7, beyond fp16's 65504), and so do the input normalisation, the final
projection and the L2 normalisation, which set the embedding that text embeddings
are compared with. Nodes are told apart by the module path the ONNX exporter
records in each node's "namespace" metadata.

INT8 is explicit QDQ (QuantizeLinear/DequantizeLinear pairs), which onnxruntime
runs on CPU and TensorRT builds into an INT8 engine: symmetric int8 activations,
per-channel symmetric int8 weights, ranges calibrated on real audio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

QUANTIZED_SCOPE = "/features:"  # the student's CNN body (export.student.StudentEncoder.features)
MIN_CALIBRATION_WINDOWS = 16
SILENT_PEAK = 1e-3  # -60 dBFS: a window below this tells the calibrator nothing
# onnxruntime's quant_pre_process has three steps; what each does on our graph
# (onnxruntime 1.32, measured on a width-0.25 student):
PRE_PROCESS_NOTE = (
    "onnxruntime quantization pre-processing: ONNX shape inference run (the graph and "
    "the int8 result are unchanged by it); symbolic shape inference skipped (it fails on "
    "the front-end's Expand); graph optimization skipped (it renames nodes and drops the "
    "module-path metadata that tells the CNN body from the fp32 rest)"
)


class CalibrationError(ValueError):
    """Calibration audio that cannot calibrate (too little, too short, silent)."""


def _scope(node) -> str:
    return next((p.value for p in node.metadata_props if p.key == "namespace"), "")


def body_nodes(model) -> tuple[list[str], list[str]]:
    """(names of nodes in the CNN body, names of every other node)."""
    inside: list[str] = []
    outside: list[str] = []
    for n in model.graph.node:
        (inside if QUANTIZED_SCOPE in _scope(n) else outside).append(n.name)
    if not inside:
        raise ValueError(
            "no node of the CNN body found (namespace metadata missing?): only a "
            "student exported by export.onnx_export can be quantized"
        )
    return inside, outside


def calibration_windows(windows: np.ndarray) -> np.ndarray:
    """Keep the windows that carry signal; refuse too few of them, with the reason."""
    if windows.ndim != 2 or len(windows) == 0:
        raise CalibrationError("calibration audio gave no windows: give a folder of recordings")
    peak = np.abs(windows).max(axis=1)
    keep = windows[peak > SILENT_PEAK]
    if len(keep) < MIN_CALIBRATION_WINDOWS:
        raise CalibrationError(
            f"calibration needs at least {MIN_CALIBRATION_WINDOWS} non-silent windows, got "
            f"{len(keep)} of {len(windows)} (the rest peak below -60 dBFS); give more or louder recordings"
        )
    return keep.astype(np.float32)


def to_fp16(src: Path, dst: Path) -> Path:
    """The CNN body in fp16, with casts only where it meets the fp32 rest.

    onnxruntime's float16 converter, given a block list, still round-trips the
    blocked nodes' tensors through fp16 casts, which overflows the power spectrum;
    so the boundary is drawn here: body weights and constants become fp16, a Cast
    to fp16 goes on each tensor entering the body and a Cast to fp32 on each leaving.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    inside, _ = body_nodes(model)
    body = set(inside)
    nodes = list(model.graph.node)
    produced_inside = {o for n in nodes if n.name in body for o in n.output}
    consumed_inside = {i for n in nodes if n.name in body for i in n.input if i}
    consumed_outside = {i for n in nodes if n.name not in body for i in n.input if i}
    consumed_outside |= {o.name for o in model.graph.output}
    inits = {i.name: i for i in model.graph.initializer}
    float_inits = {n for n, t in inits.items() if t.data_type == TensorProto.FLOAT}
    outside_inits = {i for n in nodes if n.name not in body for i in n.input} & float_inits
    for name in consumed_inside & float_inits:
        half = numpy_helper.from_array(numpy_helper.to_array(inits[name]).astype(np.float16))
        if name in outside_inits:  # shared with fp32 nodes: keep both
            half.name = name + "_fp16"
            model.graph.initializer.append(half)
            for n in nodes:
                if n.name in body:
                    n.input[:] = [half.name if i == name else i for i in n.input]
        else:
            half.name = name
            inits[name].CopyFrom(half)
    entering = sorted(consumed_inside - produced_inside - set(inits))
    renamed = {t: t + "_fp16" for t in entering}

    def cast_in(t: str):
        return helper.make_node(
            "Cast", [t], [renamed[t]], to=TensorProto.FLOAT16, name=f"{t}_to_fp16"
        )

    graph_inputs = {i.name for i in model.graph.input}
    new_nodes = [cast_in(t) for t in entering if t in graph_inputs]
    leaving = sorted(produced_inside & consumed_outside)
    for n in nodes:
        if n.name in body:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                        a.t.CopyFrom(
                            numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16))
                        )
            n.input[:] = [renamed.get(i, i) for i in n.input]
            n.output[:] = [o + "_fp16" if o in leaving else o for o in n.output]
        new_nodes.append(n)
        new_nodes += [cast_in(o) for o in n.output if o in renamed]
        for o in n.output:
            if o.endswith("_fp16") and o[: -len("_fp16")] in leaving:
                new_nodes.append(
                    helper.make_node(
                        "Cast", [o], [o[: -len("_fp16")]], to=TensorProto.FLOAT, name=f"{o}_to_fp32"
                    )
                )
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    del model.graph.value_info[:]  # stale fp32 shapes inside the body
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def to_int8(src: Path, dst: Path, windows: np.ndarray, batch: int = 8) -> Path:
    import tempfile

    import onnx
    from onnxruntime.quantization import quant_pre_process

    windows = calibration_windows(windows)
    model = onnx.load(str(src))
    inside, outside = body_nodes(model)
    with tempfile.TemporaryDirectory(prefix="animalclap-prequant.") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Only the ONNX shape inference step (see PRE_PROCESS_NOTE); it also tags the
        # graph, which is what keeps quantize_static from warning twice per export.
        quant_pre_process(str(src), str(pre), skip_optimization=True, skip_symbolic_shape=True)
        _quantize_static(pre, dst, windows, inside, outside, batch)
    return dst


def _quantize_static(
    src: Path, dst: Path, windows: np.ndarray, inside: list[str], outside: list[str], batch: int
) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(
                [{"waveform": windows[i : i + batch]} for i in range(0, len(windows), batch)]
            )

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_quantize=inside,
        nodes_to_exclude=outside,
        calibrate_method=CalibrationMethod.MinMax,
        calibration_providers=["CPUExecutionProvider"],
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )


def embed(onnx_path: Path, windows: np.ndarray, batch: int = 16) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    out = [
        sess.run(["embedding"], {"waveform": windows[i : i + batch].astype(np.float32)})[0]
        for i in range(0, len(windows), batch)
    ]
    return np.concatenate(out).astype(np.float32)


def agreement(a: np.ndarray, b: np.ndarray, text: np.ndarray) -> dict:
    """Mean and min embedding cosine, and top-1 species agreement over `text` (S, D),
    with what decides whether agreement is reachable at all: the reference's top-1
    margin (best minus second-best species cosine) against the largest change the
    reduction made to any species' cosine in the same window. A window whose margin is
    below twice that change can flip; when most can, the model has no margin to keep.
    """
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cos = np.sum(a * b, axis=1)
    sa, sb = a @ text.T, b @ text.T  # (N, S) species cosines
    top = np.mean(sa.argmax(1) == sb.argmax(1))
    two = np.sort(sa, axis=1)[:, -2:] if sa.shape[1] > 1 else np.zeros((len(sa), 2))
    margin = two[:, 1] - two[:, 0]
    shift = np.abs(sb - sa).max(axis=1)
    return {
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "top1_agreement": float(top),
        "median_top1_margin": float(np.median(margin)),
        "median_score_change": float(np.median(shift)),
        "windows_that_can_flip": float(np.mean(margin < 2 * shift)),
    }
