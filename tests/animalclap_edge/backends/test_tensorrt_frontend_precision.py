"""An fp16 or int8 TensorRT engine keeps the log-mel front-end in fp32.

BuilderFlag.FP16 lets TensorRT pick fp16 kernels for any layer; |STFT|^2 of a loud
window reaches ~1e7, past fp16's 65504, so the power spectrum would turn to inf and
the embedding to NaN. No test machine has TensorRT, so the pinning is checked on a
stand-in network with TensorRT's layer interface."""

import types

import pytest

from animalclap_edge.backends.tensorrt_backend import TensorRTUnavailable, pin_frontend_fp32


class _Tensor:
    def __init__(self, name, dtype="float"):
        self.name, self.dtype = name, dtype


class _Layer:
    def __init__(self, name, type_, inputs, outputs, op=None):
        self.name, self.type, self._in, self._out, self.op = name, type_, inputs, outputs, op
        self.precision, self.out_types = None, {}
        self.num_inputs, self.num_outputs = len(inputs), len(outputs)

    def get_input(self, i):
        return self._in[i]

    def get_output(self, i):
        return self._out[i]

    def set_output_type(self, i, t):
        self.out_types[i] = t


class _Network:
    def __init__(self, layers):
        self.layers = layers
        self.num_layers = len(layers)

    def get_layer(self, i):
        return self.layers[i]


def _fake_trt():
    return types.SimpleNamespace(
        float32="float",
        float16="half",
        LayerType=types.SimpleNamespace(UNARY="unary", CONVOLUTION="conv", ELEMENTWISE="ew"),
        UnaryOperation=types.SimpleNamespace(LOG="log", EXP="exp"),
        IUnaryLayer=_Layer,
    )


def _student_like():
    t = {n: _Tensor(n) for n in ["x", "spec", "pow", "mel", "log", "db", "body", "out"]}
    shape = _Tensor("shape", dtype="int64")
    return _Network(
        [
            _Layer("shape", "shape", [t["x"]], [shape]),
            _Layer("dft", "conv", [t["x"]], [t["spec"]]),
            _Layer("pow", "ew", [t["spec"]], [t["pow"]]),
            _Layer("mel", "mm", [t["pow"]], [t["mel"]]),
            _Layer("log", "unary", [t["mel"]], [t["log"]], op="log"),
            _Layer("db", "ew", [t["log"]], [t["db"]]),
            _Layer("body_conv", "conv", [t["db"]], [t["body"]]),
            _Layer("body_exp", "unary", [t["body"]], [t["out"]], op="exp"),
        ]
    )


def test_the_power_spectrum_and_everything_before_the_log_is_pinned_to_fp32():
    trt, net = _fake_trt(), _student_like()
    pinned = pin_frontend_fp32(net, trt)
    by = {layer.name: layer for layer in net.layers}
    assert set(pinned) == {"dft", "pow", "mel", "log"}
    for name in pinned:
        assert by[name].precision == "float" and by[name].out_types == {0: "float"}
    for name in ("body_conv", "body_exp", "db", "shape"):  # left to the builder
        assert by[name].precision is None


def test_a_graph_without_the_front_ends_log_is_refused_not_built_at_fp16():
    trt, net = _fake_trt(), _student_like()
    net.layers = [layer for layer in net.layers if layer.name != "log"]
    net.num_layers = len(net.layers)
    with pytest.raises(TensorRTUnavailable, match="front-end"):
        pin_frontend_fp32(net, trt)


def test_engines_cached_by_an_older_build_recipe_are_not_reused():
    """Engines built before the front-end was pinned ran |STFT|^2 in fp16; the key
    must not find them."""
    import dataclasses

    from animalclap_edge.backends.tensorrt_backend import ENGINE_RECIPE, EngineKey

    key = EngineKey("b1", "10.3.0", "Orin", "8.7", "fp16", 8)
    assert key.recipe == ENGINE_RECIPE
    assert key.filename() != dataclasses.replace(key, recipe="1").filename()
