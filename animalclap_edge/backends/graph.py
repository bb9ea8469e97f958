"""What every backend checks of the bundle's encoder graph before it runs it: the
runtime refuses a graph whose input, output or front-end settings differ from the
manifest's, whichever engine reads the graph."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from animalclap_edge.bundle import Bundle, BundleError
from animalclap_edge.contracts import bundle as B
from animalclap_edge.contracts.frontend import FrontendConfig, FrontendMismatch

Shape = Sequence[int | str | None]  # a dimension may be symbolic ("batch") or unknown


def check_graph(
    bundle: Bundle,
    inputs: Mapping[str, Shape],
    outputs: Mapping[str, Shape],
    metadata: Mapping[str, str],
) -> None:
    """BundleError naming the encoder file unless the graph's `inputs` and `outputs`
    ({name: shape}) and its metadata fit the manifest: the input and output names,
    (batch, window_samples) in, (batch, embedding_dim) out, and front-end settings
    equal to the manifest's."""
    m = bundle.manifest
    name, spec = m.audio_encoder.file, m.audio_encoder
    if spec.input_name not in inputs or spec.output_name not in outputs:
        raise BundleError(
            name,
            f"graph has inputs {list(inputs)} / outputs {list(outputs)}, manifest expects {spec.input_name!r} -> {spec.output_name!r}",
        )
    in_shape, out_shape = list(inputs[spec.input_name]), list(outputs[spec.output_name])
    if len(in_shape) != 2 or in_shape[1] != m.window_samples:
        raise BundleError(
            name, f"input shape {in_shape}, manifest window_samples is {m.window_samples}"
        )
    if len(out_shape) != 2 or out_shape[1] != m.embedding_dim:
        raise BundleError(
            name,
            f"embedding size {out_shape[1] if len(out_shape) == 2 else out_shape} does not match manifest embedding_dim {m.embedding_dim}",
        )
    if B.ONNX_META_FRONTEND not in metadata:
        raise BundleError(
            name, "no front-end settings in the graph metadata; re-export with animalclap-export"
        )
    try:
        bundle.frontend.require_equal(
            FrontendConfig.from_dict(json.loads(metadata[B.ONNX_META_FRONTEND])),
            "manifest vs graph",
        )
    except FrontendMismatch as e:
        raise BundleError(name, str(e)) from None
