"""TensorRT: build an engine from the bundle's ONNX on the device, and run it.

The engine is built from the same ONNX graph the onnxruntime path runs and tests:
fp16, or int8 from the graph's explicit QDQ nodes (no TensorRT calibrator). Built
engines are cached under a key of everything that makes an engine invalid
elsewhere: the bundle's content id, the TensorRT version, the GPU and its compute
capability, the precision and the batch range. The timing cache is kept per GPU
and TensorRT version, so rebuilding for a new bundle is quick.

TensorRT's Python bindings come with JetPack on Jetson (not from PyPI), and device
memory is handled with cuda-python; both are imported only here, lazily, with a
message that says how to get them. Nothing in this module can run on a machine
without an NVIDIA GPU, so it stays small and is driven by the ONNX the tests check.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from animalclap_edge.bundle import Bundle

ENGINE_SUFFIX = ".engine"
# How build_engine configures TensorRT; part of the engine key, so an engine cached by
# an older build (one that let TensorRT run the front-end in fp16) is not reused.
ENGINE_RECIPE = "2-frontend-fp32"


class TensorRTUnavailable(RuntimeError):
    """TensorRT or CUDA cannot be used here; the message says why and what to do."""


def _trt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(
            f"TensorRT Python bindings not importable ({e}); on Jetson they come with "
            "JetPack: create the venv with --system-site-packages"
        ) from None
    return trt


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise TensorRTUnavailable(
                "cuda-python not installed (pip install cuda-python): TensorRT needs it for device memory"
            ) from None
    return cudart


def _check(result):
    """cuda-python calls return (error, *values); raise on an error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise TensorRTUnavailable(f"CUDA error {err}")
    return values[0] if len(values) == 1 else values


@dataclass(frozen=True)
class EngineKey:
    bundle_id: str
    tensorrt: str
    gpu: str
    compute_capability: str
    precision: str
    max_batch: int
    recipe: str = ENGINE_RECIPE

    def filename(self) -> str:
        text = "|".join(
            (
                self.bundle_id,
                self.tensorrt,
                self.gpu,
                self.compute_capability,
                self.precision,
                str(self.max_batch),
                self.recipe,
            )
        )
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return f"{self.bundle_id}-{self.precision}-b{self.max_batch}-{digest}{ENGINE_SUFFIX}"

    def timing_cache_name(self) -> str:
        gpu = hashlib.sha256(f"{self.gpu}|{self.compute_capability}".encode()).hexdigest()[:12]
        return f"timing-trt{self.tensorrt}-{gpu}.cache"


def engine_precision(bundle: Bundle, requested: str) -> str:
    """int8 only from a QDQ graph (an int8 bundle); fp16 otherwise unless fp32 asked."""
    shipped = bundle.manifest.audio_encoder.precision
    if requested == "int8" and shipped != "int8":
        raise TensorRTUnavailable(
            f"int8 engines are built from a QDQ graph, and this bundle's encoder is {shipped}; "
            "export it with `animalclap-export bundle --precision int8` or build fp16"
        )
    return "int8" if shipped == "int8" else requested


def device_key(bundle: Bundle, precision: str, max_batch: int) -> EngineKey:
    trt, cudart = _trt(), _cudart()
    dev = _check(cudart.cudaGetDevice())
    props = _check(cudart.cudaGetDeviceProperties(dev))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return EngineKey(
        bundle_id=bundle.manifest.bundle_id,
        tensorrt=trt.__version__,
        gpu=name.strip("\x00 "),
        compute_capability=f"{props.major}.{props.minor}",
        precision=precision,
        max_batch=max_batch,
    )


def cache_dir(configured: str | None) -> Path:
    """backend.engine_cache_dir, else $XDG_CACHE_HOME/animalclap-edge/engines."""
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "animalclap-edge" / "engines"


