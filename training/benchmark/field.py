"""Field conditions: what happens to a clean song between the animal and the recorder.

Order of effects: distance (air absorption as a low-pass), reverberation (noise
impulse response decaying 60 dB over RT60, mixed at a distance-dependent
direct-to-reverberant ratio), a quieter background species, ambient noise at the
drawn SNR (coloured noise + wind rumble + rain clicks), then recorder gain and,
occasionally, clipping. SNR is measured against the signal's active frames (calls,
not the silence between them), as a person would judge it.

A `SiteCharacter` (noise colour, wind, rain, reverberation) is shared by the
recordings of one site and day; per-recording draws vary around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy.signal import butter, fftconvolve, oaconvolve, sosfilt

SNR_DB_RANGE = (-5.0, 25.0)
DISTANCE_M_RANGE = (5.0, 200.0)  # log-uniform
BACKGROUND_DB_RANGE = (-20.0, -6.0)  # background species level relative to the focal one
GAIN_DBFS_RANGE = (-24.0, -1.0)  # peak level after the recorder's gain
CLIP_PROB = 0.05  # share of recordings driven into clipping
FRAME_S = 0.02  # frame for active-power measurement
ACTIVE_DB = -20.0  # frames within 20 dB of the loudest count as "active"
MAX_IR_S = 1.5  # impulse responses are cut here (cost); the tail is below -40 dB anyway


@dataclass(frozen=True)
class SiteCharacter:
    noise_colour: float  # beta in noise power ~ 1/f^beta: 0.7 (hiss) .. 2.0 (brown)
    wind_level: float  # share of noise power in wind rumble (< 150 Hz), 0 .. 0.7
    rain_rate_hz: float  # raindrop clicks per second; 0 on a dry day
    rt60_median_s: float  # 0.15 s (open ground) .. 1.5 s (dense forest)


@dataclass(frozen=True)
class FieldConditions:
    snr_db: float
    noise_colour: float
    wind_level: float
    rain_rate_hz: float
    distance_m: float
    rt60_s: float
    drr_db: float  # direct-to-reverberant energy ratio
    background_rel_db: float
    gain_dbfs: float
    clip_drive: float  # 1.0 = clean; > 1: peak driven to this many times full scale, then clipped


def draw_site(rng: np.random.Generator) -> SiteCharacter:
    """A site-day's acoustic character."""
    rain = float(rng.lognormal(math.log(40.0), 0.6)) if rng.random() < 0.25 else 0.0
    return SiteCharacter(
        noise_colour=float(rng.uniform(0.7, 2.0)),
        wind_level=float(rng.uniform(0.0, 0.7) ** 1.5),  # mostly calm, sometimes windy
        rain_rate_hz=rain,
        rt60_median_s=float(math.exp(rng.uniform(math.log(0.15), math.log(1.5)))),
    )


def draw_conditions(rng: np.random.Generator, site: SiteCharacter | None = None) -> FieldConditions:
    """One recording's conditions; site-level fields come from `site` when given."""
    site = site or draw_site(rng)
    distance = math.exp(rng.uniform(*np.log(DISTANCE_M_RANGE)))
    # Reverberant share grows with distance: ~12 dB DRR at 5 m, ~-4 dB at 200 m.
    drr = 12.0 - 10.0 * math.log10(distance / 5.0) + rng.normal(0.0, 2.0)
    clip = float(rng.uniform(1.5, 4.0)) if rng.random() < CLIP_PROB else 1.0
    return FieldConditions(
        snr_db=float(rng.uniform(*SNR_DB_RANGE)),
        noise_colour=site.noise_colour,
        wind_level=site.wind_level,
        rain_rate_hz=site.rain_rate_hz,
        distance_m=distance,
        rt60_s=float(np.clip(site.rt60_median_s * rng.lognormal(0.0, 0.25), 0.05, 2.5)),
        drr_db=drr,
        background_rel_db=float(rng.uniform(*BACKGROUND_DB_RANGE)),
        gain_dbfs=float(rng.uniform(*GAIN_DBFS_RANGE)),
        clip_drive=clip,
    )


def apply_field(
    clean: np.ndarray,
    cond: FieldConditions,
    rng: np.random.Generator,
    background_call: np.ndarray | None = None,
    sample_rate: int = 48_000,
) -> np.ndarray:
    """The recording as the recorder hears it: float32, same length, within [-1, 1]."""
    sr = sample_rate
    n = len(clean)
    x = _reverb(_air(clean.astype(np.float32), cond.distance_m, sr), cond, rng, sr)
    p_sig = _active_power(x, sr)
    if background_call is not None:
        # Further away than the focal animal: more air absorption, level set relative.
        b = _air(np.resize(background_call.astype(np.float32), n), 3.0 * cond.distance_m, sr)
        p_b = _active_power(b, sr)
        if p_b > 0 and p_sig > 0:
            x = x + b * np.float32(math.sqrt(p_sig / p_b * 10 ** (cond.background_rel_db / 10)))
    noise = _ambient(n, cond, rng, sr)
    ref = p_sig if p_sig > 0 else 1.0
    y = x + noise * np.float32(math.sqrt(ref / 10 ** (cond.snr_db / 10)))
    peak = float(np.max(np.abs(y)))
    if peak > 0:
        # Clipped recordings are overdriven from full scale; the rest sit at the gain.
        level = cond.clip_drive if cond.clip_drive > 1.0 else 10 ** (cond.gain_dbfs / 20)
        y *= np.float32(level / peak)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def _air(x: np.ndarray, distance_m: float, sr: int) -> np.ndarray:
    """Air absorption grows with frequency and distance: low-pass at 16 kHz / (1 + d/60 m)."""
    fc = min(16_000.0 / (1.0 + distance_m / 60.0), 0.45 * sr)
    return sosfilt(butter(2, fc, btype="lowpass", fs=sr, output="sos"), x).astype(np.float32)


