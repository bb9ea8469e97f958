"""Both towers' attention through scaled_dot_product_attention computes what
transformers' eager attention does, forward and backward, with the same parameters."""

import copy

import pytest
import torch
from transformers import ClapModel
from transformers.models.clap.modeling_clap import ClapAudioSelfAttention

from training.model import new_clap_model, small_clap_config
from training.pretrain.window_attention import SdpaWindowAttention, use_attention

from .conftest import tiny_run


@pytest.fixture(scope="module")
def audio_model():
    """The small HTS-AT (4 stages, shifted windows from stage 3), with a relative-position
    bias that is not zero (a fresh model's is), so the bias is exercised too."""
    torch.manual_seed(0)
    model = new_clap_model(small_clap_config(vocab_size=64, audio="small")).audio_model
    for m in model.modules():
        if isinstance(m, ClapAudioSelfAttention):
            torch.nn.init.normal_(m.relative_position_bias_table, std=0.5)
    return model.eval()


def _audio_grads(model, mel):
    model.zero_grad()
    out = model(input_features=mel).pooler_output
    (out * torch.linspace(-1, 1, out.shape[-1], device=out.device)).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_sdpa_gives_eager_outputs_and_gradients(audio_model):
    torch.manual_seed(1)
    mel = torch.randn(2, 1, 1001, 64)
    eager = copy.deepcopy(audio_model)
    sdpa = copy.deepcopy(audio_model)
    switched, _ = use_attention(sdpa, "sdpa")
    assert switched == sum(isinstance(m, ClapAudioSelfAttention) for m in eager.modules()) == 5
    assert sum(type(m) is SdpaWindowAttention for m in sdpa.modules()) == 5
    masked = []  # the shifted windows' mask reaches the new attention
    hooks = [
        m.register_forward_pre_hook(lambda _, args: masked.append(args[1] is not None))
        for m in sdpa.modules()
        if isinstance(m, SdpaWindowAttention)
    ]
    out_e, grads_e = _audio_grads(eager, mel)
    out_s, grads_s = _audio_grads(sdpa, mel)
    for h in hooks:
        h.remove()
    assert any(masked) and not all(masked)
    torch.testing.assert_close(out_s, out_e, rtol=1e-5, atol=1e-6)
    assert grads_s.keys() == grads_e.keys()
    for name, g in grads_e.items():
        # the key bias's gradient is zero in exact arithmetic (softmax ignores a constant
        # added to every key): compare against the layer's largest gradient, not its own
        layer = name.rsplit(".", 1)[0]
        scale = max(v.abs().max().item() for k, v in grads_e.items() if k.startswith(layer))
        torch.testing.assert_close(grads_s[name], g, rtol=1e-4, atol=1e-5 * scale, msg=name)
    bias = "audio_encoder.layers.0.blocks.0.attention.self.relative_position_bias_table"
    assert grads_e[bias].abs().max() > 0


def test_sdpa_text_tower_gives_eager_outputs_and_gradients_with_padded_prompts():
    torch.manual_seed(0)
    eager = new_clap_model(small_clap_config(vocab_size=64)).text_model.eval()
    sdpa = copy.deepcopy(eager)
    assert use_attention(sdpa, "sdpa") == (0, 2)
    assert sdpa.config._attn_implementation == "sdpa"
    ids = torch.randint(3, 60, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    outs, grads = [], []
    for model in (eager, sdpa):
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=mask).pooler_output
        out.sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    assert grads[1].keys() == grads[0].keys()
    for name, g in grads[0].items():
        layer = name.rsplit(".", 1)[0]
        scale = max(v.abs().max().item() for k, v in grads[0].items() if k.startswith(layer))
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_sdpa_under_bf16_autocast_stays_close_to_eager(audio_model):
    torch.manual_seed(2)
    mel = torch.randn(2, 1, 1001, 64)
    sdpa = copy.deepcopy(audio_model)
    use_attention(sdpa, "sdpa")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a = audio_model(input_features=mel).pooler_output.float()
        b = sdpa(input_features=mel).pooler_output.float()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert cos.min() > 0.999, cos


