"""Pieces of the loop: gradient checkpointing, the gathered loss on one rank, the
rank plan, and the scratch configs."""

import math

import pytest
import torch

from training.labelled_audio import open_labelled
from training.loss import MAX_LOGIT_SCALE, clip_loss
from training.model import load_clap
from training.pretrain.config import PretrainConfig
from training.pretrain.data import RankBatches
from training.pretrain.dist import Dist
from training.pretrain.loop import (
    ClapTrainModule,
    build_model,
    enable_gradient_checkpointing,
    load_optimizer_state,
    make_optimizer,
    optimizer_step,
)
from training.pretrain.loss import gathered_clip_loss

from .conftest import fails_without_hanging, tiny_run


def _grads(loaded, checkpointing: bool, calls: list):
    module = ClapTrainModule(loaded)
    if checkpointing:
        assert enable_gradient_checkpointing(module.clap) > 0
    stage = module.clap.audio_model.audio_encoder.layers[0].blocks[0]  # inside a checkpointed stage
    hook = stage.register_forward_hook(lambda *a: calls.append(1))
    torch.manual_seed(0)
    wave = 0.1 * torch.randn(2, 48_000)
    enc = loaded.tokenizer(
        ["Turdus merula", "Aves Passeriformes"], padding=True, return_tensors="pt"
    )
    module.train()
    module.zero_grad()
    audio, text = module(wave, enc["input_ids"], enc["attention_mask"])
    clip_loss(audio, text, module.clap.logit_scale_a).backward()
    hook.remove()
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(pretrain_checkpoint):
    plain_calls, ckpt_calls = [], []
    plain = _grads(load_clap(str(pretrain_checkpoint)), False, plain_calls)
    ckpt = _grads(load_clap(str(pretrain_checkpoint)), True, ckpt_calls)
    assert len(plain_calls) == 1 and len(ckpt_calls) == 2  # forward again in backward
    assert plain.keys() == ckpt.keys()
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-5, atol=1e-7, msg=k)