def _reverb(x: np.ndarray, cond: FieldConditions, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Direct sound plus a tail: exponentially decaying noise IR (-60 dB at RT60)."""
    n_ir = max(int(min(cond.rt60_s, MAX_IR_S) * sr), 16)
    t = np.arange(n_ir, dtype=np.float32) / np.float32(sr)
    ir = rng.standard_normal(n_ir, dtype=np.float32) * np.exp(-6.91 * t / cond.rt60_s)
    wet = fftconvolve(x, ir.astype(np.float32))[: len(x)].astype(np.float32)
    e_dry, e_wet = float(np.dot(x, x)), float(np.dot(wet, wet))
    if e_wet <= 0 or e_dry <= 0:
        return x
    return x + wet * np.float32(math.sqrt(e_dry / e_wet / 10 ** (cond.drr_db / 10)))


def _ambient(n: int, cond: FieldConditions, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Unit-power ambient noise: coloured noise + wind rumble + rain clicks, (n,)."""
    m = sfft.next_fast_len(n, real=True)  # odd lengths make the FFT several times slower
    spec = sfft.rfft(rng.standard_normal(m, dtype=np.float32))  # complex64
    f = np.maximum(sfft.rfftfreq(m, 1.0 / sr).astype(np.float32), np.float32(20.0))
    spec *= np.exp(np.float32(-cond.noise_colour / 2) * np.log(f))  # power ~ 1/f^beta > 20 Hz
    out = _unit(sfft.irfft(spec, m)[:n].astype(np.float32))
    rain_share = 0.3 if cond.rain_rate_hz > 0 else 0.0
    out *= np.float32(math.sqrt(max(1.0 - cond.wind_level - rain_share, 0.05)))
    if cond.wind_level > 0:
        # Rumble below ~150 Hz, gusting over seconds (slow random AM).
        sos = butter(2, 150.0, fs=sr, output="sos")
        wind = sosfilt(sos, rng.standard_normal(n, dtype=np.float32)).astype(np.float32)
        # Gusts: sum of three slow sinusoids (0.05-0.5 Hz), computed at 100 Hz and held.
        hop = max(sr // 100, 1)
        t = np.arange(-(-n // hop)) * (hop / sr)
        freqs, phases = rng.uniform(0.05, 0.5, 3), rng.uniform(0, 2 * np.pi, 3)
        amps = np.array([0.6, 0.3, 0.3])
        gust = 1.0 + (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(
            0
        )
        wind *= np.repeat(np.maximum(gust, 0.1).astype(np.float32), hop)[:n]
        out += np.float32(math.sqrt(cond.wind_level)) * _unit(wind)
    if rain_share > 0:
        # Drops: Poisson clicks, each a 3 ms decaying noise burst, random sizes.
        k = int(rng.poisson(cond.rain_rate_hz * n / sr))
        if k > 0:
            impulses = np.zeros(n, np.float32)
            np.add.at(
                impulses, rng.integers(0, n, k), rng.lognormal(0.0, 0.7, k).astype(np.float32)
            )
            m = int(0.003 * sr)
            burst = rng.standard_normal(m) * np.exp(-np.arange(m) / (0.0008 * sr))
            rain = oaconvolve(impulses, burst.astype(np.float32))[:n]
            out += np.float32(math.sqrt(rain_share)) * _unit(rain.astype(np.float32))
    return out


def _active_power(x: np.ndarray, sr: int) -> float:
    """Mean power of frames within ACTIVE_DB of the loudest frame (0 for silence)."""
    m = max(int(FRAME_S * sr), 1)
    k = len(x) // m
    if k == 0:
        return float(np.mean(x * x)) if len(x) else 0.0
    p = np.mean(x[: k * m].reshape(k, m).astype(np.float64) ** 2, axis=1)
    top = float(p.max())
    if top <= 0:
        return 0.0
    return float(p[p >= top * 10 ** (ACTIVE_DB / 10)].mean())


def _unit(x: np.ndarray) -> np.ndarray:
    p = float(np.mean(x.astype(np.float64) ** 2))
    return x / np.float32(math.sqrt(p)) if p > 0 else x
