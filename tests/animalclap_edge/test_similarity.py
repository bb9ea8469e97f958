"""The hand-serialised one-node ONNX graph behind species scoring."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from animalclap_edge.similarity import SpeciesSimilarity, gemm_model


def _text(d: int, s: int) -> np.ndarray:
    t = np.random.default_rng(0).standard_normal((d, s)).astype(np.float32)
    return t / np.linalg.norm(t, axis=0)


def test_the_bytes_are_a_valid_onnx_model_with_an_external_text_matrix(tmp_path):
    text = _text(16, 300).T.copy()  # (S, D); 300 > 127: multi-byte varints in dims
    (tmp_path / "m.onnx").write_bytes(gemm_model(300, 16))
    (tmp_path / "text.bin").write_bytes(text.astype("<f4").tobytes())  # where onnx looks
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)
    model = onnx.load(str(tmp_path / "m.onnx"))  # reads text.bin in
    assert [n.op_type for n in model.graph.node] == ["Gemm"]
    assert onnx.helper.get_attribute_value(model.graph.node[0].attribute[0]) == 1  # transB
    (init,) = model.graph.initializer
    np.testing.assert_array_equal(numpy_helper.to_array(init), text)
    dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 300]


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_cosines_match_numpy(batch):
    text = _text(512, 1000).T.copy()  # (S, D), as bundles store it
    emb = _text(512, batch).T.copy()
    cos = SpeciesSimilarity(text)(emb)
    assert cos.shape == (batch, 1000) and cos.dtype == np.float32
    np.testing.assert_allclose(cos, emb @ text.T, atol=1e-5)


def test_a_wrong_embedding_size_says_what_differs():
    sim = SpeciesSimilarity(_text(512, 10).T.copy())
    with pytest.raises(ValueError, match=r"do not match the text matrix \(10, 512\)"):
        sim(np.zeros((2, 256), np.float32))
