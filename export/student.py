"""The field student: an EfficientAT-style MobileNetV3 on CLAP's log-mel.

Same front-end as the teacher (it is inside the exported graph and stays fp32), a
MobileNetV3-Large body scaled by a width multiplier (EfficientAT's "mn" models
are MobileNetV3 trained on AudioSet log-mels the same way), global average pooling
and a linear projection into the teacher's joint audio-text space. The output is
L2-normalised like the teacher's, so the bundle's text embeddings score it directly.

Budget (3 s window, 64 mel bins, counted by `macs`): width 0.4 -> about 0.5 M
parameters and 40 M MACs per window; the teacher HTS-AT sees every window
repeat-padded to 10 s.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from animalclap_edge.contracts.frontend import FrontendConfig
from training.frontend import LogMelFrontend

# MobileNetV3-Large: kernel, expanded channels, out channels, squeeze-excite,
# activation ("RE" ReLU, "HS" hard-swish), stride. Strides apply to time and mel.
MOBILENETV3_LARGE = (
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
)


def _div8(c: float) -> int:
    return max(8, int(c + 4) // 8 * 8)


def _act(kind: str) -> nn.Module:
    return nn.ReLU(inplace=True) if kind == "RE" else nn.Hardswish(inplace=True)


class _SqueezeExcite(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        mid = _div8(ch / 4)
        self.fc1, self.fc2 = nn.Conv2d(ch, mid, 1), nn.Conv2d(mid, ch, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * nn.functional.hardsigmoid(self.fc2(nn.functional.relu(self.fc1(s))))


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, act: str, stride: int):
        super().__init__()
        layers: list[nn.Module] = []
        if exp != cin:
            layers += [nn.Conv2d(cin, exp, 1, bias=False), nn.BatchNorm2d(exp), _act(act)]
        layers += [
            nn.Conv2d(exp, exp, k, stride, k // 2, groups=exp, bias=False),
            nn.BatchNorm2d(exp),
            _act(act),
        ]
        if se:
            layers.append(_SqueezeExcite(exp))
        layers += [nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


@dataclass(frozen=True)
class StudentConfig:
    width: float = 0.4
    embedding_dim: int = 512
    n_mels: int = 64
    head_channels: int = 960  # before width scaling, as MobileNetV3-Large

    @property
    def architecture(self) -> str:
        return f"mobilenetv3-large-w{self.width:g} (EfficientAT-style) -> {self.embedding_dim}"


class StudentEncoder(nn.Module):
    """(B, window samples) waveform -> (B, D) L2-normalised embedding."""

    def __init__(
        self,
        cfg: StudentConfig,
        frontend: FrontendConfig,
        mode: Literal["dft", "fft"] = "dft",
    ):
        super().__init__()
        self.cfg, self.frontend_cfg = cfg, frontend
        self.frontend = LogMelFrontend(frontend, mode=mode)
        self.input_norm = nn.BatchNorm2d(cfg.n_mels)  # per mel bin, as HTS-AT
        c = _div8(16 * cfg.width)
        layers: list[nn.Module] = [
            nn.Conv2d(1, c, 3, 2, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.Hardswish(inplace=True),
        ]
        for k, exp, out, se, act, stride in MOBILENETV3_LARGE:
            nxt = _div8(out * cfg.width)
            layers.append(_InvertedResidual(c, k, _div8(exp * cfg.width), nxt, se, act, stride))
            c = nxt
        head = _div8(cfg.head_channels * cfg.width)
        layers += [nn.Conv2d(c, head, 1, bias=False), nn.BatchNorm2d(head), nn.Hardswish(True)]
        self.features = nn.Sequential(*layers)
        self.projection = nn.Linear(head, cfg.embedding_dim)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mel = self.frontend(wave)  # (B, frames, n_mels), fp32 dB
        x = self.input_norm(mel.transpose(1, 2).unsqueeze(-1))  # (B, n_mels, frames, 1)
        x = x.squeeze(-1).transpose(1, 2).unsqueeze(1)  # (B, 1, frames, n_mels)
        x = self.features(x).mean((2, 3))
        return nn.functional.normalize(self.projection(x), dim=-1)


def macs(module: nn.Module, window_samples: int) -> int:
    """Multiply-accumulates of one window, counted by torch's FlopCounterMode (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    was = module.training
    module.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(torch.zeros(1, window_samples))
    module.train(was)
    return counter.get_total_flops() // 2


def save_student(model: StudentEncoder, out: str | Path, extra: dict | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "student.pt")
    meta = {
        "config": asdict(model.cfg),
        "frontend": model.frontend_cfg.to_dict(),
        "architecture": model.cfg.architecture,
        **(extra or {}),
    }
    (out / "student.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out


def load_student(
    path: str | Path, mode: Literal["dft", "fft"] = "dft"
) -> tuple[StudentEncoder, dict]:
    path = Path(path)
    if not (path / "student.json").exists() or not (path / "student.pt").exists():
        raise ValueError(f"{path}: not a student folder (needs student.json and student.pt)")
    again = "distil it again (`animalclap-export distill --overwrite`)"
    try:
        meta = json.loads((path / "student.json").read_text(encoding="utf-8"))
        model = StudentEncoder(
            StudentConfig(**meta["config"]), FrontendConfig.from_dict(meta["frontend"]), mode
        )
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        # a copy cut short or a hand edit: say which file, not only the parser's words
        raise ValueError(f"{path / 'student.json'}: unreadable ({e}); {again}") from None
    try:
        state = torch.load(path / "student.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # torch raises several unrelated types for a damaged file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path / 'student.pt'}: unreadable ({first}); {again}") from None
    return model.eval(), meta
