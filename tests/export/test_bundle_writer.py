"""The exporter writes a bundle the runtime loads, with figures it measured."""

import json

import numpy as np
import onnx
import pytest

from animalclap_edge.bundle import load_bundle
from animalclap_edge.contracts import bundle as B
from animalclap_edge.contracts.frontend import CLAP_UNFUSED, FrontendConfig


def test_round_trip(tiny_bundle, tiny_checkpoint):
    b = load_bundle(tiny_bundle)
    m = b.manifest
    assert m.schema_version == B.SCHEMA_VERSION
    assert b.frontend == CLAP_UNFUSED and m.window_samples == 144000 and m.embedding_dim == 64
    assert b.text_embeddings.shape == (len(b.catalogue), 64)
    assert {lvl for lvl, _ in b.taxa} == {"class", "order", "family", "genus"}
    assert b.trait_schema is not None and len(b.trait_schema.traits) == 22
    assert b.trait_weight.shape == (64, b.trait_schema.n_outputs)
    assert m.parity["onnx_vs_torch_min_cosine"] > 0.999
    assert "real recordings" in m.parity["parity_audio"]
    assert m.producer.teacher_checkpoint == str(tiny_checkpoint)
    # heads fitted on the procedural benchmark: marked, so `run` shows its notice
    assert m.demo and m.notice == "test bundle: random weights"
    from export.pipeline import dump_summary

    said = json.loads(dump_summary(tiny_bundle))  # what `animalclap-export bundle` prints
    assert said["demo"] and said["traits"].startswith("22 trait heads, fitted on benchmark:tiny")
    assert set(m.files) == {p.name for p in tiny_bundle.iterdir() if p.name != B.MANIFEST}


def test_text_embeddings_are_the_checkpoints_for_each_species_in_catalogue_order(
    tiny_bundle, tiny_checkpoint
):
    """Rows out of order, another template or a stale catalogue would mislabel every
    detection: each row must be the checkpoint's embedding of that species' prompt."""
    from animalclap_edge.contracts.prompts import Template, render, taxon_prompt
    from training.model import load_clap, text_embeddings

    b = load_bundle(tiny_bundle)
    clap = load_clap(str(tiny_checkpoint))
    prompts = [render(sp, Template.parse("tax+com")) for sp in b.catalogue]  # the default
    want = text_embeddings(clap, prompts).numpy()
    np.testing.assert_allclose(b.text_embeddings.astype(np.float32), want, atol=2e-3)  # fp16
    by_level = {}
    for sp in b.catalogue:
        for level, _ in b.taxa:
            by_level.setdefault((level, sp.taxon(level)), taxon_prompt(sp, level))
    taxa = text_embeddings(clap, [by_level[t] for t in b.taxa]).numpy()
    np.testing.assert_allclose(b.taxon_embeddings.astype(np.float32), taxa, atol=2e-3)


def test_onnx_metadata_carries_frontend_and_provenance(tiny_bundle, tiny_checkpoint):
    model = onnx.load(str(tiny_bundle / B.AUDIO_ENCODER))
    meta = {p.key: p.value for p in model.metadata_props}
    assert FrontendConfig.from_dict(json.loads(meta[B.ONNX_META_FRONTEND])) == CLAP_UNFUSED
    assert int(meta[B.ONNX_META_WINDOW]) == 144000 and int(meta[B.ONNX_META_EMBED_DIM]) == 64
    made = json.loads(meta[B.ONNX_META_PROVENANCE])
    # the graph says what it holds (before 2026-11-27 a student's named only the teacher)
    assert made["encoder"] == "teacher" and made["precision"] == "fp32"
    assert made["checkpoint"] == str(tiny_checkpoint) and "student" not in made


def test_onnx_batch_is_dynamic(tiny_bundle):
    from animalclap_edge.backends.onnxruntime_backend import OnnxRuntimeBackend

    be = OnnxRuntimeBackend(load_bundle(tiny_bundle))
    x = np.random.default_rng(0).standard_normal((5, 144000)).astype(np.float32) * 0.1
    e5 = be.embed(x)
    e1 = be.embed(x[2:3])
    assert e5.shape == (5, 64) and np.allclose(e5[2], e1[0], atol=1e-5)
    assert np.allclose(np.linalg.norm(e5, axis=1), 1, atol=1e-4)


def test_existing_output_is_not_clobbered_and_no_half_bundle_is_left(tmp_path, tiny_checkpoint):
    from export.pipeline import ExportConfig, make_bundle

    out = tmp_path / "b"
    out.mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        make_bundle(
            ExportConfig(checkpoint=str(tiny_checkpoint), out=str(out), data="tiny"), progress=False
        )
    with pytest.raises(ValueError, match="catalogue"):
        make_bundle(
            ExportConfig(checkpoint=str(tiny_checkpoint), out=str(tmp_path / "c")), progress=False
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary leftovers


def test_a_request_that_cannot_finish_is_refused_before_the_model_loads(tmp_path):
    """The zero-shot route without parity audio used to fail after the ONNX export;
    now it fails first, and the checkpoint is not even opened (it does not exist)."""
    from export.pipeline import ExportConfig, ExportGateError, make_bundle

    never = str(tmp_path / "no-checkpoint-here")
    cat = str(tmp_path / "regional.csv")
    with pytest.raises(ExportGateError, match="give --parity-audio DIR"):
        make_bundle(ExportConfig(checkpoint=never, out=str(tmp_path / "z"), catalogue=cat))
    with pytest.raises(ValueError, match="fp16/int8 apply to a distilled student"):
        make_bundle(
            ExportConfig(checkpoint=never, out=str(tmp_path / "z"), data="tiny", precision="fp16")
        )
    assert not (tmp_path / "z").exists()


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_overwrite_replaces_a_bundle_whole_or_not_at_all(bundle_copy):
    """A failed export leaves the old bundle as it was; a finished one replaces it,
    with no hidden work folder left beside it either way."""
    import shutil

    from export.writer import BundleWriter

    before = _files(bundle_copy)
    fields = json.loads(before[B.MANIFEST])
    for k in ("schema_version", "bundle_id", "created_utc", "files"):
        fields.pop(k)

    def hidden():
        return [p.name for p in bundle_copy.parent.iterdir() if p.name.startswith(".")]

    w = BundleWriter(bundle_copy, overwrite=True)
    (w.path("species.csv")).write_text("half an export\n")
    w.abort()  # what the pipeline does when a step fails
    assert _files(bundle_copy) == before and hidden() == []

    w = BundleWriter(bundle_copy, overwrite=True)
    for name in before:
        if name != B.MANIFEST:
            shutil.copy(bundle_copy / name, w.path(name))
    w.commit({**fields, "name": "test-tiny-again"})
    b = load_bundle(bundle_copy)
    assert b.manifest.name == "test-tiny-again" and hidden() == []
    assert {k: v for k, v in _files(bundle_copy).items() if k != B.MANIFEST} == {
        k: v for k, v in before.items() if k != B.MANIFEST
    }
    with pytest.raises(FileExistsError, match="pass --overwrite to replace it"):
        BundleWriter(bundle_copy)


def test_a_bundle_is_readable_by_other_users_as_the_umask_allows(tiny_bundle):
    """mkdtemp's 0700 was renamed into place: a recorder service running as another
    user (install-service --user) could not read the bundle its installer checked."""
    import os
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    mode = stat.S_IMODE(os.stat(tiny_bundle).st_mode)
    assert mode == 0o777 & ~mask
    for f in tiny_bundle.iterdir():
        assert os.stat(f).st_mode & 0o044 == 0o044 & ~mask, f.name  # group/other read
