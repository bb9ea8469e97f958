"""A bad bundle is refused with a message naming the file and the problem."""

import json
import shutil
import tarfile

import numpy as np
import pytest

from animalclap_edge.bundle import BundleError, demo_bundle_path, load_bundle
from animalclap_edge.contracts import bundle as B


def _edit_manifest(root, **changes):
    m = json.loads((root / B.MANIFEST).read_text())
    m.update(changes)
    (root / B.MANIFEST).write_text(json.dumps(m))


def _rehash(root, name, keep_id=False):
    """Checksum `name` again in the manifest, and its content id unless `keep_id`."""
    m = json.loads((root / B.MANIFEST).read_text())
    m["files"][name] = B.sha256_file(root / name)
    if not keep_id:
        m["bundle_id"] = B.bundle_id_from_files(m["files"])
    (root / B.MANIFEST).write_text(json.dumps(m))


def test_an_edited_bundle_that_kept_its_id_is_refused(bundle_copy):
    """Calibration edited and re-hashed, id kept: a database passed every recording
    over as already done with "this" bundle (found in a field walkthrough)."""
    cal = json.loads((bundle_copy / B.CALIBRATION).read_text())
    cal["default_threshold"] = 0.2
    (bundle_copy / B.CALIBRATION).write_text(json.dumps(cal))
    _rehash(bundle_copy, B.CALIBRATION, keep_id=True)
    with pytest.raises(
        BundleError, match=r"manifest\.json: bundle_id \w+ does not match its files"
    ):
        load_bundle(bundle_copy)
    _rehash(bundle_copy, B.CALIBRATION)  # a new id: another bundle, and it loads
    assert load_bundle(bundle_copy).calibration.default_threshold == 0.2


def test_a_tar_cut_short_is_refused_in_one_line(bundle_copy, tmp_path):
    whole = tmp_path / "b.tar"
    with tarfile.open(whole, "w") as t:
        t.add(bundle_copy, arcname="bundle")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    with pytest.raises(
        BundleError, match=r"cut\.tar: truncated or damaged archive .*copy the bundle again"
    ):
        load_bundle(cut)


def test_corrupt_file_is_refused_by_name(bundle_copy):
    p = bundle_copy / B.TEXT_EMBEDDINGS
    p.write_bytes(p.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(BundleError, match=r"text_embeddings\.npy: checksum mismatch"):
        load_bundle(bundle_copy)


def test_missing_file_and_missing_manifest(bundle_copy, tmp_path):
    (bundle_copy / B.CALIBRATION).unlink()
    with pytest.raises(
        BundleError, match=r"calibration\.json: listed in manifest\.json but missing"
    ):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(tmp_path)


def test_a_run_folder_or_a_checkpoint_given_as_bundle_names_what_to_give(bundle_copy, tmp_path):
    """`--bundle runs/demo` (a training run's folder, its bundle in bundle/) and
    `--bundle runs/demo/checkpoint` said only "this is not a model bundle"."""
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    shutil.copytree(bundle_copy, run / "bundle")
    with pytest.raises(BundleError, match=f"the bundle in it is {run / 'bundle'}: give that"):
        load_bundle(run)
    (run / "checkpoint" / "config.json").write_text("{}")
    with pytest.raises(BundleError, match="it is a model checkpoint: make a bundle of it with"):
        load_bundle(run / "checkpoint")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=r"this is not a model bundle$"):
        load_bundle(tmp_path / "empty")


def test_a_path_that_is_no_bundle_says_what_it_is(bundle_copy, tmp_path):
    """A user who points --bundle at the manifest or the .onnx is told the folder."""
    with pytest.raises(
        BundleError, match=f"is a file inside a bundle: give its folder, {bundle_copy}"
    ):
        load_bundle(bundle_copy / B.MANIFEST)
    notes = tmp_path / "bundle.zip"
    notes.write_bytes(b"PK\x03\x04 not a tar")
    with pytest.raises(BundleError, match=r"bundle\.zip.*is a file, not a bundle: give"):
        load_bundle(notes)
    with pytest.raises(BundleError, match="not found: give the bundle's folder"):
        load_bundle(tmp_path / "nope")