def test_one_rank_gathered_loss_is_the_clip_loss():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    s = torch.tensor(2.0)
    one = Dist(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
    torch.testing.assert_close(gathered_clip_loss(a, t, s, s, one), clip_loss(a, t, s))


def test_each_direction_uses_its_own_clamped_scale():
    """CLAP keeps one temperature per direction: audio->text rows use logit_scale_a,
    text->audio rows logit_scale_t, each clamped at ln(100). Written out by hand."""
    torch.manual_seed(1)
    a = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    one = Dist(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
    target = torch.arange(5)

    def by_hand(sa: float, st: float) -> torch.Tensor:
        ce = torch.nn.functional.cross_entropy
        return 0.5 * (ce(sa * a @ t.t(), target) + ce(st * t @ a.t(), target))

    got = gathered_clip_loss(a, t, torch.tensor(0.0), torch.tensor(1.5), one)
    torch.testing.assert_close(got, by_hand(1.0, math.exp(1.5)))
    swapped = gathered_clip_loss(a, t, torch.tensor(1.5), torch.tensor(0.0), one)
    assert not torch.allclose(got, swapped)  # the directions are not interchangeable
    clamped = gathered_clip_loss(a, t, torch.tensor(6.0), torch.tensor(6.0), one)
    torch.testing.assert_close(clamped, by_hand(100.0, 100.0))


def test_a_logit_scale_pushed_past_ln100_is_held_there_and_can_come_back():
    """The loss clamps the scales, which passes no gradient past ln(100): a scale one
    step over the edge would stay there for good. The step holds them at the edge."""
    clap = torch.nn.Module()
    clap.logit_scale_a = torch.nn.Parameter(torch.tensor(MAX_LOGIT_SCALE - 1e-3))
    clap.logit_scale_t = torch.nn.Parameter(torch.tensor(MAX_LOGIT_SCALE - 1e-3))
    opt = torch.optim.AdamW(clap.parameters(), lr=0.05, weight_decay=0.0)
    one = Dist(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
    a = torch.eye(6, 8)
    # each text nearest its own audio, by 0.05 in cosine: at a scale of 100 the loss
    # still wants a larger one, with a gradient far from underflow
    near = torch.nn.functional.normalize(a + 19 * a.sum(0) / 6**0.5, dim=-1)

    def step(text: torch.Tensor) -> None:
        opt.zero_grad()
        gathered_clip_loss(a, text, clap.logit_scale_a, clap.logit_scale_t, one).backward()
        optimizer_step(opt, PretrainConfig(grad_clip=1.0), clap)

    step(near)
    assert clap.logit_scale_a.item() == clap.logit_scale_t.item() == pytest.approx(MAX_LOGIT_SCALE)
    step(near.roll(1, dims=0))  # every pair wrong: the loss wants a smaller scale
    assert clap.logit_scale_a.item() < MAX_LOGIT_SCALE - 0.01
    assert clap.logit_scale_t.item() < MAX_LOGIT_SCALE - 0.01


def test_a_resumed_optimizer_keeps_its_moments_and_takes_the_new_settings():
    torch.manual_seed(3)
    net = torch.nn.Linear(4, 2)
    cpu = torch.device("cpu")
    before = make_optimizer(PretrainConfig(beta2=0.99, weight_decay=0.1), net, cpu)
    net(torch.randn(5, 4)).sum().backward()
    before.step()
    after = make_optimizer(PretrainConfig(beta2=0.999, weight_decay=0.2), net, cpu)
    load_optimizer_state(after, before.state_dict())
    assert [g["betas"] for g in after.param_groups] == [(0.9, 0.999)] * 2
    assert [g["weight_decay"] for g in after.param_groups] == [0.2, 0.0]
    for p in net.parameters():
        torch.testing.assert_close(after.state[p]["exp_avg"], before.state[p]["exp_avg"])
        torch.testing.assert_close(after.state[p]["exp_avg_sq"], before.state[p]["exp_avg_sq"])
        assert after.state[p]["step"].item() == 1


def test_ranks_split_each_step_of_the_plan_without_overlap():
    whole = list(RankBatches(steps_per_epoch=4, global_batch=8, rank=0, world=1, start=0, stop=12))
    parts = [list(RankBatches(4, 8, r, 2, 0, 12)) for r in range(2)]
    for step in range(12):
        assert parts[0][step] + parts[1][step] == whole[step]
    # epochs follow one another: step 5 is step 1 of epoch 1
    assert whole[5] == [(1, p) for p in range(8, 16)]
    assert {e for batch in whole for e, _ in batch} == {0, 1, 2}
    resumed = list(RankBatches(4, 8, 1, 2, start=6, stop=12))
    assert resumed == parts[1][6:]


def test_scratch_sizes_build(tmp_path):
    data = open_labelled("tiny")
    cfg = tiny_run(tmp_path, "scratch:full")
    full = build_model(cfg, data, data.catalogue.ids).model
    assert full.config.text_config.hidden_size == 768  # RoBERTa-base
    assert list(full.config.audio_config.depths) == [2, 2, 6, 2]  # HTS-AT
    n = sum(p.numel() for p in full.parameters())
    assert 100e6 < n < 200e6, n
    cfg.init = "scratch:fast"
    fast = build_model(cfg, data, data.catalogue.ids).model
    assert fast.config.audio_config.patch_size == 16
    fast.config.to_json_file(tmp_path / "clap.json")
    cfg.init = str(tmp_path / "clap.json")  # a config file: same architecture, new weights
    assert build_model(cfg, data, data.catalogue.ids).model.config.audio_config.patch_size == 16
    cfg.init = "scratch:huge"
    with pytest.raises(ValueError, match="scratch sizes are small, fast and full"):
        build_model(cfg, data, data.catalogue.ids)


def _step_losses(out) -> list[float]:
    import json

    rows = [json.loads(line) for line in (out / "train_log.jsonl").open()]
    return [r["loss"] for r in rows if "step" in r]


@pytest.mark.parametrize("length", [64, "auto"])
def test_a_fixed_prompt_length_trains_the_same_model(pretrain_checkpoint, tmp_path, length):
    """Padding every prompt to one length (for CUDA graphs) is masked out: same losses."""
    from training.pretrain.loop import pretrain

    free = tiny_run(tmp_path / "free", pretrain_checkpoint, max_steps=3, checkpoint_every=100)
    fixed = tiny_run(
        tmp_path / "fixed",
        pretrain_checkpoint,
        max_steps=3,
        checkpoint_every=100,
        prompt_length=length,
    )
    pretrain(free, progress=False)
    pretrain(fixed, progress=False)
    a, b = _step_losses(tmp_path / "free"), _step_losses(tmp_path / "fixed")
    assert "every prompt padded to" in (tmp_path / "fixed" / "train_log.jsonl").read_text()
    assert len(a) == 3 and a[0] != a[-1]
    assert b == pytest.approx(a, rel=1e-5)


def test_a_prompt_length_shorter_than_the_catalogue_is_refused_before_training(
    pretrain_checkpoint, tmp_path
):
    from training.pretrain.loop import pretrain

    cfg = tiny_run(tmp_path / "short", pretrain_checkpoint, prompt_length=4)
    with pytest.raises(
        ValueError, match=r"prompt_length=4 would cut prompts: .* set prompt_length=\d+"
    ):
        pretrain(cfg, progress=False)
    assert not list((tmp_path / "short").glob("checkpoints/*"))
    # the refused start wrote nothing: a rerun with other settings is not "another run"
    assert not (tmp_path / "short").exists()


def test_a_batch_larger_than_an_epoch_is_refused_naming_one_that_fits(
    pretrain_checkpoint, tmp_path
):
    """It used to say only "lower it", after loading the model."""
    from training.pretrain.loop import pretrain

    # 20 seen species x 2 clips = 40 clips per epoch
    cfg = tiny_run(tmp_path / "big", pretrain_checkpoint, batch_size=64)
    with pytest.raises(
        ValueError, match=r"batch_size 64 exceeds one epoch \(40 clips\): give --set batch_size=40"
    ):
        pretrain(cfg, progress=False)
    assert not (tmp_path / "big").exists()


def test_an_out_holding_another_kind_of_run_is_refused_before_anything_is_written(
    pretrain_checkpoint, tmp_path
):
    """Only a folder that held checkpoints/ was checked: a `train` run's folder, or a
    finished run's, had its split.json and config replaced."""
    import dataclasses
    import json

    from training.pretrain.loop import pretrain

    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    (out / "split.json").write_text("the train run's split")
    cfg = tiny_run(out, pretrain_checkpoint)
    with pytest.raises(
        FileExistsError, match=r"holds a run of `animalclap-train train` \(checkpoint\)"
    ):
        pretrain(cfg, progress=False)
    (out / "checkpoint").rmdir()
    (out / "train_summary.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"\(train_summary.json\).*give a new --out"):
        pretrain(cfg, progress=False)
    (out / "train_summary.json").unlink()
    (out / "final").mkdir()
    with pytest.raises(FileExistsError, match=r"no pretrain_config\.json to tell"):
        pretrain(cfg, progress=False)
    (out / "pretrain_config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    with pytest.raises(
        FileExistsError, match=r"finished run \(final/\) with no checkpoints/latest"
    ):
        pretrain(cfg, progress=False)
    assert (out / "split.json").read_text() == "the train run's split"
    assert sorted(p.name for p in out.iterdir()) == ["final", "pretrain_config.json", "split.json"]


def test_more_loader_workers_than_cores_is_said_once_not_warned_twice():
    import os
    import warnings

    from training.pretrain.loop import workers_note

    cores = len(os.sched_getaffinity(0))
    assert workers_note(cores) is None
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.utils.data.DataLoader(range(4), num_workers=cores + 1)
        assert any("worker processes" in str(w.message) for w in seen)  # torch's own
        seen.clear()
        note = workers_note(cores + 1)
        torch.utils.data.DataLoader(range(4), num_workers=cores + 1)
        assert not [w for w in seen if "worker processes" in str(w.message)]
    assert note == (
        f"workers {cores + 1} per rank on {cores} CPU core(s): the loader processes share "
        f"them (set workers={cores} to match the cores)"
    )


def test_auto_prompt_length_is_the_longest_prompt_rounded_up_to_8(pretrain_checkpoint):
    from training.pretrain.loop import catalogue_prompt_lengths, resolve_prompt_length
    from training.pretrain.mixed import training_data

    cfg = tiny_run("unused", pretrain_checkpoint, prompt_length="auto")
    species = training_data(cfg.data, cfg.split, cfg.seed, cfg.val_fraction, None).data.catalogue
    tok = load_clap(cfg.init).tokenizer
    lengths = catalogue_prompt_lengths(cfg, tok, species)
    longest = max(lengths)
    n = resolve_prompt_length(cfg, lengths)
    assert n % 8 == 0 and longest <= n < longest + 8
    assert resolve_prompt_length(tiny_run("unused", pretrain_checkpoint), lengths) == 0
    with pytest.raises(ValueError, match=f"set prompt_length={longest} or more, or auto"):
        resolve_prompt_length(
            tiny_run("unused", pretrain_checkpoint, prompt_length=longest - 1), lengths
        )
    # the text tower's own limit, whatever the padding
    with pytest.raises(ValueError, match=f"has {longest} tokens and the text model takes at most"):
        resolve_prompt_length(tiny_run("unused", pretrain_checkpoint), lengths, longest - 1)
    assert resolve_prompt_length(cfg, lengths, limit=longest) == longest  # auto, capped


def test_the_optimizer_spares_biases_and_norms_weight_decay(pretrain_checkpoint):
    from torch import nn

    from training.pretrain.loop import make_optimizer

    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = make_optimizer(tiny_run("unused", pretrain_checkpoint), net, torch.device("cpu"))
    decayed, spared = opt.param_groups
    assert [p.shape for p in decayed["params"]] == [(4, 4)]
    assert len(spared["params"]) == 3 and spared["weight_decay"] == 0.0
    assert decayed["weight_decay"] == 0.05 and not decayed["fused"]  # fused: GPUs only


def test_a_resumed_run_logs_the_settings_it_changes_and_a_stop_it_has_passed(tmp_path):
    """Settings outside the run's identity may change on resume (a longer schedule,
    another precision): they used to change silently, and a max_steps below the
    checkpoint's step silently gave the checkpoint's model as final/."""
    import dataclasses
    import json

    from training.pretrain.config import PretrainConfig
    from training.pretrain.loop import resume_notes

    cfg = PretrainConfig(epochs=3, precision="bf16")
    saved = tmp_path / "pretrain_config.json"
    saved.write_text(json.dumps(dataclasses.asdict(cfg)))
    assert resume_notes(saved, cfg, step=4, stop_at=10) == []
    longer = dataclasses.replace(cfg, epochs=10, precision="fp32")
    (note,) = resume_notes(saved, longer, step=4, stop_at=10)
    assert note == "resumed with changed settings: epochs 3 -> 10, precision 'bf16' -> 'fp32'"
    (note,) = resume_notes(saved, cfg, step=18, stop_at=14)
    assert "already at step 18, at or past this run's last step 14" in note
    assert "final/ is step 18's model" in note


def test_a_second_run_in_a_folder_in_use_is_refused_until_the_first_dies(
    pretrain_checkpoint, tmp_path
):
    """Two live runs in one --out (a launcher killed without its ranks, then the same
    command started again) would write over each other's checkpoints."""
    import signal
    import subprocess
    import sys

    from training.pretrain.loop import pretrain

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom pathlib import Path\n"
         "from training.identity import held_exclusively\n"
         "with held_exclusively(Path(sys.argv[1])) as (held, note):\n"
         "    print(held, note, flush=True)\n    time.sleep(600)\n", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "True None"
        cfg = tiny_run(out, pretrain_checkpoint, max_steps=1)
        with pytest.raises(FileExistsError, match=r"in use by another pretrain or finetune run"):
            pretrain(cfg, progress=False)
        assert not any(out.iterdir())  # nothing written by the refused run
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: the kernel lets go
        holder.wait()
    assert pretrain(cfg, progress=False) == out / "final"


def test_a_folder_the_file_system_will_not_lock_trains_and_the_log_says_so(
    pretrain_checkpoint, tmp_path, monkeypatch
):
    """NFS mounted without locking refuses flock itself: the run goes on unguarded,
    which its log says, rather than failing or pretending to be guarded."""
    import errno
    import fcntl

    from training.pretrain.loop import pretrain

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    out = tmp_path / "nfs"
    assert (
        pretrain(tiny_run(out, pretrain_checkpoint, max_steps=1), progress=False) == out / "final"
    )
    log = (out / "train_log.jsonl").read_text()
    assert f"--out {out} could not be locked (ENOLCK: No locks available)" in log


def test_a_scratch_pretrain_fits_its_tokenizer_on_the_seen_species_alone(tmp_path):
    """build_model fitted it on every catalogue species, the unseen test species too."""
    from training.model import build_tokenizer
    from training.pretrain.loop import pretrain
    from training.splits import ZeroShotSplit
    from training.train import all_prompts

    out = tmp_path / "scratch"
    pretrain(tiny_run(out, "scratch:fast", max_steps=1, batch_size=4), progress=False)
    split = ZeroShotSplit.from_json(out / "split.json")
    assert split.test_species
    catalogue = open_labelled("tiny").catalogue
    fitted = build_tokenizer(all_prompts(catalogue, split.seen_species)).get_vocab()
    assert load_clap(str(out / "final")).tokenizer.get_vocab() == fitted


def test_an_error_mid_run_ends_the_process_with_loader_workers_running(tmp_path):
    """Loader workers ignore SIGTERM (the rank saves first on pre-emption), so workers
    still alive at the interpreter's exit, which SIGTERMs and joins them, would hang it
    (bench did, 2026-11-28). The loop's loader must be shut down as the error leaves."""
    import textwrap

    script = textwrap.dedent(
        """
        from training.pretrain import loop
        from training.pretrain.config import load_config

        real, calls = loop.forward_loss, []

        def failing(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("injected: CUDA out of memory")
            return real(*args, **kwargs)

        loop.forward_loss = failing
        sets = ["init=scratch:fast", "data=tiny", "batch_size=4", "crop_seconds=1",
                "workers=2", "tensorboard=false", "out=OUT"]
        loop.pretrain(load_config(None, [*sets, "pinned_ring=RING"]), progress=False)
        """
    )
    for ring in ("false", "true"):
        filled = script.replace("RING", ring).replace("OUT", str(tmp_path / ring))
        fails_without_hanging(filled, "injected: CUDA out of memory", f"pinned_ring={ring}")
