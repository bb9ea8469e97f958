"""The numpy reference front-end equals transformers' ClapFeatureExtractor (hub config)."""

import numpy as np
import pytest

from animalclap_edge.contracts.frontend import (
    CLAP_UNFUSED,
    FrontendConfig,
    FrontendMismatch,
    active_bins,
    log_mel_reference,
    mel_filters,
    repeat_pad,
)

transformers = pytest.importorskip("transformers")

# float64 both sides; differences are rounding only.
MAX_DB_DIFF_REFERENCE = 1e-3


def hub_extractor():
    # Like laion/clap-htsat-unfused's preprocessor_config.json (the class defaults differ: f_min 0, fusion).
    return transformers.ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=48000,
        hop_length=480,
        max_length_s=10,
        fft_window_size=1024,
        frequency_min=50,
        frequency_max=14000,
        truncation="rand_trunc",
        padding="repeatpad",
    )


def test_mel_filters_equal_transformers():
    assert np.abs(hub_extractor().mel_filters_slaney - mel_filters()).max() < 1e-12


def test_reference_matches_feature_extractor_on_real_audio(realaudio):
    from animalclap_edge.audio.decode import read_all

    fe = hub_extractor()
    files = sorted(p for p in realaudio.iterdir() if p.suffix in (".wav", ".ogg"))[::25]
    checked = 0
    for p in files:
        x = read_all(p, 48000)
        if len(x) < 4800:
            continue
        x = x[: 48000 * 12]  # longer than 10 s would be randomly cropped by the extractor
        x = x[:480000]
        hf = fe(x, sampling_rate=48000, return_tensors="np")["input_features"][0, 0]
        ours = log_mel_reference(repeat_pad(x, CLAP_UNFUSED.clip_samples))
        assert ours.shape == hf.shape == (1001, 64)
        assert np.abs(ours - hf).max() < MAX_DB_DIFF_REFERENCE, p.name
        checked += 1
    assert checked >= 5


def test_repeat_pad_is_clap_repeatpad():
    x = np.arange(1, 4, dtype=np.float32)
    assert repeat_pad(x, 10).tolist() == [1, 2, 3, 1, 2, 3, 1, 2, 3, 0]
    assert repeat_pad(x, 2).tolist() == [1, 2]
    with pytest.raises(ValueError):
        repeat_pad(np.zeros(0), 4)


def test_active_bins_cover_all_mel_weight():
    lo, hi = active_bins()
    fb = mel_filters()
    assert fb[:lo].sum() == 0 and fb[hi:].sum() == 0 and (hi - lo) < CLAP_UNFUSED.n_freqs


def test_config_round_trip_and_mismatch_names_setting():
    d = CLAP_UNFUSED.to_dict()
    assert FrontendConfig.from_dict(d) == CLAP_UNFUSED
    with pytest.raises(FrontendMismatch, match="hop_length"):
        CLAP_UNFUSED.require_equal(FrontendConfig(hop_length=320), "test")
    with pytest.raises(FrontendMismatch, match="unknown setting"):
        FrontendConfig.from_dict({**d, "fmin": 0})
    with pytest.raises(ValueError, match="f_max"):
        FrontendConfig(f_max=30000)