def test_wrong_shape_is_refused_even_with_matching_checksum(bundle_copy):
    emb = np.load(bundle_copy / B.TEXT_EMBEDDINGS)
    np.save(bundle_copy / B.TEXT_EMBEDDINGS, emb[:-1])
    _rehash(bundle_copy, B.TEXT_EMBEDDINGS)
    with pytest.raises(BundleError, match=r"text_embeddings\.npy: shape .* expected"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("reader", ["onnxruntime", "onnx-reference", "tensorrt-build"])
def test_embedding_dim_that_does_not_match_encoder_is_refused(bundle_copy, reader):
    """By every backend that reads the graph: the check lived in the onnxruntime
    backend alone, and a TensorRT engine was built from any graph."""
    from animalclap_edge.backends.onnx_reference_backend import OnnxReferenceBackend
    from animalclap_edge.backends.onnxruntime_backend import OnnxRuntimeBackend
    from animalclap_edge.backends.tensorrt_backend import build_engine

    read = {
        "onnxruntime": OnnxRuntimeBackend,
        "onnx-reference": OnnxReferenceBackend,
        "tensorrt-build": lambda b: build_engine(b, "fp32", engine_cache=str(bundle_copy / "e")),
    }[reader]

    for name in (B.TEXT_EMBEDDINGS, B.TAXON_EMBEDDINGS):
        e = np.load(bundle_copy / name)
        e = np.concatenate([e, np.zeros((len(e), 8), e.dtype)], axis=1)
        np.save(bundle_copy / name, e)
        _rehash(bundle_copy, name)
    w = np.load(bundle_copy / B.TRAIT_HEADS)
    np.savez(
        bundle_copy / B.TRAIT_HEADS,
        weight=np.zeros((72, w["weight"].shape[1]), np.float32),
        bias=w["bias"],
    )
    _rehash(bundle_copy, B.TRAIT_HEADS)
    _edit_manifest(bundle_copy, embedding_dim=72)
    b = load_bundle(bundle_copy)
    with pytest.raises(
        BundleError,
        match=r"audio_encoder\.onnx: embedding size 64 does not match manifest embedding_dim 72",
    ):
        read(b)


def test_newer_schema_and_unknown_manifest_key(bundle_copy):
    _edit_manifest(bundle_copy, schema_version="2.0")
    with pytest.raises(BundleError, match="upgrade animalclap-edge"):
        load_bundle(bundle_copy)
    _edit_manifest(bundle_copy, schema_version="1.0", colour="red")
    with pytest.raises(
        BundleError, match=r"manifest\.json: colour: Extra inputs are not permitted$"
    ):
        load_bundle(bundle_copy)
    # a newer minor version's new field: the refusal says what to do
    _edit_manifest(bundle_copy, schema_version="1.1", licence="CC-BY")
    with pytest.raises(
        BundleError,
        match=r"not permitted \(schema 1\.1, from a newer exporter .*upgrade animalclap-edge",
    ):
        load_bundle(bundle_copy)


def test_trait_heads_that_do_not_fit_the_schema(bundle_copy):
    w = np.load(bundle_copy / B.TRAIT_HEADS)
    np.savez(bundle_copy / B.TRAIT_HEADS, weight=w["weight"][:, :-1], bias=w["bias"][:-1])
    _rehash(bundle_copy, B.TRAIT_HEADS)
    with pytest.raises(BundleError, match=r"trait_heads\.npz: weight"):
        load_bundle(bundle_copy)


def test_tar_bundle_loads_and_unsafe_tar_is_refused(bundle_copy, tmp_path):
    tar_path = tmp_path / "b.tar"
    with tarfile.open(tar_path, "w") as t:
        t.add(bundle_copy, arcname="bundle")
    assert load_bundle(tar_path).manifest.bundle_id == load_bundle(bundle_copy).manifest.bundle_id
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as t:
        t.add(bundle_copy / B.MANIFEST, arcname="../manifest.json")
    with pytest.raises(BundleError, match="unsafe member"):
        load_bundle(evil)


def test_packaged_demo_bundle_loads_and_says_it_is_a_demo():
    b = load_bundle(demo_bundle_path())
    assert b.manifest.demo and "generated audio" in (b.manifest.notice or "")
    assert b.manifest.parity["onnx_vs_torch_min_cosine"] > 0.999