@pytest.mark.hardware
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_a_fused_kernel_gives_eager_outputs_and_bias_gradients(audio_model):
    """What CPU tests cannot show: on CUDA the additive mask (bias and shift mask,
    broadcast over clips, needing a gradient) runs in a fused kernel, not the math path
    that would make `attention: sdpa` no faster, and its gradients are eager's. Fails
    with "No available kernel" where no fused kernel takes it."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = torch.device("cuda")
    torch.manual_seed(1)
    mel = torch.randn(2, 1, 1001, 64, device=dev)
    eager = copy.deepcopy(audio_model).to(dev)
    sdpa = copy.deepcopy(audio_model).to(dev)
    use_attention(sdpa, "sdpa")
    out_e, grads_e = _audio_grads(eager, mel)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
        out_s, grads_s = _audio_grads(sdpa, mel)
    torch.testing.assert_close(out_s, out_e, rtol=1e-3, atol=1e-4)
    for name, g in grads_e.items():
        layer = name.rsplit(".", 1)[0]
        scale = max(v.abs().max().item() for k, v in grads_e.items() if k.startswith(layer))
        torch.testing.assert_close(grads_s[name], g, rtol=1e-3, atol=1e-3 * scale, msg=name)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):  # the run's precision
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
            b = sdpa(input_features=mel).pooler_output.float()
        a = eager(input_features=mel).pooler_output.float()
    assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.999


def test_output_attentions_takes_transformers_path(audio_model):
    sdpa = copy.deepcopy(audio_model)
    use_attention(sdpa, "sdpa")
    out = sdpa(input_features=torch.randn(1, 1, 1001, 64), output_attentions=True)
    assert out.attentions and out.attentions[0].shape[-1] == out.attentions[0].shape[-2] == 64


def test_switching_keeps_parameters_and_checkpoints_load_in_plain_clap(tmp_path):
    torch.manual_seed(0)
    model = new_clap_model(small_clap_config(vocab_size=64, audio="fast"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert use_attention(model, "sdpa") == (4, 2)
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    model.save_pretrained(tmp_path / "ckpt")
    plain = ClapModel.from_pretrained(tmp_path / "ckpt")
    assert not any(type(m) is SdpaWindowAttention for m in plain.modules())
    assert plain.text_model.config._attn_implementation == "eager"
    assert use_attention(model, "eager") == (4, 2)
    assert not any(type(m) is SdpaWindowAttention for m in model.modules())
    assert model.text_model.config._attn_implementation == "eager"


def test_an_unknown_attention_is_refused():
    with pytest.raises(ValueError, match="attention: 'flash' is not one of"):
        use_attention(torch.nn.Linear(2, 2), "flash")


def test_pretrain_with_sdpa_trains_as_eager_does(pretrain_checkpoint, tmp_path):
    import json

    from training.pretrain.loop import pretrain

    runs = {}
    for kind in ("eager", "sdpa"):
        cfg = tiny_run(
            tmp_path / kind,
            pretrain_checkpoint,
            max_steps=3,
            checkpoint_every=100,
            attention=kind,
        )
        pretrain(cfg, progress=False)
        rows = [json.loads(x) for x in (tmp_path / kind / "train_log.jsonl").open()]
        runs[kind] = rows
    losses = {k: [r["loss"] for r in rows if "step" in r] for k, rows in runs.items()}
    assert len(losses["eager"]) == 3 and losses["eager"][0] != losses["eager"][-1]
    assert losses["sdpa"] == pytest.approx(losses["eager"], rel=1e-4)
    notes = [r.get("note", "") for r in runs["sdpa"]]
    assert any("attention sdpa: 4 HTS-AT window attentions" in n for n in notes)


def test_a_transformers_without_text_sdpa_leaves_roberta_eager_and_says_so(
    pretrain_checkpoint, tmp_path, monkeypatch
):
    """transformers releases whose CLAP text attention ignores `_attn_implementation`
    would run eager whatever the config says: the count and the log must not claim sdpa."""
    from training.pretrain import window_attention
    from training.pretrain.loop import configure_towers

    monkeypatch.setattr(window_attention, "text_attention_dispatches", lambda: False)
    model = new_clap_model(small_clap_config(vocab_size=64, audio="fast"))
    cfg = tiny_run(tmp_path, pretrain_checkpoint, attention="sdpa")
    (note,) = configure_towers(cfg, model)
    assert "4 HTS-AT window attentions" in note and "and 0 RoBERTa layers" in note
    assert "RoBERTa stays eager" in note
    assert model.text_model.config._attn_implementation == "eager"
