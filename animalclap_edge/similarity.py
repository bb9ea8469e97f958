"""Cosine of window embeddings against every species: (B, D) x (S, D)^T through onnxruntime.

numpy's BLAS (OpenBLAS) multiplies few rows poorly: with 11,000 species and D = 512 it
took 0.58-0.61 ms per window at B = 4 and 1.0-1.3 ms at B = 2, on one thread of the
2-core dev CPU, against 0.18-0.19 and 0.26-0.42 ms for onnxruntime's MLAS GEMM, which
packs the constant text matrix once when the session is built; at B = 1 neither wins
(scripts/benchmarks/species_gemm.py, 2026-11-26). Only an initializer is pre-packed:
passed as an input, the matrix ran no faster than numpy.

Memory: the bundle's own (S, D) text matrix is handed to onnxruntime as an external
initializer, which reads it in place, and a Gemm with transB takes it as it is; only
MLAS's packed copy is added, as numpy's path added its (D, S) transposed copy
(11,000 species: 21.5 MB). Embedded in the model bytes instead, the session held
about six copies (+137 MB); loaded from a file, about 2.5.

Building a graph needs the `onnx` package, which the runtime does not depend on, so
the one-node graph is serialised here by hand: the protobuf fields are those of
onnx.proto3, and a test parses the bytes with `onnx` and runs its checker.
"""

from __future__ import annotations

import numpy as np

_OPSET = 13
_IR_VERSION = 8
_FLOAT = 1  # TensorProto.FLOAT


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, payload: bytes | str) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode()
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _value_info(name: str, dims: tuple[int | str, ...]) -> bytes:
    # ValueInfoProto{name=1, type=2: TypeProto{tensor_type=1: {elem_type=1, shape=2}}}
    shape = b"".join(
        _bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d)) for d in dims
    )  # TensorShapeProto.dim: Dimension{dim_value=1 | dim_param=2}
    return _bytes(1, name) + _bytes(2, _bytes(1, _int(1, _FLOAT) + _bytes(2, shape)))


def gemm_model(s: int, d: int) -> bytes:
    """ONNX ModelProto bytes: input "emb" (B, d) -> output "cos" (B, s) = emb @ text^T,
    where "text" (s, d) is an external initializer, supplied when the session is made."""
    trans_b = _bytes(1, "transB") + _int(3, 1) + _int(20, 2)  # AttributeProto{name, i, type=INT}
    node = (  # NodeProto{input=1, output=2, op_type=4, attribute=5}
        _bytes(1, "emb")
        + _bytes(1, "text")
        + _bytes(2, "cos")
        + _bytes(4, "Gemm")
        + _bytes(5, trans_b)
    )
    tensor = (  # TensorProto{dims=1, data_type=2, name=8, external_data=13, data_location=14}
        _int(1, s)
        + _int(1, d)
        + _int(2, _FLOAT)
        + _bytes(8, "text")
        + _bytes(13, _bytes(1, "location") + _bytes(2, "text.bin"))  # never read
        + _int(14, 1)  # EXTERNAL
    )
    graph = (  # GraphProto{node=1, name=2, initializer=5, input=11, output=12}
        _bytes(1, node)
        + _bytes(2, "species_similarity")
        + _bytes(5, tensor)
        + _bytes(11, _value_info("emb", ("batch", d)))
        + _bytes(12, _value_info("cos", ("batch", s)))
    )
    opset = _bytes(1, "") + _int(2, _OPSET)  # OperatorSetIdProto{domain=1, version=2}
    return _int(1, _IR_VERSION) + _bytes(7, graph) + _bytes(8, opset)


class SpeciesSimilarity:
    """emb (B, D) float32 -> (B, S) float32 cosines against fixed (S, D) unit text embeddings."""

    def __init__(self, text: np.ndarray, threads: int = 1):
        import onnxruntime as ort

        if text.ndim != 2 or not text.size:
            raise ValueError(f"text matrix must be (S, D) with S >= 1, got shape {text.shape}")
        self.shape = tuple(int(n) for n in text.shape)
        # read in place (no copy when `text` is C-contiguous float32): it must live as
        # long as the session, which the OrtValue's reference to it ensures
        self._text = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(text, np.float32))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = max(1, threads)  # 0 ("library default"): one is plenty
        so.inter_op_num_threads = 1
        so.add_external_initializers(["text"], [self._text])
        self._session = ort.InferenceSession(
            gemm_model(*self.shape), so, providers=["CPUExecutionProvider"]
        )

    def __call__(self, emb: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(emb, np.float32)
        if x.ndim != 2 or x.shape[1] != self.shape[1]:
            raise ValueError(
                f"embeddings of shape {x.shape} do not match the text matrix {self.shape}: "
                "bundle embedding_dim and encoder output differ"
            )
        return self._session.run(None, {"emb": x})[0]
