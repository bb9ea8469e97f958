"""Checkpoints load through the same code as hub ones; bad ones are refused clearly."""

import pytest
import torch

from training.model import AudioEncoder, CheckpointError, load_clap, text_embeddings


def test_tiny_checkpoint_loads_like_a_hub_checkpoint(tiny_checkpoint):
    loaded = load_clap(str(tiny_checkpoint))
    from animalclap_edge.contracts.frontend import CLAP_UNFUSED

    assert loaded.frontend == CLAP_UNFUSED  # read from preprocessor_config.json
    enc = AudioEncoder(loaded.model, loaded.frontend).eval()
    with torch.no_grad():
        e = enc(torch.randn(2, 144000) * 0.1)
    assert e.shape == (2, 64)
    assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    t = text_embeddings(loaded, ["Turdus merula", "Strix aluco"])
    assert t.shape == (2, 64)


def test_audio_encoder_matches_transformers_feature_extractor_path(tiny_checkpoint):
    """Our waveform->embedding graph equals ClapProcessor + get_audio_features."""
    import numpy as np
    from transformers import ClapProcessor

    loaded = load_clap(str(tiny_checkpoint))
    proc = ClapProcessor.from_pretrained(str(tiny_checkpoint))
    x = (np.random.default_rng(0).standard_normal(144000) * 0.1).astype(np.float32)
    feats = proc.feature_extractor(x, sampling_rate=48000, return_tensors="pt")
    with torch.no_grad():
        ref = loaded.model.get_audio_features(
            input_features=feats["input_features"].float()
        ).pooler_output
        ours = AudioEncoder(loaded.model, loaded.frontend).eval()(torch.from_numpy(x)[None])
    assert torch.nn.functional.cosine_similarity(ref, ours).item() > 0.9999


def test_not_clap_and_missing_checkpoints_are_refused(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match=rf"'{tmp_path / 'nope'}': no such folder"):
        load_clap(str(tmp_path / "nope"))
    # `runs/nope` has a hub id's form: local when runs/ is here, with no hub retries
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(CheckpointError, match=r"'runs/nope': no such folder \(nearest that"):
        load_clap("runs/nope")
    with pytest.raises(CheckpointError, match=r"'runs/nope/final': no such folder"):
        load_clap("runs/nope/final")
    from transformers import BertConfig

    BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    ).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="not CLAP"):
        load_clap(str(tmp_path))


def test_a_file_or_an_empty_folder_given_as_checkpoint_says_what_to_give(tmp_path):
    """A CSV as --checkpoint said "the config file ... is not a valid JSON file"; an
    empty folder "Should have a model_type key in its config.json", which it lacked."""
    csv = tmp_path / "catalogue.csv"
    csv.write_text("id\n")
    with pytest.raises(CheckpointError, match=rf"^'{csv}' is a file, not a checkpoint: give"):
        load_clap(str(csv))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=rf"^'{empty}' holds no config\.json, so it is no"):
        load_clap(str(empty))


def test_a_run_folder_given_as_checkpoint_names_the_model_inside(tmp_path, tiny_checkpoint):
    """`--checkpoint runs/demo` said only that the folder's config had no `model_type`."""
    import shutil

    run = tmp_path / "demo"
    run.mkdir()
    (run / "split.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"holds no config\.json, so it is no saved model"):
        load_clap(str(run))  # nothing inside: transformers said "Unrecognized model"
    shutil.copytree(tiny_checkpoint, run / "checkpoint")
    with pytest.raises(
        CheckpointError,
        match=rf"^'{run}' is a run folder, not a checkpoint: give {run}/checkpoint$",
    ):
        load_clap(str(run))
    # an unfinished pretrain: only checkpoints/, the one `latest` names
    step = run / "checkpoints" / "step-00000004" / "model"
    shutil.copytree(tiny_checkpoint, step)
    (run / "checkpoints" / "latest").write_text("step-00000004")
    shutil.copytree(tiny_checkpoint, run / "final")
    with pytest.raises(CheckpointError) as e:
        load_clap(str(run))
    assert str(e.value) == (
        f"'{run}' is a run folder, not a checkpoint: give {run}/checkpoint or {run}/final or {step}"
    )
    assert load_clap(str(run / "final")).model is not None  # what it names loads


def test_a_bundle_or_a_step_folder_given_as_checkpoint_says_what_to_give(
    tmp_path, tiny_checkpoint, tiny_bundle
):
    """Both said only "Unrecognized model ... `model_type`"."""
    import json
    import shutil

    made_from = json.loads((tiny_bundle / "manifest.json").read_text())["producer"]
    with pytest.raises(
        CheckpointError,
        match=rf"is a model bundle \(for recorders\), not a checkpoint: give the checkpoint it "
        rf"was made from, {made_from['teacher_checkpoint']}$",
    ):
        load_clap(str(tiny_bundle))
    step = tmp_path / "checkpoints" / "step-00000005"
    shutil.copytree(tiny_checkpoint, step / "model")
    with pytest.raises(CheckpointError, match=rf"its training state: give {step}/model$"):
        load_clap(str(step))


def test_checkpoint_without_frontend_is_refused(tmp_path, tiny_checkpoint):
    import shutil

    d = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, d)
    # transformers 5 nests the feature extractor in processor_config.json; hub
    # checkpoints of the v4 era have preprocessor_config.json. Remove both.
    for name in ("preprocessor_config.json", "processor_config.json"):
        (d / name).unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="front-end"):
        load_clap(str(d))