def pin_frontend_fp32(network, trt) -> list[str]:
    """Pin the log-mel front-end's layers (everything the first Log depends on) to fp32.

    With BuilderFlag.FP16 TensorRT may run any layer in fp16, and |STFT|^2 of a loud
    window (~1e7) is past fp16's 65504: inf before the log, NaN embeddings after it.
    The bundle's graph keeps the front-end in fp32; this keeps the engine doing so
    (with OBEY_PRECISION_CONSTRAINTS set). After the log, dB values fit fp16. Returns
    the names of the pinned layers; refuses a graph whose front-end it cannot find."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    producer = {}
    for layer in layers:
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = layer
    log = None
    for layer in layers:
        if layer.type == trt.LayerType.UNARY:
            layer.__class__ = trt.IUnaryLayer  # TensorRT's Python API: to read .op
            if layer.op == trt.UnaryOperation.LOG:
                log = layer
                break
    if log is None:
        raise TensorRTUnavailable(
            "no Log layer in the graph, so the log-mel front-end cannot be kept in fp32: "
            "build an fp32 engine (--precision fp32)"
        )
    todo, seen = [log], set()
    while todo:
        layer = todo.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        for i in range(layer.num_inputs):
            t = layer.get_input(i)
            if t is not None and t.name in producer:
                todo.append(producer[t.name])
    floats = (trt.float32, trt.float16)
    constant = getattr(trt.LayerType, "CONSTANT", None)  # weights: no kernel to choose
    pinned = []
    for layer in layers:  # in network order
        if id(layer) not in seen or layer.type == constant:
            continue
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outs or any(o.dtype not in floats for o in outs):
            continue  # shape arithmetic and the like: not a precision choice
        layer.precision = trt.float32
        for j in range(len(outs)):
            layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    return pinned


def build_engine(
    bundle: Bundle,
    precision: str = "fp16",
    max_batch: int = 8,
    engine_cache: str | None = None,
    workspace_gb: float = 1.0,
) -> tuple[Path, bool]:
    """(engine path, whether it was built now). Reuses a cached engine with the same key."""
    # the request's own error first: on a machine without TensorRT it was hidden behind
    # "bindings not importable", learnt only on the Jetson
    precision = engine_precision(bundle, precision)
    # and the graph's: an engine of a graph whose window or front-end is not the
    # manifest's embeds wrong, and TensorRT checks none of it; onnxruntime's backend
    # checks it on loading (check_graph)
    from animalclap_edge.backends.onnxruntime_backend import OnnxRuntimeBackend

    OnnxRuntimeBackend(bundle, threads=1).close()
    trt = _trt()
    key = device_key(bundle, precision, max_batch)
    folder = cache_dir(engine_cache)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / key.filename()
    if path.exists():
        return path, False
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(bundle.encoder_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTUnavailable(f"TensorRT cannot parse {bundle.encoder_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 2**30))
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        # the front-end stays fp32 (see pin_frontend_fp32); without the constraint
        # flag TensorRT treats the pinned precisions as hints it may override
        pin_frontend_fp32(network, trt)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # scales come from the graph's QDQ nodes
    window = bundle.manifest.window_samples
    spec = bundle.manifest.audio_encoder
    profile = builder.create_optimization_profile()
    profile.set_shape(spec.input_name, (1, window), (max_batch, window), (max_batch, window))
    config.add_optimization_profile(profile)
    timing_path = folder / key.timing_cache_name()
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTUnavailable("TensorRT failed to build the engine (see its log above)")
    _atomic_write(timing_path, bytes(config.get_timing_cache().serialize()))
    _atomic_write(path, bytes(serialized))
    return path, True


def find_engine(
    bundle: Bundle, precision: str, max_batch: int, engine_cache: str | None
) -> Path | None:
    """The cached engine for this bundle on this GPU, if one was built."""
    key = device_key(bundle, engine_precision(bundle, precision), max_batch)
    path = cache_dir(engine_cache) / key.filename()
    return path if path.exists() else None


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class TensorRTBackend:
    """Runs a built engine: batches of up to max_batch windows, device buffers reused."""

    def __init__(self, bundle: Bundle, engine_path: Path, max_batch: int):
        trt, self._cuda = _trt(), _cudart()
        self.name = "tensorrt"
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self._engine is None:
            raise TensorRTUnavailable(
                f"{engine_path}: TensorRT cannot load this engine; rebuild it"
            )
        self._context = self._engine.create_execution_context()
        spec = bundle.manifest.audio_encoder
        self.input_name, self.output_name = spec.input_name, spec.output_name
        self.window, self.dim = bundle.manifest.window_samples, bundle.manifest.embedding_dim
        self.max_batch = max_batch
        cu = self._cuda
        self._stream = _check(cu.cudaStreamCreate())
        self._d_in = _check(cu.cudaMalloc(max_batch * self.window * 4))
        self._d_out = _check(cu.cudaMalloc(max_batch * self.dim * 4))
        self._context.set_tensor_address(self.input_name, int(self._d_in))
        self._context.set_tensor_address(self.output_name, int(self._d_out))

    def embed(self, windows: np.ndarray) -> np.ndarray:
        out = [
            self._run(windows[i : i + self.max_batch])
            for i in range(0, len(windows), self.max_batch)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        cu = self._cuda
        x = np.ascontiguousarray(x, np.float32)
        y = np.empty((len(x), self.dim), np.float32)
        kind_h2d = cu.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = cu.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._context.set_input_shape(self.input_name, x.shape)
        _check(cu.cudaMemcpyAsync(self._d_in, x.ctypes.data, x.nbytes, kind_h2d, self._stream))
        if not self._context.execute_async_v3(int(self._stream)):
            raise TensorRTUnavailable("TensorRT execution failed")
        _check(cu.cudaMemcpyAsync(y.ctypes.data, self._d_out, y.nbytes, kind_d2h, self._stream))
        _check(cu.cudaStreamSynchronize(self._stream))
        return y

    def close(self) -> None:
        cu = self._cuda
        for ptr in (self._d_in, self._d_out):
            cu.cudaFree(ptr)
        cu.cudaStreamDestroy(self._stream)
        self._context = self._engine = None
