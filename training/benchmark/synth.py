"""Render calls and songs from CallParams (vectorised numpy, float32 output).

A call is `notes_per_call` notes separated by gaps. Each note has an instantaneous
frequency contour (FM shape x depth, plus a per-note step), integrated by cumsum into
a phase; harmonics are summed with a Chebyshev recurrence (sin(k phi) from sin and
cos of phi: no per-harmonic transcendental calls). A band-passed noise component
(one Butterworth sosfilt per call) is mixed in by `noise_mix`, and the sum is shaped
by a pulse-train AM and a raised-cosine note envelope. Each call draws its own jitter
(pitch, tempo, note count, pulse rate) so no two calls of a species are identical.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.signal import butter, sosfilt

from training.benchmark.acoustics import MAX_PARTIAL_HZ, CallParams, harmonic_weights

# Within-species variability (sd of natural-log factors, per call unless noted).
PITCH_JITTER = 0.03  # ~3 %: individual and call-to-call pitch variation
TEMPO_JITTER = 0.07  # note durations and gaps of a call together
NOTE_JITTER = 0.05  # per note, on top of the call's tempo
NOTES_JITTER = 0.15  # number of notes per call
PULSE_JITTER = 0.05  # pulse rate (temperature, motivation)
INTERVAL_JITTER = 0.25  # inter-call interval in a song
LEVEL_JITTER = 0.15  # call-to-call amplitude in a song
MIN_EDGE_S = 0.002  # shortest attack/release ramp; avoids clicks on very short notes


def render_call(
    params: CallParams, rng: np.random.Generator, sample_rate: int = 48_000
) -> np.ndarray:
    """One call, float32, peak 1. Length = the jittered call duration."""
    sr = float(sample_rate)
    nyq_guard = min(MAX_PARTIAL_HZ, 0.45 * sr)
    pitch = params.freq_hz * math.exp(rng.normal(0.0, PITCH_JITTER))
    tempo = math.exp(rng.normal(0.0, TEMPO_JITTER))
    n_notes = max(1, round(params.notes_per_call * math.exp(rng.normal(0.0, NOTES_JITTER))))
    durs = params.note_dur_s * tempo * np.exp(rng.normal(0.0, NOTE_JITTER, n_notes))
    gaps = params.note_gap_s * tempo * np.exp(rng.normal(0.0, NOTE_JITTER, n_notes))
    gaps[-1] = 0.0
    # Note centre frequencies (n_notes,): a geometric series of note_step_oct.
    f_note = pitch * 2.0 ** (params.note_step_oct * np.arange(n_notes))
    f_note = np.minimum(f_note, nyq_guard / 2.0 ** (params.fm_depth_oct / 2))

    # Notes in samples: note j covers out[start[j] : start[j] + length[j]]. Only note
    # bodies are synthesised (concatenated, gaps skipped), then scattered into place.
    length = np.maximum(np.round(durs * sr).astype(np.int64), 1)
    start = np.round(np.concatenate(([0.0], np.cumsum(durs + gaps)[:-1])) * sr).astype(np.int64)
    n = int(start[-1] + length[-1])
    idx = np.repeat(np.arange(n_notes), length)  # note of each active sample, (m,)
    first = np.cumsum(length) - length  # offset of each note in the active array
    k = np.arange(idx.size, dtype=np.int64) - first[idx]  # sample index inside the note
    tau = k.astype(np.float32) / np.float32(sr)  # time inside the note (s), float32 (m,)
    dur = (length.astype(np.float32) / np.float32(sr))[idx]
    u = tau / dur  # note progress 0..1

    contour = _contour(params, u, tau)
    contour *= np.float32(params.fm_depth_oct)
    f_inst = f_note.astype(np.float32)[idx] * np.exp2(contour)
    # Only the phase integral needs float64; wrap it before float32 trig.
    phase = np.cumsum(f_inst, dtype=np.float64)
    phase *= 2.0 * np.pi / sr
    phase = np.mod(phase, 2.0 * np.pi).astype(np.float32)
    centre = float(np.exp(np.mean(np.log(f_note))))  # geometric mean note frequency
    x = np.float32(1.0 - params.noise_mix) * _unit_rms(_harmonics(params, phase, centre, nyq_guard))
    if params.noise_mix > 0.01:
        # Band from the species' nominal pitch (not the jittered one): one cached design.
        nominal = params.freq_hz * 2.0 ** (params.note_step_oct * (params.notes_per_call - 1) / 2)
        sos = _band_sos(nominal, params.noise_bw_oct, sr)
        noise = sosfilt(sos, rng.standard_normal(idx.size, dtype=np.float32)).astype(np.float32)
        x += np.float32(params.noise_mix) * _unit_rms(noise)

    pulse_rate = params.pulse_rate_hz * math.exp(rng.normal(0.0, PULSE_JITTER))
    x *= _pulse_train(params, tau, np.float32(pulse_rate))
    x *= _envelope(tau, dur)
    peak = float(np.max(np.abs(x)))
    if peak > 0:
        x /= np.float32(peak)
    out = np.zeros(n, np.float32)
    out[start[idx] + k] = x
    return out


def render_song(
    params: CallParams,
    rng: np.random.Generator,
    duration_s: float,
    sample_rate: int = 48_000,
) -> np.ndarray:
    """Calls placed at ~call_rate_hz over `duration_s`, float32, peak <= 1, >= 1 call."""
    n = int(np.rint(duration_s * sample_rate))
    out = np.zeros(n, np.float32)
    period = 1.0 / params.call_rate_hz
    call = render_call(params, rng, sample_rate)
    # First onset anywhere in one period, but early enough that the first call fits.
    latest = max(duration_s - len(call) / sample_rate, 0.0)
    onset = rng.uniform(0.0, min(period, latest)) if latest > 0 else 0.0
    i = int(onset * sample_rate)
    while i < n:
        seg = call[: n - i] * math.exp(rng.normal(0.0, LEVEL_JITTER))
        out[i : i + len(seg)] += seg
        gap = period * math.exp(rng.normal(0.0, INTERVAL_JITTER))
        onset += max(gap, len(call) / sample_rate + 0.05)
        i = int(onset * sample_rate)
        if i < n:
            call = render_call(params, rng, sample_rate)
    peak = float(np.max(np.abs(out)))
    return out / peak if peak > 1.0 else out


def _contour(params: CallParams, u: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """FM contour in octaves per unit depth, within [-0.5, 0.5], float32 (n,)."""
    shape = params.fm_shape
    half = np.float32(0.5)
    if shape == "up":
        return u - half
    if shape == "down":
        return half - u
    if shape in ("u", "n"):
        c = u - half
        c *= c
        c *= np.float32(4.0)
        return c - half if shape == "u" else half - c
    if shape == "sine":
        return half * np.sin(np.float32(2.0 * np.pi * params.fm_rate_hz) * tau)
    return np.zeros_like(u)


_PULSE_LUT_SIZE = 1024


def _pulse_train(params: CallParams, tau: np.ndarray, rate: np.float32) -> np.ndarray:
    """AM gain (1 - depth) + depth * sin(pi x)^sharpness over each pulse period, (n,).

    Looked up from a 1024-point table: a float power per sample is the slowest op here.
    """
    x = np.linspace(0.0, 1.0, _PULSE_LUT_SIZE, endpoint=False)
    lut = (1.0 - params.pulse_depth) + params.pulse_depth * np.sin(
        np.pi * x
    ) ** params.pulse_sharpness
    pos = tau * rate
    pos -= np.floor(pos)
    i = (pos * np.float32(_PULSE_LUT_SIZE)).astype(np.int32)
    np.minimum(i, _PULSE_LUT_SIZE - 1, out=i)
    return lut.astype(np.float32)[i]


def _harmonics(params: CallParams, phase: np.ndarray, centre_hz: float, limit: float) -> np.ndarray:
    """sum_k w_k sin(k phase) for k = 1..n_harmonics, float32 (m,).

    Weights (`harmonic_weights`) are evaluated at the call's centre frequency: note
    steps are small, so one weight set per call is close enough.
    """
    w = harmonic_weights(params, centre_hz)
    w[centre_hz * np.arange(1, len(w) + 1) * 2.0 ** (params.fm_depth_oct / 2) > limit] = 0.0
    s1 = np.sin(phase)
    acc = np.float32(w[0]) * s1
    last = int(np.nonzero(w)[0].max()) if np.any(w) else 0
    if last > 0:
        c2 = np.float32(2.0) * np.cos(phase)
        prev, cur = np.zeros_like(s1), s1
        tmp = np.empty_like(s1)
        for j in range(1, last + 1):
            np.multiply(c2, cur, out=tmp)
            tmp -= prev
            prev, cur, tmp = cur, tmp, prev  # cur = sin((j+1) phi); recycle buffers
            if w[j] > 0:
                acc += np.float32(w[j]) * cur
    return acc


@functools.lru_cache(maxsize=4096)
def _band_sos(centre: float, bw_oct: float, sr: float) -> np.ndarray:
    """Butterworth band-pass (4th order) of bw_oct octaves around centre, plus a 4th-order
    low-pass at 14 kHz so the noise skirt above MAX_PARTIAL_HZ is negligible."""
    lo = centre * 2.0 ** (-bw_oct / 2)
    hi = min(centre * 2.0 ** (bw_oct / 2), MAX_PARTIAL_HZ, 0.45 * sr)
    lo = min(max(lo, 20.0), 0.9 * hi)
    band = butter(2, [lo, hi], btype="bandpass", fs=sr, output="sos")
    top = butter(4, min(14_000.0, 0.45 * sr), btype="lowpass", fs=sr, output="sos")
    return np.concatenate([band, top])


def _envelope(tau: np.ndarray, dur: np.ndarray) -> np.ndarray:
    """Raised-cosine attack and release, each 15 % of the note (>= 2 ms); 0 in gaps."""
    ramp = np.maximum(np.float32(0.15) * dur, np.float32(MIN_EDGE_S))
    a = np.clip(np.minimum(tau, dur - tau) / ramp, 0.0, 1.0)
    return np.float32(0.5) - np.float32(0.5) * np.cos(np.float32(np.pi) * a)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x * x)))
    return x / rms if rms > 0 else x
