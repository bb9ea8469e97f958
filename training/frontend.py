"""The log-mel front-end as a torch module that exports to ONNX and TensorRT.

The STFT is a Conv1d with a fixed DFT basis: plain Conv/Mul/MatMul/Log ops that
every ONNX backend and TensorRT 10 run. Only the DFT bins that carry mel weight
are kept (bins 2..298 for 50 Hz-14 kHz at 48 kHz/1024): identical output, about
0.6x the MACs of the full 513-bin basis.

`mode="fft"` computes the same thing with torch.stft for training speed; both
modes are tested against `animalclap_edge.contracts.frontend.log_mel_reference`.
Keep this module in fp32: |STFT|^2 overflows fp16.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from animalclap_edge.contracts.frontend import (
    CLAP_UNFUSED,
    FrontendConfig,
    active_bins,
    hann_periodic,
    mel_filters,
)


class LogMelFrontend(nn.Module):
    """(B, N) waveform at cfg.sample_rate -> (B, frames, n_mels) log-mel in dB."""

    # buffers, registered in __init__
    dft_basis: torch.Tensor
    window: torch.Tensor
    mel_fb: torch.Tensor
    mel_fb_full: torch.Tensor

    def __init__(self, cfg: FrontendConfig = CLAP_UNFUSED, mode: Literal["dft", "fft"] = "dft"):
        super().__init__()
        self.cfg, self.mode = cfg, mode
        lo, hi = active_bins(cfg)
        self.lo, self.hi = lo, hi
        window = hann_periodic(cfg.n_fft)
        k = np.arange(lo, hi)[:, None]
        n = np.arange(cfg.n_fft)[None, :]
        angle = 2 * np.pi * k * n / cfg.n_fft
        basis = np.concatenate([np.cos(angle) * window, -np.sin(angle) * window])  # (2K, n_fft)
        self.register_buffer(
            "dft_basis", torch.tensor(basis[:, None, :], dtype=torch.float32), persistent=False
        )
        self.register_buffer("window", torch.tensor(window, dtype=torch.float32), persistent=False)
        fb = mel_filters(cfg)
        self.register_buffer(
            "mel_fb", torch.tensor(fb[lo:hi], dtype=torch.float32), persistent=False
        )  # (K, M)
        self.register_buffer("mel_fb_full", torch.tensor(fb, dtype=torch.float32), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(wave.device.type):
            # Under autocast the mel matmul would run in bf16/fp16: the exported graph
            # computes it in fp32, and training should see the same features.
            with torch.autocast(wave.device.type, enabled=False):
                return self._log_mel(wave)
        return self._log_mel(wave)  # no autocast context in an exported graph

    def _log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        wave = wave.float()
        if self.mode == "fft":
            spec = torch.stft(
                wave,
                cfg.n_fft,
                cfg.hop_length,
                window=self.window,
                center=cfg.center,
                pad_mode="reflect",
                return_complex=True,
            )  # (B, n_freqs, T)
            power = spec.real.square() + spec.imag.square()
            mel = torch.matmul(power.transpose(1, 2), self.mel_fb_full)
        else:
            x = wave.unsqueeze(1)  # (B, 1, N)
            if cfg.center:
                x = F.pad(x, (cfg.n_fft // 2, cfg.n_fft // 2), mode="reflect")
            y = F.conv1d(x, self.dft_basis, stride=cfg.hop_length)  # (B, 2K, T)
            k = self.hi - self.lo
            power = y[:, :k].square() + y[:, k:].square()  # (B, K, T)
            mel = torch.matmul(power.transpose(1, 2), self.mel_fb)  # (B, T, M)
        return 10.0 * torch.log10(torch.clamp(mel, min=cfg.amin))

    def macs(self, n_samples: int) -> int:
        """Multiply-accumulates per clip of n_samples (DFT conv + mel projection)."""
        frames = self.cfg.n_frames(n_samples)
        k = self.hi - self.lo
        return frames * (2 * k * self.cfg.n_fft + k * self.cfg.n_mels + 2 * k)


def repeat_pad_torch(wave: torch.Tensor, n: int) -> torch.Tensor:
    """CLAP "repeatpad" on (B, L) with a static L: tile floor(n/L) times, zero-pad to n."""
    length = wave.shape[-1]
    if length >= n:
        return wave[..., :n]
    reps = n // length
    tiled = wave.repeat(1, reps) if reps > 1 else wave
    pad = n - reps * length
    return F.pad(tiled, (0, pad)) if pad else tiled


def frontend_from_feature_extractor(fe) -> FrontendConfig:
    """FrontendConfig from a checkpoint's `ClapFeatureExtractor`, refusing what we cannot run.

    The hub configs of the unfused checkpoints differ from the class defaults
    (f_min 0, fusion): always read the checkpoint's own.
    """
    if getattr(fe, "truncation", "rand_trunc") == "fusion":
        raise ValueError(
            "feature extractor uses truncation='fusion' (a fused CLAP checkpoint); AnimalCLAP Edge "
            "runs unfused checkpoints (laion/clap-htsat-unfused, BioLingual): pick one of those"
        )
    if getattr(fe, "padding", "repeatpad") != "repeatpad":
        raise ValueError(
            f"feature extractor padding {fe.padding!r} is not supported; need 'repeatpad'"
        )
    if getattr(fe, "top_db", None) is not None:
        raise ValueError(
            "feature extractor top_db clipping is not supported (unfused CLAP has none)"
        )
    return FrontendConfig(
        sample_rate=int(fe.sampling_rate),
        n_fft=int(fe.fft_window_size),
        hop_length=int(fe.hop_length),
        n_mels=int(fe.feature_size),
        f_min=float(fe.frequency_min),
        f_max=float(fe.frequency_max),
        clip_seconds=float(fe.max_length_s),
    )


def frontend_gmacs(cfg: FrontendConfig, seconds: float) -> float:
    return LogMelFrontend(cfg).macs(math.ceil(seconds * cfg.sample_rate)) / 1e9
