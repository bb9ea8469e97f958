"""Rendering: valid audio, deterministic given the generator, fast, faithful to params."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from scipy.signal import welch
from scipy.stats import spearmanr

from training.benchmark.acoustics import species_params
from training.benchmark.field import FieldConditions, apply_field, draw_conditions, draw_site
from training.benchmark.synth import render_call, render_song
from training.benchmark.taxonomy import select_species

SR = 48_000


@pytest.fixture(scope="module")
def params():
    cat = select_species({"Aves": 8, "Amphibia": 6, "Insecta": 6, "Mammalia": 6}, seed=5)
    return [species_params(s, 5) for s in cat]


def test_calls_and_songs_are_valid_and_reproducible(params):
    for p in params:
        call = render_call(p, np.random.default_rng(1), SR)
        assert call.dtype == np.float32 and np.isfinite(call).all()
        assert np.abs(call).max() == pytest.approx(1.0, abs=1e-5)
        song = render_song(p, np.random.default_rng(2), 5.0, SR)
        assert song.shape == (5 * SR,) and song.dtype == np.float32
        assert np.isfinite(song).all() and np.abs(song).max() <= 1.0
        assert np.abs(song).max() > 0.1  # at least one call landed
        assert np.array_equal(song, render_song(p, np.random.default_rng(2), 5.0, SR))
        assert not np.array_equal(song, render_song(p, np.random.default_rng(3), 5.0, SR))
    assert render_song(params[0], np.random.default_rng(0), 2.5, 16_000).shape == (40_000,)


def test_calls_vary_within_a_species(params):
    p = params[0]
    a, b = (render_call(p, np.random.default_rng(s), SR) for s in (10, 11))
    assert len(a) != len(b) or not np.allclose(a, b)


def test_ten_second_song_renders_fast(params):
    times = []
    for p in params:
        render_song(p, np.random.default_rng(0), 10.0, SR)  # warm caches
        # CPU time, not wall time: on a shared machine (CI, two cores and other jobs)
        # wall time measures the scheduler, and its median passed 50 ms with this
        # process's own share at ~8 ms
        t = time.process_time()
        render_song(p, np.random.default_rng(1), 10.0, SR)
        times.append(time.process_time() - t)
    # Typically ~8-20 ms on one core; the bound leaves room for slow CI machines.
    assert np.median(times) < 0.05, times


def test_spectral_peak_follows_dominant_frequency(params):
    measured = []
    for p in params:
        f, s = welch(render_song(p, np.random.default_rng(4), 4.0, SR), fs=SR, nperseg=4096)
        measured.append(f[np.argmax(s)])
    rho = spearmanr([p.dominant_hz for p in params], measured).statistic
    assert rho > 0.85, rho


def test_field_output_is_valid_and_deterministic(params):
    clean = render_song(params[0], np.random.default_rng(0), 4.0, SR)
    background = render_song(params[-1], np.random.default_rng(1), 4.0, SR)
    for seed in range(12):
        cond = draw_conditions(np.random.default_rng(seed))
        y = apply_field(clean, cond, np.random.default_rng(seed), background, SR)
        assert y.dtype == np.float32 and y.shape == clean.shape
        assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
        again = apply_field(clean, cond, np.random.default_rng(seed), background, SR)
        assert np.array_equal(y, again)


def test_field_conditions_spread_and_site_sharing():
    rng = np.random.default_rng(0)
    conds = [draw_conditions(rng) for _ in range(400)]
    snr = np.array([c.snr_db for c in conds])
    assert snr.min() < 0 and snr.max() > 20
    assert any(c.clip_drive > 1 for c in conds) and any(c.rain_rate_hz > 0 for c in conds)
    site = draw_site(np.random.default_rng(1))
    a, b = draw_conditions(rng, site), draw_conditions(rng, site)
    assert (a.noise_colour, a.wind_level, a.rain_rate_hz) == (
        b.noise_colour,
        b.wind_level,
        b.rain_rate_hz,
    )
    assert a.snr_db != b.snr_db


def _with(cond: FieldConditions, **kw) -> FieldConditions:
    return dataclasses.replace(cond, **kw)


def test_snr_and_clipping_do_what_they_say(params):
    clean = render_song(params[1], np.random.default_rng(0), 4.0, SR)
    base = _with(draw_conditions(np.random.default_rng(3)), clip_drive=1.0, rt60_s=0.1)

    def corr(cond):
        y = apply_field(clean, cond, np.random.default_rng(0), None, SR)
        return abs(np.corrcoef(y, clean)[0, 1]), y

    quiet, _ = corr(_with(base, snr_db=-5.0))
    loud, y = corr(_with(base, snr_db=25.0))
    assert loud > quiet
    assert np.abs(y).max() == pytest.approx(10 ** (base.gain_dbfs / 20), rel=1e-4)
    _, clipped = corr(_with(base, clip_drive=3.0))
    assert np.mean(np.abs(clipped) >= 0.999) > 0.001
