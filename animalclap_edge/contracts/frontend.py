"""The audio front-end contract: constants defined once, plus a numpy reference.

The defaults are the log-mel of the unfused CLAP checkpoints
(`laion/clap-htsat-unfused`, BioLingual): 48 kHz, n_fft 1024, hop 480, Hann
(periodic), centred frames with reflect padding, |STFT|^2, 64 Slaney mel
filters (Slaney scale and area norm) between 50 Hz and 14 kHz, power to dB with
a floor of 1e-10 (-100 dB). Clips shorter than `clip_seconds` are repeat-padded
("repeatpad": tiled a whole number of times, then zero-padded).

Every exported graph (torch Conv1d DFT, a CPU FFT path) is tested against
`log_mel_reference` below, and these values are written into every bundle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np
import numpy.typing as npt


class FrontendMismatch(ValueError):
    """Two components disagree on front-end settings."""


@dataclass(frozen=True)
class FrontendConfig:
    sample_rate: int = 48_000
    n_fft: int = 1024
    hop_length: int = 480
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 14_000.0
    window: str = "hann-periodic"
    mel_scale: str = "slaney"
    mel_norm: str = "slaney"
    power: float = 2.0
    amin: float = 1e-10  # dB floor: 10*log10(max(amin, power))
    center: bool = True  # frames centred, reflect-padded by n_fft // 2
    clip_seconds: float = 10.0  # the encoder's input length
    padding: str = "repeatpad"

    def __post_init__(self) -> None:
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(
                f"front-end: need 0 <= f_min < f_max <= sample_rate/2, got "
                f"f_min={self.f_min}, f_max={self.f_max}, sample_rate={self.sample_rate}"
            )
        if (
            self.window != "hann-periodic"
            or self.mel_scale != "slaney"
            or self.mel_norm != "slaney"
        ):
            raise ValueError("front-end: only hann-periodic windows and Slaney mel are implemented")

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate)

    def n_frames(self, n_samples: int) -> int:
        return (
            n_samples // self.hop_length + 1
            if self.center
            else 1 + (n_samples - self.n_fft) // self.hop_length
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> FrontendConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise FrontendMismatch(
                f"front-end: unknown setting(s) {unknown}; known: {sorted(names)}"
            )
        return cls(**dict(d))

    def require_equal(self, other: FrontendConfig, what: str) -> None:
        """Raise naming each differing setting (e.g. bundle manifest vs ONNX metadata)."""
        diffs = [
            f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]
        if diffs:
            raise FrontendMismatch(f"{what}: front-end settings differ ({'; '.join(diffs)})")


CLAP_UNFUSED = FrontendConfig()


def hann_periodic(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float64)


def _hz_to_mel_slaney(f: npt.ArrayLike) -> np.ndarray:
    f = np.asarray(f, np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(
        f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep, f / f_sp
    )


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filters(cfg: FrontendConfig = CLAP_UNFUSED) -> np.ndarray:
    """Slaney triangular filters, area-normalised. Shape (n_freqs, n_mels), float64."""
    fft_freqs = np.linspace(0, cfg.sample_rate // 2, cfg.n_freqs)
    mel_pts = np.linspace(
        _hz_to_mel_slaney(cfg.f_min), _hz_to_mel_slaney(cfg.f_max), cfg.n_mels + 2
    )
    hz_pts = _mel_to_hz_slaney(mel_pts)
    diff = np.diff(hz_pts)
    slopes = hz_pts[None, :] - fft_freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    fb *= 2.0 / (hz_pts[2:] - hz_pts[:-2])
    return fb


def active_bins(cfg: FrontendConfig = CLAP_UNFUSED) -> tuple[int, int]:
    """[lo, hi) range of DFT bins with any mel weight: bins outside it cost MACs for nothing."""
    nz = np.flatnonzero(mel_filters(cfg).sum(axis=1) > 0)
    return int(nz[0]), int(nz[-1]) + 1


def repeat_pad(x: np.ndarray, n: int) -> np.ndarray:
    """CLAP "repeatpad": tile floor(n / len) times, then zero-pad to n; crop if longer.

    Same as transformers' ClapFeatureExtractor(padding="repeatpad"); keeps the dtype.
    """
    x = np.asarray(x)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"repeat_pad: need a non-empty 1-D array, got shape {x.shape}")
    if len(x) >= n:
        return x[:n].copy()
    tiled = np.tile(x, n // len(x))
    return np.pad(tiled, (0, n - len(tiled)))


def log_mel_reference(wave: np.ndarray, cfg: FrontendConfig = CLAP_UNFUSED) -> np.ndarray:
    """The reference log-mel of a 1-D waveform, by rfft in float64. Shape (frames, n_mels).

    No padding to clip length here: callers decide (see `repeat_pad`).
    """
    x = np.asarray(wave, np.float64)
    if cfg.center:
        x = np.pad(x, (cfg.n_fft // 2, cfg.n_fft // 2), mode="reflect")
    n_frames = 1 + (len(x) - cfg.n_fft) // cfg.hop_length
    idx = np.arange(cfg.n_fft)[None, :] + cfg.hop_length * np.arange(n_frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * hann_periodic(cfg.n_fft), axis=-1)) ** cfg.power
    mel = spec @ mel_filters(cfg)
    return 10.0 * np.log10(np.maximum(cfg.amin, mel))
