"""The hand-serialised one-node ONNX graph behind species scoring."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from animalclap_edge.similarity import SpeciesSimilarity, matmul_model


def _text(d: int, s: int) -> np.ndarray:
    t = np.random.default_rng(0).standard_normal((d, s)).astype(np.float32)
    return t / np.linalg.norm(t, axis=0)


def test_the_bytes_are_a_valid_onnx_model_holding_the_text_matrix():
    text = _text(16, 300)  # 300 > 127: multi-byte varints in dims and lengths
    model = onnx.load_from_string(matmul_model(text))
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["MatMul"]
    (init,) = model.graph.initializer
    np.testing.assert_array_equal(numpy_helper.to_array(init), text)
    dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 300]


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_cosines_match_numpy(batch):
    text = _text(512, 1000)
    emb = _text(512, batch).T.copy()
    cos = SpeciesSimilarity(text)(emb)
    assert cos.shape == (batch, 1000) and cos.dtype == np.float32
    np.testing.assert_allclose(cos, emb @ text, atol=1e-5)


def test_a_wrong_embedding_size_says_what_differs():
    sim = SpeciesSimilarity(_text(512, 10))
    with pytest.raises(ValueError, match=r"do not match the text matrix \(512, 10\)"):
        sim(np.zeros((2, 256), np.float32))
