"""Two models on the same recordings: paired changes, and `evaluate --against`."""

from __future__ import annotations

import json
import shutil

import pytest

from training.labelled_audio import open_labelled
from training.splits import zero_shot_split


def _result(ids, **hits):
    """An evaluate(keep_hits=True) result's hits, the same for both pools."""
    return {"unseen": dict.fromkeys(hits), "hits": {"ids": ids, "unseen": hits, "all": hits}}


def test_changes_pair_recordings_by_id_and_say_which_side_each_helped():
    from training.compare import compare_md, eval_changes

    ids = ("r0", "r1", "r2", "r3")
    base = _result(ids, com=(True, False, False, True), tax=(False,) * 4)
    # the model's result lists the recordings in another order
    model = _result(ids[::-1], com=(True, False, False, True)[::-1], tax=(True, True, True, False))
    changes = eval_changes(base, model)
    com, tax = changes["unseen"]["com"], changes["unseen"]["tax"]
    assert (com["n"], com["gained"], com["lost"], com["change"]) == (4, 0, 0, 0.0)
    # tax: r3, r2, r1 right with the model (listed reversed): r1, r2, r3 gained
    assert (tax["gained"], tax["lost"], tax["right_before"], tax["right_after"]) == (3, 0, 0, 3)
    md = compare_md("m", "b", changes)
    assert "| unseen species | com | 0.500 | 0.500 | +0.000 (" in md
    assert f"| unseen species | tax | 0.000 | 0.750 | **+0.750 ({tax['lo']:+.2f} to" in md
    assert "| 3 / 0 | 4 |" in md


def test_evaluate_against_scores_both_on_one_split_and_names_species_the_base_saw(
    tiny_checkpoint, pretrain_checkpoint, tmp_path, capsys
):
    """The base is scored on the model's split; where its own run trained on some of
    those unseen species, its figures are not zero-shot there, and the command says
    so and which."""
    from training.cli import main

    data = open_labelled("tiny")
    runs = {}
    for name, ckpt, seed in (("model", tiny_checkpoint, 0), ("base", pretrain_checkpoint, 1)):
        run = runs[name] = tmp_path / name
        shutil.copytree(ckpt, run / "final")
        zero_shot_split(data.items, data.catalogue, seed=seed).to_json(run / "split.json")
        (run / "pretrain_config.json").write_text(json.dumps({"data": "tiny"}))
    out = tmp_path / "ev"
    args = ["evaluate", "--run", str(runs["model"]), "--out", str(out)]
    assert main([*args, "--against", str(runs["base"])]) == 0
    said = capsys.readouterr()
    model_eval = json.loads((out / "eval.json").read_text())
    base_eval = json.loads((out / "against" / "eval.json").read_text())
    changes = json.loads((out / "compare.json").read_text())["change"]
    for q, c in changes["unseen"].items():
        assert c["n"] == model_eval["unseen"][q]["n"] == base_eval["unseen"][q]["n"]
        assert c["right_after"] / c["n"] == pytest.approx(model_eval["unseen"][q]["top1"])
        assert c["right_before"] / c["n"] == pytest.approx(base_eval["unseen"][q]["top1"])
    split = json.loads((runs["model"] / "split.json").read_text())
    base_split = json.loads((runs["base"] / "split.json").read_text())
    saw = sorted(set(base_split["seen_species"]) & set(split["test_species"]))
    assert saw  # seeds 0 and 1 draw different unseen species
    assert f"trained on {len(saw)} of the {len(split['test_species'])} unseen species" in said.err
    assert (out / "compare.png").stat().st_size and (out / "compare.md").is_file()
    assert "-> this model:" in said.out and "95% interval" in said.out
    # a checkpoint outside any run folder: what it trained on is not known, and said
    from training.cli import _against
    from training.splits import ZeroShotSplit

    bare = tmp_path / "bare"
    shutil.copytree(pretrain_checkpoint, bare)
    checkpoint, note = _against(
        str(bare), "tiny", ZeroShotSplit.from_json(runs["model"] / "split.json")
    )
    assert (
        checkpoint == str(bare) and f"no run folder shows which species {bare} trained on" in note
    )