def test_offline_tokenizer_keeps_the_text_through_save_and_load(tiny_checkpoint):
    """Prompts must reach the text tower: distinct ids, lossless decode, distinct embeddings.

    transformers 5 silently ignored vocab_file/merges_file, mapping every prompt to
    <unk>; the text tower then gave one embedding for all species and training stalled
    at ln(batch).
    """
    loaded = load_clap(str(tiny_checkpoint))  # the tokenizer as saved and reloaded
    tok = loaded.tokenizer
    prompts = ["Turdus merula", "Strix aluco", "Aves Passeriformes Turdidae Turdus Turdus merula"]
    ids = [tok(p)["input_ids"] for p in prompts]
    assert len({tuple(i) for i in ids}) == len(prompts)
    assert all(tok.unk_token_id not in i for i in ids)
    assert [tok.decode(i, skip_special_tokens=True) for i in ids] == prompts
    assert ids[0][0] == tok.bos_token_id == 0 and ids[0][-1] == tok.eos_token_id == 2
    assert tok.pad_token_id == loaded.model.config.text_config.pad_token_id
    t = text_embeddings(loaded, prompts)
    sim = t @ t.T
    assert sim[0, 1] < 0.999 and sim[0, 2] < 0.999


def test_scratch_init_gives_more_distinct_embeddings_than_transformers_init(
    tiny_checkpoint, tiny_catalogue, realaudio
):
    """transformers' init maps every input to nearly one point, a plateau contrastive
    training barely leaves from scratch; new_clap_model must start more spread out."""
    import numpy as np
    from transformers import ClapModel

    from animalclap_edge.audio.decode import read_all
    from animalclap_edge.contracts.frontend import repeat_pad
    from animalclap_edge.contracts.prompts import Template, render
    from training.model import LoadedClap, new_clap_model

    ck = load_clap(str(tiny_checkpoint))
    prompts = [render(sp, Template.TAX) for sp in tiny_catalogue]
    files = sorted(realaudio.glob("*.wav"))[::8][:8]
    x = torch.from_numpy(np.stack([repeat_pad(read_all(f, 48000)[:144000], 144000) for f in files]))

    def spread(make) -> tuple[float, float]:
        torch.manual_seed(0)
        model = make(ck.model.config).eval()
        t = text_embeddings(LoadedClap(model, ck.tokenizer, ck.frontend, ""), prompts).numpy()
        with torch.no_grad():
            a = AudioEncoder(model, ck.frontend)(x).numpy()
        return tuple(float((e @ e.T)[~np.eye(len(e), dtype=bool)].mean()) for e in (t, a))

    ours, theirs = spread(new_clap_model), spread(ClapModel)
    # measured: text 0.94 vs 0.99; audio on these real clips 0.989 vs 0.990
    assert ours[0] < theirs[0] - 0.03, (ours, theirs)
    assert ours[1] <= theirs[1] + 0.005, (ours, theirs)


def test_loading_and_saving_print_no_transformers_bars_and_keep_the_users_setting(
    tiny_checkpoint, tmp_path, capfd
):
    from transformers.utils import logging as hf_logging

    from training.model import save_checkpoint

    assert hf_logging.is_progress_bar_enabled()  # transformers' default
    capfd.readouterr()
    loaded = load_clap(str(tiny_checkpoint))
    save_checkpoint(loaded.model, loaded.tokenizer, loaded.frontend, tmp_path / "again")
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err, err
    assert hf_logging.is_progress_bar_enabled()  # restored for a notebook
    hf_logging.disable_progress_bar()
    try:
        load_clap(str(tmp_path / "again"))
        assert not hf_logging.is_progress_bar_enabled()  # and a user's "off" stays off
    finally:
        hf_logging.enable_progress_bar()


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_saved_model_is_as_readable_as_the_umask_allows(tiny_checkpoint, tmp_path, umask, mode):
    """safetensors wrote model.safetensors 0600 whatever the umask, so on a shared runs
    folder the group could read every file of a final model but its weights (found in
    a multi-node dry run)."""
    import os

    from training.model import save_checkpoint

    loaded = load_clap(str(tiny_checkpoint))
    old = os.umask(umask)
    try:
        out = save_checkpoint(loaded.model, loaded.tokenizer, loaded.frontend, tmp_path / "m")
    finally:
        os.umask(old)
    modes = {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {mode}, modes


def test_a_hub_id_on_a_machine_without_the_hub_says_how_to_get_it_there(tmp_path):
    """GPU nodes are often offline: the error said only that it could not connect."""
    import os
    import subprocess
    import sys

    code = (
        "from training.model import load_clap\n"
        "try:\n    load_clap('laion/clap-htsat-unfused')\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-cache")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    ).stdout
    assert out.startswith("CheckpointError cannot load checkpoint 'laion/clap-htsat-unfused'")
    assert "`hf download laion/clap-htsat-unfused --local-dir DIR`" in out
    assert out.count("\n") == 1
    # it is offline already: telling it to set HF_HUB_OFFLINE=1 led nowhere
    assert "HF_HUB_OFFLINE is set, and the hub's cache here does not hold it" in out
    assert "or set HF_HUB_OFFLINE=1" not in out
